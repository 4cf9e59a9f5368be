//! `POST /v1/shoal/template/render`: what a template would render now on
//! this agent (Shoal's own; `shoal template render FILE` calls it).
//!
//! A dry run: it never writes a file and never runs a command (commands
//! come only from the config file). It is a read: anyone who may read the
//! catalog and the KV may render them. `env()` is refused there, since the
//! agent's environment may hold secrets; `/v1/shoal/template/render-env`
//! allows it, and needs the token (it is refused outright on an agent
//! without `acl.token`, where anything local could call it). Renders are
//! bounded in work (fuel), output size and concurrency.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::template::{RenderOptions, render as render_template};

/// Work one dry run may do (minijinja's fuel: about one unit per
/// instruction); a few hundred milliseconds of CPU at most.
const API_FUEL: u64 = 5_000_000;
/// Largest output a dry run returns.
const API_MAX_OUTPUT: usize = 4 * 1024 * 1024;

/// `POST /v1/shoal/template/render` with `{"template": "..."}`: answers
/// `{"output": "...", "reads": ["cluster", "kv"]}`, or 422 with the error.
pub async fn render(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    dry_run(&state, &body, false).await
}

/// The same, with `env()`: needs the agent's token.
pub async fn render_with_env(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if state.config.acl.token.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "rendering with env() shows the agent's environment: it needs `acl.token` set on \
             the agent (and sent with the request); use /v1/shoal/template/render without env()",
        ));
    }
    dry_run(&state, &body, true).await
}

async fn dry_run(state: &ApiState, body: &[u8], allow_env: bool) -> Result<Json<Value>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let request: Value = serde_json::from_slice(body)
        .map_err(|error| bad(format!("the body is not JSON: {error}")))?;
    let source = match request.get("template") {
        Some(Value::String(text)) => text.clone(),
        Some(_) => return Err(bad("template: must be a string".into())),
        None => {
            return Err(bad(
                "template: is required (the template's text, as a JSON string)".into(),
            ));
        }
    };
    if let Some(unknown) = request
        .as_object()
        .and_then(|object| object.keys().find(|key| *key != "template"))
    {
        return Err(bad(format!(
            "{unknown}: unknown field (expected `template`)"
        )));
    }
    let _permit = state
        .templates
        .api_renders
        .acquire()
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down"))?;
    state
        .templates
        .counters
        .api_renders
        .fetch_add(1, Ordering::Relaxed);
    let snapshot = state.snapshot();
    let options = RenderOptions {
        allow_env,
        fuel: Some(API_FUEL),
        max_output: API_MAX_OUTPUT,
    };
    let rendered = tokio::task::spawn_blocking(move || render_template(&source, snapshot, options))
        .await
        .map_err(|error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the renderer panicked: {error}"),
            )
        })?;
    match rendered {
        Ok(rendered) => Ok(Json(json!({
            "output": rendered.output,
            "reads": rendered.reads.names(),
        }))),
        Err(error) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("template: {}", error.message),
        )),
    }
}
