//! `/v1/agent/*`: this agent and the members it sees, in Consul's shapes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::consul_json::Member;
use crate::reads::Reads;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState, Query, blocking};
use crate::metrics::stats_json;

/// `GET /v1/agent/members` (blocking queries work as on the catalog: the
/// UI's members page waits on it). With `?wan`, the WAN pool's members,
/// named `node.dc`, on a WAN member (`wan.enabled`); 400 elsewhere.
pub async fn members(State(state): State<ApiState>, query: Query) -> Result<Response, ApiError> {
    if query.present("wan") {
        let wan = super::cluster_ops::wan_pool(&state)?;
        let snapshot = wan.snapshot_rx.borrow().clone();
        let members: Vec<Member> = snapshot.members.iter().map(Member::from_view).collect();
        return Ok(Json(json!(members)).into_response());
    }
    blocking::respond(&state, &query, Reads::CLUSTER, |snapshot| {
        let members: Vec<Member> = snapshot.members.iter().map(Member::from_view).collect();
        Ok(json!(members))
    })
    .await
}

/// `GET /v1/agent/self`
pub async fn agent_self(State(state): State<ApiState>) -> Json<Value> {
    let snapshot = state.snapshot();
    let config = &state.config;
    let member = snapshot
        .members
        .iter()
        .find(|member| member.id == snapshot.local.id)
        .map(Member::from_view);
    let mut gossip = stats_json(&*state.status());
    // Wire versions (docs/upgrading.md).
    gossip["wire_versions"] = json!(shoal_protocol::record::wire_tag(
        snapshot.local.wire_range()
    ));
    let reload = state.reload.status();
    let count = |status: u8| {
        snapshot
            .members
            .iter()
            .filter(|m| m.status.consul_code() == status)
            .count()
    };
    Json(json!({
        "Config": {
            "Datacenter": config.datacenter,
            "NodeName": config.node_name,
            "NodeID": snapshot.local.node_id().unwrap_or_default(),
            "Server": false,
            "Version": env!("CARGO_PKG_VERSION"),
            "Cluster": config.cluster,
            "BindAddr": config.bind.to_string(),
            "AdvertiseAddr": config.advertise.to_string(),
            "HTTPAddr": config.http_addr.to_string(),
            "Join": config.join.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ReloadError": reload.last_error,
        },
        "Member": member,
        // The tags in force: a reload may have changed them.
        "Meta": snapshot.local.user_tags(),
        "Stats": {
            "agent": {
                "generation": snapshot.local.id.generation,
                "record_version": snapshot.local.version,
                "index": snapshot.index,
                // Another live agent that claims our node name, if any.
                "name_conflict": snapshot.name_rival.map(|rival| rival.addr.to_string()),
            },
            // Each section below named after a subsystem is its counters,
            // named as `/metrics` names them (see `crate::metrics`).
            "blocking": stats_json(&*state.blocking),
            "watches": stats_json(&*state.watches),
            "events": stats_json(&*state.events),
            "lookup_cache": stats_json(&*state.cache),
            "http": stats_json(&*state.http),
            "serf_lan": {
                "members": snapshot.members.len(),
                "alive": count(1),
                "leaving": count(2),
                "left": count(3),
                "failed": count(4),
            },
            "reload": reload,
            "templates": state.templates.json(),
            "dns": stats_json(&*state.dns),
            "wan": stats_json(&*state.forwarder.counters),
            "keyring": super::keyring::stats(&state, &snapshot.kv),
            "gossip": gossip,
            "kv": {
                "keys": snapshot.kv.len(),
                "bytes": snapshot.kv.bytes(),
                "max_bytes": config.gossip.kv_max_bytes,
                // Deletes whose tombstones were collected, remembered per
                // key (see shoal_protocol::kv).
                "deletes_remembered": snapshot.kv.remembered_deletes().len(),
                "deletes_forgotten": snapshot.kv.remembered_deletes().forgotten(),
                "quarantine": state.kv_quarantine.json(),
            },
        },
    }))
}

/// `PUT /v1/agent/leave`: leave the cluster gracefully, then stop the agent.
/// Answers once the leave is done (at most 10 s).
pub async fn leave(State(state): State<ApiState>) -> Result<StatusCode, ApiError> {
    state.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), state.left.cancelled())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the leave did not finish within 10s",
            )
        })?;
    Ok(StatusCode::OK)
}

/// `PUT /v1/agent/reload`: loads the config file again (as SIGHUP and a
/// file change do). 400 with the error when the new file is refused; the
/// previous configuration then keeps running.
pub async fn reload(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let reloaded = state
        .reload
        .reload()
        .await
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, error))?;
    Ok(Json(json!(reloaded)))
}

/// `PUT /v1/shoal/fault?block=IP,IP` (empty `block` heals): drops all gossip
/// and anti-entropy traffic to and from those peers. `?stall_loop=3s`
/// instead blocks the core loop's thread that long once (at most 60 s).
/// Only with `--fault-injection`; a test hook, not an operator feature.
pub async fn set_faults(
    State(state): State<ApiState>,
    query: super::Query,
) -> Result<Json<Value>, ApiError> {
    if !state.faults.enabled() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "fault injection is off (start the agent with --fault-injection)",
        ));
    }
    if let Some(text) = query.get("stall_loop") {
        let duration = crate::duration::parse(text)
            .ok()
            .filter(|duration| *duration <= std::time::Duration::from_secs(60))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("stall_loop: `{text}` is not a duration of at most 60s"),
                )
            })?;
        state.faults.stall_loop(duration);
        return Ok(Json(
            json!({ "stall_loop_ms": duration.as_millis() as u64 }),
        ));
    }
    let ips = query
        .get("block")
        .unwrap_or_default()
        .split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<std::net::IpAddr>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("block: `{part}` is not an IP address"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    state.faults.set_blocked(ips);
    Ok(Json(json!({ "blocked": state.faults.blocked() })))
}

/// `GET /v1/shoal/fault`: the peers currently cut off.
pub async fn get_faults(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({ "enabled": state.faults.enabled(), "blocked": state.faults.blocked() }))
}
