//! `/v1/event/*`: user events in Consul's shapes (see [`crate::events`]).

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use shoal_protocol::event::{self, EventRequest, MAX_EVENT_FILTER, MAX_EVENT_PAYLOAD};

use super::{ApiError, ApiState, Query, blocking};
use crate::consul_json::{event_list, user_event};
use crate::events::compile_filter;
use crate::handle::FireEventError;
use crate::reads::Reads;

/// A filter parameter: at most [`MAX_EVENT_FILTER`] bytes, and a regular
/// expression that compiles.
fn filter(query: &Query, name: &str) -> Result<String, ApiError> {
    let pattern = query.get(name).unwrap_or_default().to_string();
    if pattern.len() > MAX_EVENT_FILTER {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{name}: the filter is longer than {MAX_EVENT_FILTER} bytes"),
        ));
    }
    compile_filter(&pattern).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{name}: `{pattern}` is not a valid regular expression: {error}"),
        )
    })?;
    Ok(pattern)
}

/// `PUT /v1/event/fire/:name?node=&service=&tag=` with the payload as body.
/// Past the fire budget (`[events] fire_rate`, `fire_burst`): 429, nothing
/// fired.
pub async fn fire(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Query,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    if !event::valid_name(&name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "name: `{name}` must be 1 to {} bytes of letters, digits, `-`, `_`, `.`, `/` or `:`",
                event::MAX_EVENT_NAME
            ),
        ));
    }
    if body.len() > MAX_EVENT_PAYLOAD {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "payload: {} bytes, more than the {MAX_EVENT_PAYLOAD} allowed",
                body.len()
            ),
        ));
    }
    let request = EventRequest {
        id: crate::events::random_id(),
        name,
        payload: body.to_vec(),
        node_filter: filter(&query, "node")?,
        service_filter: filter(&query, "service")?,
        tag_filter: filter(&query, "tag")?,
    };
    let limits = &state.config.events;
    if !state.events.fire_budget.try_take(limits, Instant::now()) {
        state.events.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "events are fired faster than this agent allows (events.fire_rate = {} a \
                 second, events.fire_burst = {}): nothing was fired; retry later",
                limits.fire_rate, limits.fire_burst
            ),
        ));
    }
    match state.agent.fire_event(request).await {
        Ok(fired) => Ok(Json(user_event(&fired))),
        Err(FireEventError::Refused(error)) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, error.to_string()))
        }
        Err(FireEventError::Stopped(error)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            error.to_string(),
        )),
    }
}

/// `GET /v1/event/list?name=`: the recent events this agent received (and
/// whose filters matched it), oldest first, with blocking queries.
pub async fn list(State(state): State<ApiState>, query: Query) -> Result<Response, ApiError> {
    query.check_datacenter(&state.config.datacenter)?;
    let name = query.get("name").unwrap_or_default().to_string();
    blocking::respond(&state, &query, Reads::EVENTS, |snapshot| {
        Ok(event_list(snapshot, &name))
    })
    .await
}
