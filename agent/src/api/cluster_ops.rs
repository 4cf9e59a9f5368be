//! Runtime cluster operations, as Consul has them: `PUT
//! /v1/agent/join/:address` and `PUT /v1/agent/force-leave/:node`. Both
//! are writes (the token when one is set; never from a browser page).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use shoal_protocol::ForceLeaveError;

use super::{ApiError, ApiState, Query};
use crate::config::{DEFAULT_GOSSIP_PORT, DEFAULT_WAN_PORT};
use crate::handle::{AgentHandle, ForceLeaveFailed, JoinError};

/// The WAN pool, for `?wan`: only a WAN member (`wan.enabled`) is in it.
pub fn wan_pool(state: &ApiState) -> Result<&crate::wan::WanView, ApiError> {
    state.wan.as_ref().ok_or_else(|| {
        let members: Vec<String> = crate::wan::lan_wan_members(&state.snapshot())
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let hint = if members.is_empty() {
            "no agent of this datacenter is one".to_string()
        } else {
            format!("ask one that is: {}", members.join(", "))
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "wan: this agent is not a WAN member (start it with --wan or wan.enabled = true); {hint}"
            ),
        )
    })
}

/// The pool a request is about: the WAN pool with `?wan`, else the LAN's.
fn pool<'a>(state: &'a ApiState, query: &Query) -> Result<(&'a AgentHandle, u16), ApiError> {
    if query.present("wan") {
        Ok((&wan_pool(state)?.agent, DEFAULT_WAN_PORT))
    } else {
        Ok((&state.agent, DEFAULT_GOSSIP_PORT))
    }
}

/// `PUT /v1/agent/join/:address[?wan]`: joins the cluster the agent at
/// `address` (`IP:PORT`, `[v6]:PORT`, `host:PORT`, or an IP alone, which
/// means the gossip port 7946) belongs to, by an anti-entropy exchange
/// with it; with `?wan`, on a WAN member, the WAN pool (an IP alone means
/// port 8302). 200 with an empty body once it answered (as Consul), 500
/// with the reason when it could not be reached.
pub async fn join(
    State(state): State<ApiState>,
    Path(address): Path<String>,
    query: Query,
) -> Result<StatusCode, ApiError> {
    let (agent, default_port) = pool(&state, &query)?;
    let text = address.clone();
    // A host name is resolved (once, now): off the async threads.
    let addr = tokio::task::spawn_blocking(move || {
        crate::config::parse_addr("address", &text, default_port)
    })
    .await
    .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()))?
    .map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "address: `{address}` is not a gossip address like 127.0.0.1:{default_port}, [::1]:{default_port} or host:{default_port} (an IP alone means port {default_port})"
            ),
        )
    })?;
    match agent.join(addr).await {
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

/// `PUT /v1/agent/force-leave/:node[?prune][?wan]`: moves the failed
/// member `node` to left on every agent (reaped after
/// `gossip.tombstone_timeout`); with `?prune`, removes it (failed or
/// left) from every agent's member list now; with `?wan`, on a WAN
/// member, the WAN pool's member `node` (named `node.dc`). 404 for an
/// unknown name, 409 for a live member or this agent; nothing changes
/// then.
pub async fn force_leave(
    State(state): State<ApiState>,
    Path(node): Path<String>,
    query: Query,
) -> Result<StatusCode, ApiError> {
    let (agent, _) = pool(&state, &query)?;
    let prune = query.present("prune");
    match agent.force_leave(node, prune).await {
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
