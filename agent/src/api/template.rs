//! `POST /v1/shoal/template/render`: what a template would render now on
//! this agent (Shoal's own; `shoal template render FILE` calls it).
//!
//! A dry run: it never writes a file and never runs a command (commands
//! come only from the config file). It is a read: anyone who may read the
//! catalog and the KV may render them. `env()` is refused there, since the
//! agent's environment may hold secrets; `/v1/shoal/template/render-env`
//! allows it, and needs the token (it is refused outright on an agent
//! without `acl.token`, where anything local could call it). Renders are
//! bounded in work and memory ([`API_FUEL`]), output size
//! ([`API_MAX_OUTPUT`]) and concurrency
//! ([`crate::template::API_RENDERS_AT_ONCE`]; another gets 429).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::template::{RenderOptions, render as render_template};

/// Work one dry run may do (minijinja's fuel: one unit per instruction,
/// and one per 64 bytes of strings and lists it builds or writes). It
/// bounds memory too: 250,000 units pay for at most ~16 MB of data (the
/// peak is about twice that: a string is built, then copied into a value),
/// where 5,000,000 let a repeated string grow a render to ~250 MB.
pub const API_FUEL: u64 = 250_000;
/// Largest output a dry run returns; the render stops as soon as it
/// writes more.
pub const API_MAX_OUTPUT: usize = 1024 * 1024;

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
    let Ok(_permit) = state.templates.api_renders.try_acquire() else {
        state
            .templates
            .counters
            .dry_runs_refused
            .fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "another template dry run is running and this agent runs one dry run at a time: \
             nothing was rendered; retry when it ends",
        ));
    };
    state
        .templates
        .counters
        .dry_runs
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
