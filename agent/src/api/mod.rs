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
//! - [`kv_quarantine`]: `/v1/shoal/kv/quarantine`, values a remembered
//!   delete replaced.
//! - [`status`]: `/v1/status/*`, `/v1/agent/host`.
//! - [`filter`]: Consul's `?filter=` expressions.
//! - [`cluster_ops`] (`/v1/agent/join/:address`,
//!   `/v1/agent/force-leave/:node`): runtime cluster operations.
//! - [`refused`]: what Shoal refuses by design (sessions, txn, Connect,
//!   ...): 501 with the reason.
//! - [`keyring`]: `/v1/operator/keyring`, gossip encryption keys.
//! - [`flags`]: `/v1/flags/*`, feature flags stored in the KV.
//! - [`health`]: the sidecar's own probes, `/health/*`.
//! - [`template`]: `/v1/shoal/template/render`, a dry run of a template.
//! - [`events`]: `/v1/event/fire/:name`, `/v1/event/list`: user events.
//! - [`metrics`]: `/metrics` and `/v1/agent/metrics`.
//! - [`monitor`]: `/v1/agent/monitor`, the agent's log streamed.
//! - [`prometheus_sd`]: `/v1/shoal/prometheus/targets`, the catalog for
//!   Prometheus's `http_sd_configs`.
//! - [`blocking`]: `X-Consul-Index` and blocking queries.
//! - [`ui`]: the operator's web UI at `/ui/` (static files; its data
//!   comes from the routes above).
//! - [`guard`]: the URI and body limits, the `Host` check, and the API
//!   token (`[acl]`) each route needs; [`browser`]: what a web page of
//!   another origin can't do (foreign `Origin`, Fetch Metadata, `POST`
//!   bodies a page can send without a preflight).
//! - [`clean_path`]: `//`, `.` and `..` in a path redirected to the clean
//!   path, as Consul's server does (so routes only see clean paths).
//! - [`front`]: the service: one step in front of the router (guard,
//!   cached answers, Consul's headers); [`cache`]: answers to repeated
//!   reads.
//! - [`server`]: serves the API with connection limits and timeouts;
//!   [`request_counters`]: requests counted and timed by matched route.
//!
//! Handlers read [`Snapshot`]s and ask the core loop for changes through
//! [`AgentHandle`]; they never build the loop's commands themselves.

pub mod agent;
pub mod blocking;
pub mod browser;
pub mod cache;
pub mod catalog;
pub mod clean_path;
pub mod cluster_ops;
pub mod coordinate;
pub mod events;
pub mod filter;
pub mod flags;
pub mod forward;
pub mod front;
pub mod guard;
pub mod health;
pub mod keyring;
pub mod kv;
pub mod kv_quarantine;
pub mod metrics;
pub mod monitor;
pub mod prometheus_sd;
pub mod refused;
pub mod registry;
pub mod request_counters;
pub mod server;
pub mod status;
pub mod template;
pub mod ui;

use std::sync::Arc;

use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::core_counters::CoreCounters;
use crate::handle::{AgentHandle, KvWriteError, RegistrationError};
use crate::registry::RegistryError;
use crate::snapshot::Snapshot;
use shoal_protocol::kv::KvError;

/// What every handler can reach. Handlers read snapshots; they never touch
/// the core loop's state.
#[derive(Clone)]
pub struct ApiState {
    pub config: Arc<AgentConfig>,
    /// The cluster and the KV store; blocking queries wait on it.
    pub snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    /// Counters and local check details; nobody waits on it.
    pub status_rx: watch::Receiver<Arc<CoreCounters>>,
    /// How blocking queries are doing (`/v1/agent/self`).
    pub blocking: Arc<blocking::BlockingCounters>,
    /// Cancelled to make the agent leave and exit.
    pub shutdown: CancellationToken,
    /// Cancelled once the agent has left the cluster.
    pub left: CancellationToken,
    /// Changes go to the core loop through it (registrations, TTL
    /// updates, KV writes, ...).
    pub agent: AgentHandle,
    /// The gossip encryption keyring (shared with the transport).
    pub keyring: shoal_protocol::keyring::Keyring,
    /// Test-only fault injection (`--fault-injection`).
    pub faults: Arc<crate::fault::FaultInjection>,
    /// Config reload: trigger one, read the outcome.
    pub reload: crate::reload_handle::ReloadHandle,
    /// `[[templates]]`: counters and each template's last render.
    pub templates: Arc<crate::template::TemplateStats>,
    /// User event counters (for metrics).
    pub events: Arc<crate::events::EventCounters>,
    /// Watch handler runs and failures (for metrics).
    pub watches: Arc<crate::watches::WatchCounters>,
    /// Every source of counters, read at scrape time (`/metrics`, see
    /// [`crate::metrics`]).
    pub metrics: Arc<crate::metrics::Registry>,
    /// Requests by matched route (bumped by each route's layer).
    pub requests: Arc<request_counters::RequestCounters>,
    /// The HTTP server's own counters (connections refused).
    pub http: Arc<server::HttpCounters>,
    /// The DNS server's counters (all zero when DNS is off).
    pub dns: Arc<crate::dns::DnsCounters>,
    /// Serialized answers to repeated reads (with hit/miss counters).
    pub cache: Arc<cache::ResponseCache>,
    /// KV values a remembered delete replaced (shared with the core loop).
    pub kv_quarantine: Arc<crate::kv::quarantine::Quarantine>,
    /// The WAN pool, when this agent is a WAN member (`wan.enabled`).
    pub wan: Option<crate::wan::WanView>,
    /// Sends reads with another datacenter's `?dc=` there.
    pub forwarder: Arc<crate::wan::Forwarder>,
}

