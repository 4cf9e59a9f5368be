//! The sidecar's own probes, for orchestrators (Kubernetes, systemd, load
//! balancers): liveness, readiness, a summary and every check in detail.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use shoal_protocol::record::Health;

use super::ApiState;
use crate::snapshot::Snapshot;

/// Another live agent claims our node name: one of the two is missing
/// from the catalog until one is renamed.
fn name_conflict(state: &ApiState, snapshot: &Snapshot) -> Option<String> {
    snapshot.name_rival.map(|rival| {
        format!(
            "node name `{}` is also claimed by the live agent at {}",
            state.config.node_name, rival.addr
        )
    })
}

/// Why this agent is not ready: it has seeds but no other member (it
/// never joined, or everyone else is gone), its service definitions are
/// not loaded yet, or another live agent claims its node name.
pub fn not_ready(state: &ApiState, snapshot: &Snapshot) -> Option<String> {
    let joined = state.config.join.is_empty() || snapshot.members.len() > 1;
    if !joined {
        let seeds = state
            .config
            .join
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "not joined to the cluster yet: no seed has answered ({seeds}); the agent's log (`shoal monitor`) says why each seed is silent"
        ))
    } else if !snapshot.checks_loaded {
        Some("service definitions not loaded yet".to_string())
    } else {
        name_conflict(state, snapshot)
    }
}

/// `GET /health/live`: the process is up and serving. Always 200.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

/// `GET /health/ready`: 200 once the agent has joined the cluster (or has
/// no seeds to join) and its checks are loaded; 503 with the reason before,
/// and while another live agent claims its node name.
pub async fn ready(State(state): State<ApiState>) -> impl IntoResponse {
    let snapshot = state.snapshot();
    match not_ready(&state, &snapshot) {
        None => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": reason })),
        ),
    }
}

/// `GET /health`: this node's health (Shoal's healthy / degraded /
/// unhealthy over all local checks), member counts, and whether it is
/// ready (as `/health/ready`, with the reason when not). 503 when
/// unhealthy.
pub async fn summary(State(state): State<ApiState>) -> impl IntoResponse {
    let snapshot = state.snapshot();
    let status = state.status();
    let health = Health::of(status.local_checks.iter().map(|c| &c.record));
    let alive = snapshot
        .members
        .iter()
        .filter(|m| m.status.consul_code() == 1)
        .count();
    let reason = not_ready(&state, &snapshot);
    let code = if health == Health::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        code,
        Json(json!({
            "status": health.as_str(),
            "node": state.config.node_name,
            "members": snapshot.members.len(),
            "alive_members": alive,
            "services": snapshot.local.services.len(),
            "checks": status.local_checks.len(),
            "name_conflict": name_conflict(&state, &snapshot),
            "ready": reason.is_none(),
            "not_ready_reason": reason,
        })),
    )
}

/// `GET /health/detailed`: every local check: status, output, duration,
/// last run.
pub async fn detailed(State(state): State<ApiState>) -> Json<Value> {
    let snapshot = state.snapshot();
    let status = state.status();
    let health = Health::of(status.local_checks.iter().map(|c| &c.record));
    Json(json!({
        "status": health.as_str(),
        "node": state.config.node_name,
        "name_conflict": name_conflict(&state, &snapshot),
        "checks": super::registry::detailed_checks(&status),
        // `[[templates]]`: a failing one keeps its previous file.
        "templates": state.templates.health_json(),
    }))
}
