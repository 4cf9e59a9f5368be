//! The HTTP API, bound to 127.0.0.1 by default. Where Consul has the same
//! endpoint we use its path, parameters and JSON field names, so Consul
//! clients work unchanged; the rest lives under Shoal's own paths.
//!
//! - [`agent`]: `/v1/agent/self`, `/v1/agent/members`, `/v1/agent/leave`,
//!   `/v1/agent/reload`.
//! - [`registry`]: `/v1/agent/service*`, `/v1/agent/check*`, maintenance:
//!   this agent's registry.
//! - [`catalog`]: cluster-wide `/v1/catalog/*`, `/v1/health/*`, `/v1/shoal/pick`.
//! - [`kv`]: `/v1/kv/*`, the replicated KV store.
//! - [`keyring`]: `/v1/operator/keyring`, gossip encryption keys.
//! - [`flags`]: `/v1/flags/*`, feature flags stored in the KV.
//! - [`health`]: the sidecar's own probes, `/health/*`.
//! - [`blocking`]: `X-Consul-Index` and blocking queries.
//! - [`ui`]: the operator's web UI at `/ui/` (static files; its data
//!   comes from the routes above).
//! - [`guard`]: the URI and body limits, the `Host` check, and the API
//!   token (`[acl]`) each route needs.
//!
//! Handlers read [`Snapshot`]s and ask the gossip loop for changes through
//! [`AgentHandle`]; they never build the loop's commands themselves.

pub mod agent;
pub mod blocking;
pub mod catalog;
pub mod consul_json;
pub mod flags;
pub mod guard;
pub mod health;
pub mod keyring;
pub mod kv;
pub mod registry;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::daemon::handle::{AgentHandle, KvWriteError, RegistrationError};
use crate::daemon::snapshot::{Snapshot, Status};
use crate::registry::RegistryError;
use shoal_protocol::kv::KvError;

/// What every handler can reach. Handlers read snapshots; they never touch
/// the gossip loop's state.
#[derive(Clone)]
pub struct ApiState {
    pub config: Arc<AgentConfig>,
    /// The cluster and the KV store; blocking queries wait on it.
    pub snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    /// Counters and local check details; nobody waits on it.
    pub status_rx: watch::Receiver<Arc<Status>>,
    /// How blocking queries are doing (`/v1/agent/self`).
    pub blocking: Arc<blocking::BlockingStats>,
    /// Cancelled to make the agent leave and exit.
    pub shutdown: CancellationToken,
    /// Cancelled once the agent has left the cluster.
    pub left: CancellationToken,
    /// Changes go to the gossip loop through it (registrations, TTL
    /// updates, KV writes, ...).
    pub agent: AgentHandle,
    /// The gossip encryption keyring (shared with the transport).
    pub keyring: shoal_protocol::keyring::Keyring,
    /// Test-only fault injection (`--fault-injection`).
    pub faults: Arc<crate::daemon::fault::FaultInjection>,
    /// Config reload: trigger one, read the outcome.
    pub reload: crate::daemon::reload::ReloadHandle,
}

impl ApiState {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot_rx.borrow().clone()
    }

    pub fn status(&self) -> Arc<Status> {
        self.status_rx.borrow().clone()
    }
}

