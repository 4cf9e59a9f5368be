//! What Shoal refuses by design answers `501 Not Implemented` with the
//! reason and what to use instead, never a bare 404: a client that calls
//! it learns at once that retrying won't help.

use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::{ApiError, ApiState};

/// Consul paths Shoal refuses, with why and what to use instead.
pub const REFUSED: &[(&str, &str)] = &[
    ("/v1/session/{*rest}", SESSIONS),
    (
        "/v1/txn",
        "transactions need consensus to be atomic, and Shoal has none (no servers, no Raft); write keys one at a time, with ?cas= where the order matters",
    ),
    (
        "/v1/coordinate/update",
        "each agent computes its own network coordinate from its probes and gossips it; nodes without an agent (external services) have none",
    ),
    ("/v1/connect/{*rest}", CONNECT),
    ("/v1/agent/connect/{*rest}", CONNECT),
    ("/v1/config", CONNECT),
    ("/v1/config/{*rest}", CONNECT),
    ("/v1/discovery-chain/{*rest}", CONNECT),
    (
        "/v1/acl/{*rest}",
        "Shoal has no ACL system: one API token guards writes (and, if set, reads); configure it under [acl] and send it as X-Consul-Token",
    ),
    ("/v1/query", PREPARED),
    ("/v1/query/{*rest}", PREPARED),
    ("/v1/snapshot", NO_SERVERS),
    ("/v1/operator/raft/{*rest}", NO_SERVERS),
    ("/v1/operator/autopilot/{*rest}", NO_SERVERS),
    ("/v1/catalog/register", OWN_RECORDS),
    ("/v1/catalog/deregister", OWN_RECORDS),
    ("/v1/catalog/connect/{service}", CONNECT),
    ("/v1/catalog/gateway-services/{gateway}", CONNECT),
    ("/v1/health/connect/{service}", CONNECT),
    ("/v1/health/ingress/{service}", CONNECT),
];

/// Why sessions and locks (`/v1/session/*`, KV `?acquire`/`?release`)
/// are refused.
pub const SESSIONS: &str = "sessions and locks need consensus to be safe, and Shoal has none (no servers, no Raft): two agents on two sides of a partition would both hold the lock; use a lock service built on consensus (etcd, ZooKeeper, a database), or make the work safe to run twice";
const CONNECT: &str = "Shoal has no service mesh (Connect, intentions, certificates, config entries); run a mesh beside it, or use TLS between services";
const PREPARED: &str = "Shoal has no prepared queries; ask /v1/health/service/:name with ?passing, ?tag=, ?node-meta= or ?filter= instead";
const OWN_RECORDS: &str = "each node's record has one writer, its own agent: register a service on the agent beside it (PUT /v1/agent/service/register); nodes without an agent (external services) can't be registered";
const NO_SERVERS: &str = "Shoal has no servers and no Raft: there is no log to snapshot and no quorum to operate; each agent keeps its own state in its data dir";

/// The 501 answer for `reason`.
pub fn refusal(reason: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!("not supported by shoal, by design: {reason}"),
    )
}

/// A route answering the methods clients use with the 501 for `reason`.
/// (`any()` would set a fallback, which the guard's route layer can't
/// wrap.)
pub fn route(reason: &'static str) -> MethodRouter<ApiState> {
    let handler = move || async move { refusal(reason) };
    on(
        MethodFilter::GET
            .or(MethodFilter::PUT)
            .or(MethodFilter::POST)
            .or(MethodFilter::DELETE)
            .or(MethodFilter::PATCH),
        handler,
    )
}
