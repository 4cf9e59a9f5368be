//! `/v1/operator/keyring`: the gossip encryption keyring, in Consul's
//! shapes. Changes are cluster-wide: the new keyring is written to the
//! reserved KV key `_shoal/keyring` (sealed with the current keys on the
//! wire, durable on every agent), and every agent applies it when it
//! arrives. Rotate with: install the new key, wait until every agent has
//! it (`GET` on each), make it primary, then remove the old one.
//!
//! Once written, the stored keyring is the one in force, on restart too:
//! it overrides `encrypt` (see [`crate::kv::keyring_origin`]). Reading or
//! changing the keys needs the API token whenever one is set, and an agent
//! without one refuses both unless `acl.allow_unauthenticated_keyring`
//! (`guard::Access::Keyring`). The
//! bodies are JSON: a `POST` a web page could send as `text/plain` is
//! refused before it gets here (`api::browser`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use shoal_protocol::keyring::{Key, format_key, parse_key};
use shoal_protocol::kv::KvStore;

use super::{ApiError, ApiState};
use crate::kv::{KEYRING_KEY, KeyringState, KvRequest, keyring_origin};

/// `Stats.keyring` of `/v1/agent/self`: where the keys come from and how
/// many there are, never the keys.
pub fn stats(state: &ApiState, kv: &KvStore) -> Value {
    let origin = keyring_origin(state.config.encrypt.as_ref(), &state.keyring, kv);
    let (keys, _) = state.keyring.list();
    json!({
        "source": origin.source,
        "overrides_configured_key": origin.overrides_configured_key,
        "installed_keys": keys.len(),
    })
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// `GET /v1/operator/keyring`: this agent's keys (Consul's list shape, as
/// seen by this agent: `NumNodes` is 1).
pub async fn list(State(state): State<ApiState>) -> Json<Value> {
    let (keys, primary) = state.keyring.list();
    let counts: serde_json::Map<String, Value> =
        keys.iter().map(|k| (format_key(k), json!(1))).collect();
    let primaries: serde_json::Map<String, Value> =
        primary.iter().map(|k| (format_key(k), json!(1))).collect();
    Json(json!([{
        "WAN": false,
        "Datacenter": state.config.datacenter,
        "Segment": "",
        "Keys": counts,
        "PrimaryKeys": primaries,
        "NumNodes": 1,
    }]))
}

/// The `{"Key": "..."}` body of the write operations.
fn key_of(body: &Bytes) -> Result<Key, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("request body is not valid JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| bad_request("request body must be {\"Key\": \"...\"}"))?;
    for field in object.keys() {
        if !field.eq_ignore_ascii_case("key") {
            return Err(bad_request(format!(
                "{field}: unknown field (expected Key)"
            )));
        }
    }
    let text = object
        .iter()
        .find(|(field, _)| field.eq_ignore_ascii_case("key"))
        .and_then(|(_, value)| value.as_str())
        .ok_or_else(|| bad_request("Key: is required"))?;
    parse_key(text).map_err(|error| bad_request(format!("Key: {error}")))
}

/// Writes the new keyring cluster-wide.
async fn publish(
    state: &ApiState,
    change: impl FnOnce(KeyringState) -> Result<KeyringState, ApiError>,
) -> Result<StatusCode, ApiError> {
    let (keys, primary) = state.keyring.list();
    let primary = primary.ok_or_else(|| {
        bad_request(
            "gossip encryption is off on this agent: start every agent with --encrypt KEY first",
        )
    })?;
    let next = change(KeyringState { primary, keys })?;
    // No CAS: the write always happens.
    let _written = super::kv::write(
        state,
        KvRequest::Put {
            key: KEYRING_KEY.to_string(),
            value: next.encode(),
            flags: 0,
            cas: None,
        },
    )
    .await?;
    Ok(StatusCode::OK)
}

/// `POST /v1/operator/keyring` `{"Key": ...}`: install a key (it decrypts
/// from now on; the primary still encrypts).
pub async fn install(State(state): State<ApiState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let key = key_of(&body)?;
    publish(&state, |mut ring| {
        if !ring.keys.contains(&key) {
            ring.keys.push(key);
        }
        Ok(ring)
    })
    .await
}

/// `PUT /v1/operator/keyring` `{"Key": ...}`: make an installed key primary.
pub async fn use_key(State(state): State<ApiState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let key = key_of(&body)?;
    publish(&state, |mut ring| {
        if !ring.keys.contains(&key) {
            return Err(bad_request("Key: is not installed; install it first"));
        }
        ring.primary = key;
        Ok(ring)
    })
    .await
}

/// `DELETE /v1/operator/keyring` `{"Key": ...}`: remove a key that is not
/// the primary.
pub async fn remove(State(state): State<ApiState>, body: Bytes) -> Result<StatusCode, ApiError> {
    let key = key_of(&body)?;
    publish(&state, |mut ring| {
        if ring.primary == key {
            return Err(bad_request(
                "Key: is the primary key; make another key primary first",
            ));
        }
        if !ring.keys.contains(&key) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "Key: is not installed",
            ));
        }
        ring.keys.retain(|k| *k != key);
        Ok(ring)
    })
    .await
}