impl ApiState {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot_rx.borrow().clone()
    }

    pub fn status(&self) -> Arc<CoreCounters> {
        self.status_rx.borrow().clone()
    }
}

/// Every route says what it needs from the caller ([`guard::Access`]):
/// `read`, `write`, `secret` or `open`. Write-ness follows the matched
/// route and method, so an encoded or reshaped path can't change it.
pub fn router(state: ApiState) -> front::Api {
    let acl = Arc::new(state.config.acl.clone());
    let front = front::Front {
        http_addr: state.config.http_addr,
        acl: acl.clone(),
        snapshot_rx: state.snapshot_rx.clone(),
        cache: state.cache.clone(),
        metrics: state.requests.clone(),
    };
    let mut routes = guard::Routes::new(acl, state.requests.clone());
    for (path, reason) in refused::REFUSED {
        routes = routes.read(path, refused::route(reason));
    }
    let router = routes
        .read("/v1/agent/self", get(agent::agent_self))
        .read("/v1/agent/members", get(agent::members))
        .write("/v1/agent/leave", put(agent::leave))
        .write("/v1/agent/reload", put(agent::reload))
        .write("/v1/agent/join/{address}", put(cluster_ops::join))
        .write(
            "/v1/agent/force-leave/{node}",
            put(cluster_ops::force_leave),
        )
        .read("/v1/agent/services", get(registry::services))
        .read("/v1/agent/service/{id}", get(registry::service))
        .write(
            "/v1/agent/service/register",
            put(registry::register_service),
        )
        // Consul's legacy GET forms of writes are not served (405, as in
        // Consul since 1.0): an <img> tag on any page could send them.
        .write(
            "/v1/agent/service/deregister/{id}",
            put(registry::deregister_service),
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
            put(registry::deregister_check),
        )
        // pass, warn or fail; the static routes above and below win.
        .write("/v1/agent/check/{verb}/{id}", put(registry::check_report))
        .write("/v1/agent/check/update/{id}", put(registry::check_update))
        .read(
            "/v1/agent/health/service/name/{name}",
            get(registry::health_by_name),
        )
        .read(
            "/v1/agent/health/service/id/{id}",
            get(registry::health_by_id),
        )
        .read(
            "/v1/catalog/services",
            forwarded(&state, get(catalog::services)),
        )
        .read(
            "/v1/catalog/service/{name}",
            forwarded(&state, get(catalog::service)),
        )
        .read("/v1/catalog/nodes", forwarded(&state, get(catalog::nodes)))
        .read(
            "/v1/catalog/node/{node}",
            forwarded(&state, get(catalog::node)),
        )
        .read(
            "/v1/catalog/node-services/{node}",
            forwarded(&state, get(catalog::node_services)),
        )
        .read("/v1/catalog/datacenters", get(catalog::datacenters))
        .read(
            "/v1/coordinate/nodes",
            forwarded(&state, get(coordinate::nodes)),
        )
        .read(
            "/v1/coordinate/node/{node}",
            forwarded(&state, get(coordinate::node)),
        )
        .read("/v1/coordinate/datacenters", get(coordinate::datacenters))
        .read("/v1/status/leader", get(status::leader))
        .read("/v1/status/peers", get(status::peers))
        .read("/v1/agent/host", get(status::host))
        .read(
            "/v1/health/service/{name}",
            forwarded(&state, get(catalog::health_service)),
        )
        .read(
            "/v1/health/checks/{name}",
            forwarded(&state, get(catalog::health_checks)),
        )
        .read(
            "/v1/health/state/{state}",
            forwarded(&state, get(catalog::health_state)),
        )
        .read(
            "/v1/health/node/{node}",
            forwarded(&state, get(catalog::health_node)),
        )
        .read(
            "/v1/shoal/pick/{name}",
            forwarded(&state, get(catalog::pick)),
        )
        .read("/v1/shoal/fault", get(agent::get_faults))
        .write("/v1/shoal/fault", put(agent::set_faults))
        .read("/v1/kv", forwarded(&state, get(kv::get)))
        .write("/v1/kv", put(kv::put).delete(kv::delete))
        .read("/v1/kv/", forwarded(&state, get(kv::get)))
        .write("/v1/kv/", put(kv::put).delete(kv::delete))
        .read("/v1/kv/{*key}", forwarded(&state, get(kv::get)))
        .write("/v1/kv/{*key}", put(kv::put).delete(kv::delete))
        .read("/v1/shoal/kv/quarantine", get(kv_quarantine::list))
        .write(
            "/v1/shoal/kv/quarantine",
            axum::routing::delete(kv_quarantine::clear),
        )
        .read("/v1/flags", get(flags::list))
        .read("/v1/flags/{key}", get(flags::get))
        .write("/v1/flags/{key}", put(flags::put).delete(flags::delete))
        // The keys decrypt (and forge) all cluster traffic: reading them
        // needs the token too, or (without one) the operator's opt-in.
        .keyring("/v1/operator/keyring", get(keyring::list))
        // Changing them needs the token, or the operator's opt-in.
        .keyring(
            "/v1/operator/keyring",
            post(keyring::install)
                .put(keyring::use_key)
                .delete(keyring::remove),
        )
        // Dry runs: never write a file or run a command. `env()` reads the
        // agent's environment, which may hold secrets: only on the second
        // route, with the token.
        .read("/v1/shoal/template/render", post(template::render))
        .secret(
            "/v1/shoal/template/render-env",
            post(template::render_with_env),
        )
        .write("/v1/event/fire/{name}", put(events::fire))
        .read("/v1/event/list", get(events::list))
        .read("/health", get(health::summary))
        .open("/health/live", get(health::live))
        .open("/health/ready", get(health::ready))
        .read("/health/detailed", get(health::detailed))
        // The log reveals the agent's internals (peers, checks' output,
        // config): the token whenever one is set, as Consul's agent:read.
        .secret("/v1/agent/monitor", get(monitor::monitor))
        .read("/metrics", get(metrics::prometheus))
        .read("/v1/agent/metrics", get(metrics::agent_metrics))
        .read("/v1/shoal/prometheus/targets", get(prometheus_sd::targets))
        .read("/v1/internal/ui/services", get(ui::services::services))
        // The UI's files hold no data; `/` sends browsers to them.
        .open("/ui", get(ui::to_index))
        .open("/ui/", get(ui::index))
        .open("/ui/{file}", get(ui::file))
        .open("/", get(ui::root).fallback(not_found))
        .into_router()
        .fallback(not_found)
        .with_state(state);
    front::Api::new(front, router)
}

