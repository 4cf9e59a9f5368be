//! Runtime cluster operations, as Consul has them: `PUT
//! /v1/agent/join/:address` and `PUT /v1/agent/force-leave/:node`. Both
//! are writes (the token when one is set; never from a browser page).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use shoal_protocol::ForceLeaveError;

use super::{ApiError, ApiState, Query};
use crate::config::DEFAULT_GOSSIP_PORT;
use crate::handle::{ForceLeaveFailed, JoinError};

/// Shoal has one gossip pool: Consul's `?wan` (the servers' WAN pool) has
/// no counterpart.
fn refuse_wan(query: &Query) -> Result<(), ApiError> {
    if query.present("wan") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "wan: not supported: Shoal has one gossip pool and no WAN federation between datacenters; leave ?wan out",
        ));
    }
    Ok(())
}

/// `PUT /v1/agent/join/:address`: joins the cluster the agent at
/// `address` (`IP:PORT`, `[v6]:PORT`, `host:PORT`, or an IP alone, which
/// means the gossip port 7946) belongs to, by an anti-entropy exchange
/// with it. 200 with an empty body once it answered (as Consul), 500
/// with the reason when it could not be reached.
pub async fn join(
    State(state): State<ApiState>,
    Path(address): Path<String>,
    query: Query,
) -> Result<StatusCode, ApiError> {
    refuse_wan(&query)?;
    let text = address.clone();
    // A host name is resolved (once, now): off the async threads.
    let addr = tokio::task::spawn_blocking(move || {
        crate::config::parse_addr("address", &text, DEFAULT_GOSSIP_PORT)
    })
    .await
    .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?
    .map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "address: `{address}` is not a gossip address like 127.0.0.1:{DEFAULT_GOSSIP_PORT}, [::1]:{DEFAULT_GOSSIP_PORT} or host:{DEFAULT_GOSSIP_PORT} (an IP alone means port {DEFAULT_GOSSIP_PORT})"
            ),
        )
    })?;
    match state.agent.join(addr).await {
        Ok(()) => Ok(StatusCode::OK),
        Err(JoinError::Unreachable(reason)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not join {addr}: {reason}"),
        )),
        Err(JoinError::Stopped(stopped)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            stopped.to_string(),
        )),
    }
}

/// `PUT /v1/agent/force-leave/:node[?prune]`: moves the failed member
/// `node` to left on every agent (reaped after `gossip.tombstone_timeout`);
/// with `?prune`, removes it (failed or left) from every agent's member
/// list now. 404 for an unknown name, 409 for a live member or this
/// agent; nothing changes then.
pub async fn force_leave(
    State(state): State<ApiState>,
    Path(node): Path<String>,
    query: Query,
) -> Result<StatusCode, ApiError> {
    refuse_wan(&query)?;
    let prune = query.present("prune");
    match state.agent.force_leave(node, prune).await {
        Ok(_) => Ok(StatusCode::OK),
        Err(ForceLeaveFailed::Refused(error)) => {
            let status = match error {
                ForceLeaveError::Unknown(_) => StatusCode::NOT_FOUND,
                ForceLeaveError::Local(_)
                | ForceLeaveError::Live { .. }
                | ForceLeaveError::PruneNeedsUpgrade { .. } => StatusCode::CONFLICT,
            };
            Err(ApiError::new(status, error.to_string()))
        }
        Err(ForceLeaveFailed::Stopped(stopped)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            stopped.to_string(),
        )),
    }
}
