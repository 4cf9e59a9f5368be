//! Reads for another datacenter (`?dc=dc2` on the catalog, health, KV
//! and coordinate reads): sent there through the WAN pool (see
//! [`crate::wan::Forwarder`]) and answered as that datacenter's agents
//! answer, with their `X-Consul-Index`. A layer on those routes, inside
//! the token check: a caller this agent refuses is refused here too.
//!
//! Writes with another datacenter's `?dc=` are refused by the handlers
//! (`Query::check_datacenter`): each datacenter owns its catalog and KV.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shoal_protocol::forward::{ForwardQuery, ForwardRequest, ForwardResponse};

use super::front::{X_CONSUL_KNOWN_LEADER, X_CONSUL_LAST_CONTACT};
use super::{ApiError, ApiState};
use crate::wan::request_timeout;

/// The header that names the datacenter a forwarded answer came from.
pub const X_SHOAL_DATACENTER: &str = "x-shoal-datacenter";

/// The layer: a `GET` whose `dc` is another datacenter goes there;
/// everything else goes on to the handler.
pub async fn to_datacenter(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(dc) = foreign_datacenter(&request, &state.config.datacenter) else {
        return next.run(request).await;
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return next.run(request).await;
    }
    let path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let timeout = request_timeout(&path);
    let forwarded = ForwardRequest {
        datacenter: dc.clone(),
        query: ForwardQuery::Http {
            path,
            token: super::guard::presented_token(&request),
        },
        hops: 0,
    };
    let started = Instant::now();
    match state.forwarder.send(forwarded, timeout).await {
        Ok(answer) => answered(answer, &dc, started),
        // No agent of the target answered (none known, all busy or
        // unreachable): the reason says which.
        Err(error) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response()
        }
    }
}

/// The `dc` of `request`'s query, when it names another datacenter.
fn foreign_datacenter(request: &Request, ours: &str) -> Option<String> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(request.uri()).ok()?;
    pairs
        .into_iter()
        .find(|(key, _)| key == "dc")
        .map(|(_, dc)| dc)
        .filter(|dc| !dc.is_empty() && !dc.eq_ignore_ascii_case(ours))
}

/// The HTTP answer for a forwarded one: its status, body and headers;
/// `X-Consul-KnownLeader` true (an agent of `dc` answered) and
/// `X-Consul-LastContact` the milliseconds the answer took to come back,
/// which bound how old it is.
fn answered(answer: ForwardResponse, dc: &str, started: Instant) -> Response {
    // Only what an answer of ours could be, and only its content type and
    // Consul's headers: nothing else the far side says is passed on.
    let status = StatusCode::from_u16(answer.status)
        .ok()
        .filter(|status| (200..600).contains(&status.as_u16()))
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.remove(axum::http::header::CONTENT_TYPE);
    for (name, value) in answer.headers {
        let name = name.to_ascii_lowercase();
        if name != "content-type" && !name.starts_with("x-consul-") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.insert(name, value);
        }
    }
    headers.insert(X_CONSUL_KNOWN_LEADER, HeaderValue::from_static("true"));
    headers.insert(
        X_CONSUL_LAST_CONTACT,
        HeaderValue::from(started.elapsed().as_millis() as u64),
    );
    if let Ok(value) = HeaderValue::try_from(dc) {
        headers.insert(HeaderName::from_static(X_SHOAL_DATACENTER), value);
    }
    response
}
