//! The HTTP API, bound to 127.0.0.1 by default. Where Consul has the same
//! endpoint we use its path, parameters and JSON field names, so Consul
//! clients work unchanged; the rest lives under Shoal's own paths.
//!
//! - [`agent`]: `/v1/agent/self`, `/v1/agent/members`, `/v1/agent/leave`.
//! - [`health`]: the sidecar's own probes, `/health/*`.

pub mod agent;
pub mod health;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::daemon::snapshot::Snapshot;

/// What every handler can reach. Handlers read snapshots; they never touch
/// the gossip loop's state.
#[derive(Clone)]
pub struct ApiState {
    pub config: Arc<AgentConfig>,
    pub snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    /// Cancelled to make the agent leave and exit.
    pub shutdown: CancellationToken,
    /// Cancelled once the agent has left the cluster.
    pub left: CancellationToken,
}

impl ApiState {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot_rx.borrow().clone()
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/agent/self", get(agent::agent_self))
        .route("/v1/agent/members", get(agent::members))
        .route("/v1/agent/leave", put(agent::leave))
        .route("/health/live", get(health::live))
        .fallback(not_found)
        .with_state(state)
}

/// An API error: a status and a JSON body `{"error": "..."}` that says
/// what was wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        response
            .headers_mut()
            .insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
        response
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}
