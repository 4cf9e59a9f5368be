//! `GET /metrics` (Prometheus text format) and `GET /v1/agent/metrics`
//! (Consul's JSON shape; `?format=prometheus` gives the text format).
//!
//! Everything is read at scrape time from what the agent already keeps:
//! the [`Status`] and [`Snapshot`] the core loop publishes, and the
//! counters of every subsystem in [`crate::metrics::Registry`]. A scrape
//! never reaches the loop.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shoal_protocol::MemberStatus;

use super::{ApiError, ApiState, Query};
use crate::metrics::encode::PROMETHEUS_CONTENT_TYPE;
use crate::metrics::{Exposition, Kind, Value};
use crate::snapshot::{Snapshot, Status};

/// Every metric, in the order shown: the core loop's counters and what
/// the snapshot holds (read here from the channels the loop publishes),
/// then every source of the registry the daemon built.
pub fn collect(state: &ApiState) -> Exposition {
    let mut out = Exposition::default();
    let status = state.status();
    let snapshot = state.snapshot();
    gossip(&status, &mut out);
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

/// The core loop's counters, as last published (every 2 s).
fn gossip(status: &Status, out: &mut Exposition) {
    let counters = &status.counters;
    let health = &status.health;
    let counter = |out: &mut Exposition, name, help, value| out.counter(name, help, value);
    counter(
        out,
        "shoal_gossip_received_datagrams_total",
        "Gossip datagrams received by the core loop.",
        counters.datagrams_in,
    );
    counter(
        out,
        "shoal_gossip_received_bytes_total",
        "Bytes of gossip datagrams received by the core loop.",
        counters.bytes_in,
    );
    counter(
        out,
        "shoal_gossip_sent_datagrams_total",
        "Gossip datagrams sent.",
        counters.datagrams_out,
    );
    counter(
        out,
        "shoal_gossip_sent_bytes_total",
        "Bytes of gossip datagrams sent.",
        counters.bytes_out,
    );
    counter(
        out,
        "shoal_gossip_rejected_envelopes_total",
        "Datagrams dropped at the envelope (another cluster, bad magic or version, no key to open them).",
        counters.rejected_envelope,
    );
    counter(
        out,
        "shoal_gossip_rejected_wire_version_total",
        "Datagrams in a wire version this agent does not speak (also in rejected_envelopes).",
        counters.rejected_wire_version,
    );
    counter(
        out,
        "shoal_gossip_skipped_unknown_rumors_total",
        "Rumors of a kind this agent does not know (a newer agent's), skipped.",
        counters.skipped_unknown_rumors,
    );
    counter(
        out,
        "shoal_gossip_rejected_swim_total",
        "Datagrams that opened but that the SWIM layer refused.",
        counters.rejected_swim,
    );
    counter(
        out,
        "shoal_gossip_receive_drops_total",
        "Datagrams dropped before the core loop (loop behind, or oversized).",
        status.receive_drops,
    );
    counter(
        out,
        "shoal_gossip_send_failures_total",
        "Datagrams that could not be sent (socket full or unreachable).",
        status.send_failures,
    );
    out.family(
        "shoal_gossip_refused_records_total",
        "Node records and KV entries from peers refused, by reason.",
        Kind::Counter,
    )
    .push(
        &[("reason", "limits")],
        Value::Counter(counters.refused_records),
    )
    .push(
        &[("reason", "clock_drift")],
        Value::Counter(counters.refused_clock_drift),
    )
    .push(
        &[("reason", "deleted")],
        Value::Counter(counters.refused_deleted),
    )
    .push(
        &[("reason", "kv_quota")],
        Value::Counter(counters.refused_kv_quota),
    );
    counter(
        out,
        "shoal_gossip_synced_records_total",
        "Node records merged from anti-entropy exchanges.",
        counters.synced_records,
    );
    counter(
        out,
        "shoal_gossip_members_down_total",
        "Members this agent saw go down (failed or left).",
        counters.members_down,
    );
    counter(
        out,
        "shoal_gossip_name_conflicts_total",
        "Records that claimed this agent's node name under another identity.",
        status.name_conflicts,
    );
    counter(
        out,
        "shoal_swim_probes_sent_total",
        "Direct SWIM probes (pings) sent.",
        health.probes_sent,
    );
    counter(
        out,
        "shoal_swim_probes_failed_total",
        "SWIM probes that got neither a direct nor an indirect answer in time.",
        health.probe_failures,
    );
    counter(
        out,
        "shoal_swim_suspicions_total",
        "Times a member was marked suspect (by our probe or by gossip).",
        health.suspicions,
    );
    counter(
        out,
        "shoal_swim_accusations_total",
        "Accusations counted: a member (this agent included) whose own probe of a suspect failed too (Lifeguard's dynamic suspicion).",
        status.suspicion.accusations,
    );
    counter(
        out,
        "shoal_swim_suspicions_shortened_total",
        "Suspicions that accusations made end sooner than they started (towards the minimum timeout).",
        status.suspicion.shortened,
    );
    counter(
        out,
        "shoal_swim_refutations_total",
        "Times this agent refuted a suspicion about itself.",
        health.refutations,
    );
    counter(
        out,
        "shoal_swim_lagging_cycles_total",
        "Probe cycles in which the core loop handled an event late.",
        health.lagging_cycles,
    );
    out.gauge(
        "shoal_local_health_score",
        "Lifeguard local-health score: 0 is healthy; probe and suspicion timers stretch by score + 1.",
        f64::from(status.health_score),
    );
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
