//! `/v1/flags/*`: feature flags (Shoal's own API; Consul has none).
//!
//! Flags are KV entries under `_shoal/flags/` (see [`crate::flags`]): they
//! replicate, persist and converge like any key, and writes go through the
//! same durable path as `PUT /v1/kv`. Every agent decides locally from its
//! own copy, so a lookup never leaves the host.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use shoal_protocol::kv::Stored;

use super::{ApiError, ApiState, Query, blocking};
use crate::flags::{self, Context, FlagDefinition};
use crate::kv::KvRequest;
use crate::reads::Reads;
use crate::snapshot::Snapshot;

fn not_found(key: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("flag `{key}` not found (create it with PUT /v1/flags/{key})"),
    )
}

fn live_flag<'a>(snapshot: &'a Snapshot, key: &str) -> Option<&'a Stored> {
    snapshot
        .kv
        .get(&flags::kv_key(key))
        .filter(|stored| !stored.entry.deleted)
}

/// The definition, or the schema error of a value written through `/v1/kv`.
fn definition_json(stored: &Stored) -> (Value, Option<String>) {
    match FlagDefinition::from_bytes(&stored.entry.value) {
        Ok(definition) => (json!(definition), None),
        Err(error) => (Value::Null, Some(error.to_string())),
    }
}

/// `GET /v1/flags`: every flag with its definition (blocking queries work
/// as on `/v1/kv`).
pub async fn list(State(state): State<ApiState>, query: Query) -> Result<Response, ApiError> {
    blocking::respond(&state, &query, Reads::KV, |snapshot| {
        let all = snapshot
            .kv
            .prefix(flags::PREFIX)
            .map(|stored| {
                let (definition, error) = definition_json(stored);
                let mut body = json!({
                    "key": &stored.entry.key[flags::PREFIX.len()..],
                    "definition": definition,
                    "modify_index": stored.modify_index,
                });
                if let Some(error) = error {
                    body["error"] = json!(error);
                }
                body
            })
            .collect();
        Ok(Value::Array(all))
    })
    .await
}

/// `GET /v1/flags/:key?user=ID&service=NAME`: the decision for this user on
/// this agent, with the reason and the definition. Without `service`, the
/// services registered on this agent are used for targeting.
pub async fn get(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    query: Query,
) -> Result<Response, ApiError> {
    let snapshot = state.snapshot();
    let stored = live_flag(&snapshot, &key).ok_or_else(|| not_found(&key))?;
    let services: Vec<&str> = match query.all("service") {
        given if !given.is_empty() => given,
        _ => snapshot
            .local
            .services
            .iter()
            .map(|service| service.name.as_str())
            .collect(),
    };
    let context = Context {
        user: query.get("user"),
        services,
        node_tags: &snapshot.local.tags,
    };
    let (decision, definition) = flags::decide_stored(&key, &stored.entry.value, &context);
    let mut body = json!({
        "key": key,
        "enabled": decision.enabled,
        "reason": decision.reason,
        "user": query.get("user"),
        "modify_index": stored.modify_index,
    });
    if let Some(bucket) = decision.bucket {
        body["bucket"] = json!(bucket);
    }
    match definition {
        Ok(definition) => body["definition"] = json!(definition),
        Err(error) => {
            body["definition"] = Value::Null;
            body["error"] = json!(error.to_string());
        }
    }
    // The decision reads the KV (the flag) and this node's services and
    // tags (the cluster index moves with our own record).
    Ok(blocking::json_cacheable(
        &body,
        Reads::CLUSTER.and(Reads::KV).at(snapshot.indexes()),
    ))
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// `PUT /v1/flags/:key` with a JSON definition (at least `enabled` and
/// `rollout_percentage`). Answers once the write is durable on this agent.
pub async fn put(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    flags::validate_key(&key).map_err(|error| bad_request(error.to_string()))?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|error| bad_request(format!("the body is not JSON: {error}")))?;
    let definition =
        FlagDefinition::parse(&value).map_err(|error| bad_request(error.to_string()))?;
    let request = KvRequest::Put {
        key: flags::kv_key(&key),
        value: definition.to_bytes(),
        flags: 0,
        cas: None,
    };
    // A write without `cas` always happens.
    let Json(_written) = super::kv::write(&state, request).await?;
    Ok(Json(json!({ "key": key, "definition": definition })))
}

/// `DELETE /v1/flags/:key`: 404 when there is no such flag.
pub async fn delete(
    State(state): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<bool>, ApiError> {
    if live_flag(&state.snapshot(), &key).is_none() {
        return Err(not_found(&key));
    }
    let request = KvRequest::Delete {
        key: flags::kv_key(&key),
        recurse: false,
        cas: None,
    };
    super::kv::write(&state, request).await
}
