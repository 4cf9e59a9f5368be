//! `/v1/kv/*`: the replicated KV store in Consul's shapes.
//!
//! A write answers `true` only once it is durable on this agent's disk; it
//! then spreads to every agent. `?cas=` compares the key's ModifyIndex on
//! this agent only: CAS is not linearizable across the cluster (two agents
//! can both accept a CAS for the same index; the later write wins
//! everywhere).

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use shoal_protocol::kv::KvStore;

use super::cache::Cacheable;
use super::{ApiError, ApiState, Query, blocking};
use crate::consul_json;
use crate::kv::KvRequest;
use crate::reads::Reads;

/// `?keys`: the keys under `prefix`, rolled up at the first `separator`
/// after the prefix, as Consul does.
fn list_keys(kv: &KvStore, prefix: &str, separator: Option<&str>) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for stored in kv
        .prefix(prefix)
        .filter(|s| !crate::kv::is_reserved(&s.entry.key))
    {
        let key = &stored.entry.key;
        let shown = match separator.filter(|s| !s.is_empty()) {
            Some(separator) => match key[prefix.len()..].find(separator) {
                Some(at) => key[..prefix.len() + at + separator.len()].to_string(),
                None => key.clone(),
            },
            None => key.clone(),
        };
        if keys.last() != Some(&shown) {
            keys.push(shown);
        }
    }
    keys
}

/// The keyring's entry is not readable or writable through `/v1/kv`.
fn check_reserved(key: &str) -> Result<(), ApiError> {
    if crate::kv::is_reserved(key) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "`{}` is reserved: use /v1/operator/keyring",
                crate::kv::KEYRING_KEY
            ),
        ));
    }
    Ok(())
}

fn not_found(key: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("key `{key}` not found"))
}

/// `GET /v1/kv/:key` with `recurse`, `keys`, `separator`, `raw` and
/// blocking queries.
pub async fn get(
    State(state): State<ApiState>,
    key: Option<Path<String>>,
    query: Query,
) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let key = key.map(|Path(key)| key).unwrap_or_default();
    check_reserved(&key)?;
    if query.present("raw") {
        let snapshot = state.snapshot();
        let stored = snapshot
            .kv
            .get(&key)
            .filter(|s| !s.entry.deleted)
            .ok_or_else(|| not_found(&key))?;
        let content_type = HeaderValue::from_static("application/octet-stream");
        let value = Bytes::from(stored.entry.value.clone());
        let mut response = Response::new(Body::from(value.clone()));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type.clone());
        response.extensions_mut().insert(Cacheable {
            stamp: Reads::KV.at(snapshot.indexes()),
            content_type,
            body: value,
            route: None,
        });
        return Ok(response);
    }
    let keys_only = query.present("keys");
    let recurse = query.present("recurse");
    let separator = query.get("separator").map(str::to_string);
    blocking::respond(&state, &query, Reads::KV, |snapshot| {
        let kv = &snapshot.kv;
        let body = if keys_only {
            json!(list_keys(kv, &key, separator.as_deref()))
        } else if recurse {
            Value::Array(
                kv.prefix(&key)
                    .filter(|s| !crate::kv::is_reserved(&s.entry.key))
                    .map(consul_json::kv_pair)
                    .collect(),
            )
        } else {
            let stored = kv
                .get(&key)
                .filter(|s| !s.entry.deleted)
                .ok_or_else(|| not_found(&key))?;
            json!([consul_json::kv_pair(stored)])
        };
        if body.as_array().is_some_and(Vec::is_empty) {
            return Err(not_found(&key));
        }
        Ok(body)
    })
    .await
}

fn parse_u64(query: &Query, name: &str) -> Result<Option<u64>, ApiError> {
    query
        .get(name)
        .map(|text| {
            text.parse::<u64>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("{name}: `{text}` is not a non-negative integer"),
                )
            })
        })
        .transpose()
}

/// Writes through the core loop and answers once the write is durable;
/// shared with `/v1/flags` and `/v1/operator/keyring`.
pub(crate) async fn write(state: &ApiState, request: KvRequest) -> Result<Json<bool>, ApiError> {
    Ok(Json(state.agent.kv_write(request).await?))
}

/// `PUT /v1/kv/:key?flags=&cas=` with the raw value as body.
pub async fn put(
    State(state): State<ApiState>,
    key: Option<Path<String>>,
    query: Query,
    body: Bytes,
) -> Result<Json<bool>, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    if query.get("acquire").is_some() || query.get("release").is_some() {
        return Err(super::refused::refusal(super::refused::SESSIONS));
    }
    let key = key.map(|Path(key)| key).unwrap_or_default();
    check_reserved(&key)?;
    let request = KvRequest::Put {
        key,
        value: body.to_vec(),
        flags: parse_u64(&query, "flags")?.unwrap_or(0),
        cas: parse_u64(&query, "cas")?,
    };
    write(&state, request).await
}

/// `DELETE /v1/kv/:key?recurse&cas=`
pub async fn delete(
    State(state): State<ApiState>,
    key: Option<Path<String>>,
    query: Query,
) -> Result<Json<bool>, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let key = key.map(|Path(key)| key).unwrap_or_default();
    check_reserved(&key)?;
    let request = KvRequest::Delete {
        key,
        recurse: query.present("recurse"),
        cas: parse_u64(&query, "cas")?,
    };
    write(&state, request).await
}