/// `route`, whose reads with another datacenter's `?dc=` go there
/// ([`forward`]).
fn forwarded(state: &ApiState, route: MethodRouter<ApiState>) -> MethodRouter<ApiState> {
    route.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        forward::to_datacenter,
    ))
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

    /// A boolean parameter as Consul reads `?passing`: absent is false, a
    /// bare `?passing` is true, and a value is read as Go's
    /// `strconv.ParseBool` does (`1 t T TRUE true True 0 f F FALSE false
    /// False`); anything else is a 400 naming the parameter.
    pub fn bool(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some("") => Ok(true),
            Some(text) => parse_bool(text).ok_or_else(|| bad_bool(key, text)),
        }
    }

    /// A presence-only parameter (`?recurse`, `?keys`, `?raw`, `?stale`,
    /// `?consistent`, `?cached`): Consul looks only at whether it is there,
    /// so `?recurse=false` still recurses.
    pub fn present(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Refuses a `dc` other than ours where it reaches a handler: a read
    /// that is not forwarded (see [`forward`]), or a write, which Shoal
    /// never sends to another datacenter (each owns its catalog and KV);
    /// other Consul parameters (`stale`, `consistent`, `ns`, `partition`,
    /// `token`, ...) are accepted as is.
    pub fn check_datacenter(&self, ours: &str) -> Result<(), ApiError> {
        match self.get("dc") {
            // Datacenter names are case-insensitive, as in DNS.
            Some(dc) if !dc.is_empty() && !dc.eq_ignore_ascii_case(ours) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "dc: `{dc}` is another datacenter (this agent is in `{ours}`): only catalog, health, KV and coordinate reads go there; each datacenter owns its data, so write to an agent of `{dc}`"
                ),
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

/// Go's `strconv.ParseBool`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A 400 for a boolean parameter that is not one.
pub fn bad_bool(key: &str, text: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!(
            "{key}: `{text}` is not a boolean (one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)"
        ),
    )
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

pub(crate) async fn not_found(
    axum::extract::State(state): axum::extract::State<ApiState>,
    method: Method,
    uri: Uri,
) -> ApiError {
    state.requests.record(
        request_counters::UNMATCHED,
        &method,
        StatusCode::NOT_FOUND,
        std::time::Duration::ZERO,
    );
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}
