//! `GET /v1/shoal/kv/quarantine`: the KV values a remembered delete
//! replaced on this agent (see `crate::kv::quarantine`), oldest first;
//! `DELETE` clears them. Reading returns the values, so it is a read (the
//! token only with `acl.protect_reads`); clearing is a write (the token).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::kv::quarantine::Quarantined;

/// NTP64 (seconds in the high 32 bits) as Unix seconds.
fn unix_seconds(ntp64: u64) -> f64 {
    (ntp64 >> 32) as f64 + (ntp64 & 0xffff_ffff) as f64 / 4_294_967_296.0
}

fn item_json(item: &Quarantined) -> Value {
    json!({
        "Seq": item.seq,
        "Key": item.entry.key,
        // Base64, as `/v1/kv` answers values.
        "Value": base64::engine::general_purpose::STANDARD.encode(&item.entry.value),
        "Flags": item.entry.flags,
        "Writer": item.entry.writer,
        // Unix seconds: when the value was written, when the delete that
        // replaced it was made, and when this agent quarantined it.
        "WrittenAt": unix_seconds(item.entry.time),
        "DeletedAt": unix_seconds(item.deleted_at),
        "QuarantinedAt": unix_seconds(item.quarantined_at),
    })
}

/// `GET /v1/shoal/kv/quarantine`
pub async fn list(State(state): State<ApiState>) -> Json<Value> {
    // The keyring's keys are read through /v1/operator/keyring only, with
    // its token rules: never shown here, like everywhere under /v1/kv.
    let items: Vec<Value> = state
        .kv_quarantine
        .list()
        .iter()
        .filter(|item| !crate::kv::is_reserved(&item.entry.key))
        .map(|item| item_json(item))
        .collect();
    Json(Value::Array(items))
}

/// `DELETE /v1/shoal/kv/quarantine`: forgets every quarantined value, on
/// disk too; answers how many.
pub async fn clear(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let cleared = state
        .kv_quarantine
        .clear()
        .await
        .map_err(|error| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error))?;
    Ok(Json(json!({ "Cleared": cleared })))
}
