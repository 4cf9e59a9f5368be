//! `GET /metrics` (Prometheus text format) and `GET /v1/agent/metrics`
//! (Consul's JSON shape; `?format=prometheus` gives the text format).
//!
//! Everything is read at scrape time from what the agent already keeps:
//! the [`CoreCounters`](crate::core_counters::CoreCounters) and [`Snapshot`] the core loop publishes, and the
//! counters of every subsystem in [`crate::metrics::Registry`]. A scrape
//! never reaches the loop.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shoal_protocol::MemberStatus;

use super::{ApiError, ApiState, Query};
use crate::metrics::encode::PROMETHEUS_CONTENT_TYPE;
use crate::metrics::{Counters, Exposition, Kind, Value};
use crate::snapshot::Snapshot;

/// Every metric, in the order shown: the core loop's counters and what
/// the snapshot holds (read here from the channels the loop publishes),
/// then every source of the registry the daemon built.
pub fn collect(state: &ApiState) -> Exposition {
    let mut out = Exposition::default();
    let status = state.status();
    let snapshot = state.snapshot();
    status.visit(&mut out);
    members(&snapshot, &mut out);
    kv_store(state, &snapshot, &mut out);
    state.metrics.visit(&mut out);
    out
}

/// `GET /metrics`
pub async fn prometheus(State(state): State<ApiState>) -> Response {
    text(&collect(&state))
}

/// `GET /v1/agent/metrics`: Consul's JSON, or `?format=prometheus`.
pub async fn agent_metrics(
    State(state): State<ApiState>,
    query: Query,
) -> Result<Response, ApiError> {
    let exposition = collect(&state);
    match query.get("format") {
        None | Some("") | Some("json") => Ok(axum::Json(exposition.to_consul_json(
            std::time::SystemTime::now(),
            state.metrics.started.elapsed(),
        ))
        .into_response()),
        Some("prometheus") => Ok(text(&exposition)),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "format: `{other}` is not a metrics format (use `prometheus`, or none for JSON)"
            ),
        )),
    }
}

fn text(exposition: &Exposition) -> Response {
    let mut response = exposition.to_prometheus_text().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
    );
    response
}

/// Members by status, as this agent sees them.
fn members(snapshot: &Snapshot, out: &mut Exposition) {
    let statuses = [
        (MemberStatus::Alive, "alive"),
        (MemberStatus::Suspect, "suspect"),
        (MemberStatus::Leaving, "leaving"),
        (MemberStatus::Left, "left"),
        (MemberStatus::Failed, "failed"),
    ];
    let family = out.family(
        "shoal_members",
        "Cluster members this agent knows, by status (itself included).",
        Kind::Gauge,
    );
    for (status, label) in statuses {
        let count = snapshot
            .members
            .iter()
            .filter(|member| member.status == status)
            .count();
        family.push(&[("status", label)], Value::Gauge(count as f64));
    }
    let instances = crate::catalog::nodes(&snapshot.members)
        .map(|node| node.record.services.len())
        .sum::<usize>();
    out.gauge(
        "shoal_catalog_service_instances",
        "Service instances in the catalog, cluster-wide.",
        instances as f64,
    );
}

/// The KV store's size, from the snapshot.
fn kv_store(state: &ApiState, snapshot: &Snapshot, out: &mut Exposition) {
    let live = snapshot
        .kv
        .iter()
        .filter(|stored| !stored.entry.deleted)
        .count();
    out.family(
        "shoal_kv_keys",
        "KV entries held: live keys, and tombstones of deletes not yet collected.",
        Kind::Gauge,
    )
    .push(&[("state", "live")], Value::Gauge(live as f64))
    .push(
        &[("state", "tombstone")],
        Value::Gauge((snapshot.kv.len() - live) as f64),
    );
    out.gauge(
        "shoal_kv_bytes",
        "Key and value bytes the KV store holds (tombstones' keys included): what kv.max_bytes caps.",
        snapshot.kv.bytes() as f64,
    );
    out.gauge(
        "shoal_kv_remembered_deletes",
        "Deletes remembered per key after their tombstones were collected.",
        snapshot.kv.remembered_deletes().len() as f64,
    );
    out.gauge(
        "shoal_kv_max_bytes",
        "The KV store's cap (kv.max_bytes).",
        state.config.gossip.kv_max_bytes as f64,
    );
}
