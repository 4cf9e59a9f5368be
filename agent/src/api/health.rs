//! The sidecar's own probes, for orchestrators.

use axum::Json;
use serde_json::{Value, json};

/// `GET /health/live`: the process is up and serving. Always 200.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}