/// Every route says what it needs from the caller ([`guard::Access`]):
/// `read`, `write`, `secret` or `open`. Write-ness follows the matched
/// route and method, so an encoded or reshaped path can't change it.
pub fn router(state: ApiState) -> Router {
    guard::Routes::new(state.config.acl.clone())
        .read("/v1/agent/self", get(agent::agent_self))
        .read("/v1/agent/members", get(agent::members))
        .write("/v1/agent/leave", put(agent::leave))
        .write("/v1/agent/reload", put(agent::reload))
        .read("/v1/agent/services", get(registry::services))
        .read("/v1/agent/service/{id}", get(registry::service))
        .write(
            "/v1/agent/service/register",
            put(registry::register_service),
        )
        // Consul's legacy GET forms change state too.
        .write(
            "/v1/agent/service/deregister/{id}",
            put(registry::deregister_service).get(registry::deregister_service),
        )
        .write(
            "/v1/agent/service/maintenance/{id}",
            put(registry::service_maintenance),
        )
        .write("/v1/agent/maintenance", put(registry::node_maintenance))
        .read("/v1/agent/checks", get(registry::checks))
        .write("/v1/agent/check/register", put(registry::register_check))
        .write(
            "/v1/agent/check/deregister/{id}",
            put(registry::deregister_check).get(registry::deregister_check),
        )
        // pass, warn or fail; the static routes above and below win.
        .write(
            "/v1/agent/check/{verb}/{id}",
            put(registry::check_report).get(registry::check_report),
        )
        .write("/v1/agent/check/update/{id}", put(registry::check_update))
        .read(
            "/v1/agent/health/service/name/{name}",
            get(registry::health_by_name),
        )
        .read(
            "/v1/agent/health/service/id/{id}",
            get(registry::health_by_id),
        )
        .read("/v1/catalog/services", get(catalog::services))
        .read("/v1/catalog/service/{name}", get(catalog::service))
        .read("/v1/catalog/nodes", get(catalog::nodes))
        .read("/v1/health/service/{name}", get(catalog::health_service))
        .read("/v1/health/checks/{name}", get(catalog::health_checks))
        .read("/v1/health/state/{state}", get(catalog::health_state))
        .read("/v1/health/node/{node}", get(catalog::health_node))
        .read("/v1/shoal/pick/{name}", get(catalog::pick))
        .read("/v1/shoal/fault", get(agent::get_faults))
        .write("/v1/shoal/fault", put(agent::set_faults))
        .read("/v1/kv", get(kv::get))
        .write("/v1/kv", put(kv::put).delete(kv::delete))
        .read("/v1/kv/", get(kv::get))
        .write("/v1/kv/", put(kv::put).delete(kv::delete))
        .read("/v1/kv/{*key}", get(kv::get))
        .write("/v1/kv/{*key}", put(kv::put).delete(kv::delete))
        .read("/v1/flags", get(flags::list))
        .read("/v1/flags/{key}", get(flags::get))
        .write("/v1/flags/{key}", put(flags::put).delete(flags::delete))
        // The keys decrypt (and forge) all cluster traffic: reading them
        // needs the token too.
        .secret("/v1/operator/keyring", get(keyring::list))
        .write(
            "/v1/operator/keyring",
            post(keyring::install)
                .put(keyring::use_key)
                .delete(keyring::remove),
        )
        .read("/health", get(health::summary))
        .open("/health/live", get(health::live))
        .open("/health/ready", get(health::ready))
        .read("/health/detailed", get(health::detailed))
        .read("/v1/internal/ui/services", get(ui::services::services))
        // The UI's files hold no data; `/` sends browsers to them.
        .open("/ui", get(ui::to_index))
        .open("/ui/", get(ui::index))
        .open("/ui/{file}", get(ui::file))
        .open("/", get(ui::root).fallback(not_found))
        .into_router()
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.config.http_addr,
            guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            blocking::consul_headers,
        ))
        .with_state(state)
}

/// A request's query string, with repeated keys kept (`?tag=a&tag=b`).
#[derive(Debug, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A Consul boolean flag: present (`?passing`, `?passing=1`) and not
    /// `false` or `0`.
    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v != "false" && v != "0")
    }

    /// Refuses a `dc` other than ours; other Consul parameters (`stale`,
    /// `consistent`, `ns`, `partition`, `token`, ...) are accepted as is.
    pub fn check_datacenter(&self, ours: &str) -> Result<(), ApiError> {
        match self.get("dc") {
            Some(dc) if !dc.is_empty() && dc != ours => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("dc: no path to datacenter `{dc}` (this agent is in `{ours}`)"),
            )),
            _ => Ok(()),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|error| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("bad query string: {error}"),
                    )
                })?;
        Ok(Query(pairs))
    }
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

impl From<RegistrationError> for ApiError {
    fn from(error: RegistrationError) -> Self {
        let status = match &error {
            RegistrationError::Registry(
                RegistryError::UnknownService(_) | RegistryError::UnknownCheck(_),
            ) => StatusCode::NOT_FOUND,
            RegistrationError::Registry(_) => StatusCode::BAD_REQUEST,
            RegistrationError::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RegistrationError::Stopped(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, error.to_string())
    }
}

impl From<KvWriteError> for ApiError {
    fn from(error: KvWriteError) -> Self {
        let status = match &error {
            KvWriteError::Refused(KvError::QuotaExceeded { .. }) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            KvWriteError::Refused(KvError::TimeFromTheFuture | KvError::Superseded) => {
                StatusCode::CONFLICT
            }
            KvWriteError::Refused(_) => StatusCode::BAD_REQUEST,
            KvWriteError::NotDurable(_) => StatusCode::INTERNAL_SERVER_ERROR,
            KvWriteError::Stopped(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, error.to_string())
    }
}

pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}
