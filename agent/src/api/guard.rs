//! What every request passes before a handler sees it: the URI and body
//! limits, and the API token (`[acl]`) when one is configured.
//!
//! Writes are every request that is not a `GET`/`HEAD`, plus Consul's
//! legacy `GET` forms that change state (`/v1/agent/check/pass/{id}`,
//! `/v1/agent/service/deregister/{id}`, ...). With a token configured, they
//! need it; reads need it only with `acl.protect_reads`. The orchestrator
//! probes `/health/live` and `/health/ready` are always open.
//!
//! The token is taken from `X-Consul-Token`, `Authorization: Bearer TOKEN`
//! or `?token=` (python-consul's way), as Consul does, and compared in
//! constant time. A refused request gets a 403 JSON error and changes
//! nothing: the handler never runs.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::config::AclConfig;

/// Largest request body, in bytes. A KV value may be 512 KiB
/// ([`shoal_protocol::kv::MAX_VALUE`]); service registrations are a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest request URI (path and query), in bytes. KV keys are at most
/// 512 bytes; Consul's query parameters are short.
pub const MAX_URI: usize = 8 * 1024;
/// How long a client may take to send a request body once its head is in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Paths that are always open, whatever the ACL: liveness and readiness
/// probes, which orchestrators call without credentials.
const OPEN_PATHS: &[&str] = &["/health/live", "/health/ready"];

/// Consul's legacy endpoints that change state on `GET`.
const WRITE_PREFIXES: &[&str] = &[
    "/v1/agent/service/deregister/",
    "/v1/agent/check/deregister/",
    "/v1/agent/check/pass/",
    "/v1/agent/check/warn/",
    "/v1/agent/check/fail/",
];

/// Whether a request changes state.
pub fn is_write(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
        || WRITE_PREFIXES.iter().any(|prefix| path.starts_with(prefix))
}

/// The middleware: limits first (cheap, and they protect the token check),
/// then the token, then the body, read whole within its size and time
/// limits so that handlers never wait on a slow client.
pub async fn guard(State(acl): State<AclConfig>, request: Request, next: Next) -> Response {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the request URI is {uri_len} bytes; at most {MAX_URI} are accepted"),
        )
        .into_response();
    }
    if let Some(length) = content_length(request.headers())
        && length > MAX_BODY as u64
    {
        return too_large(length);
    }
    if let Err(error) = authorize(&acl, &request) {
        return error.into_response();
    }

    let (parts, body) = request.into_parts();
    let bytes =
        match tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) => {
                // `to_bytes` fails on the limit or on a broken connection.
                let over_limit = std::error::Error::source(&error)
                    .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
                return if over_limit {
                    too_large(MAX_BODY as u64 + 1)
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("reading the request body failed: {error}"),
                    )
                    .into_response()
                };
            }
            Err(_) => {
                return ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request body did not arrive within {}s",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                )
                .into_response();
            }
        };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn too_large(length: u64) -> Response {
    let shown = if length > MAX_BODY as u64 {
        format!("more than {MAX_BODY}")
    } else {
        length.to_string()
    };
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is {shown} bytes; at most {MAX_BODY} are accepted (KV values: at most {} bytes)",
            shoal_protocol::kv::MAX_VALUE
        ),
    )
    .into_response()
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Checks the request's token against the ACL. `Err` is the 403 to send.
fn authorize(acl: &AclConfig, request: &Request) -> Result<(), ApiError> {
    let Some(expected) = &acl.token else {
        return Ok(());
    };
    let path = request.uri().path();
    if OPEN_PATHS.contains(&path) {
        return Ok(());
    }
    let write = is_write(request.method(), path);
    if !write && !acl.protect_reads {
        return Ok(());
    }
    let what = if write { "writes" } else { "reads" };
    match presented_token(request) {
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "ACL not found: this agent requires a token for {what}; send it in the X-Consul-Token header, as `Authorization: Bearer TOKEN`, or as ?token="
            ),
        )),
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Permission denied: the token presented for {what} is not this agent's token"),
        )),
    }
}

/// The token a request presents: `X-Consul-Token`, then `Authorization:
/// Bearer`, then `?token=`. Empty values count as absent.
fn presented_token(request: &Request) -> Option<String> {
    let headers = request.headers();
    let from_header = headers
        .get("x-consul-token")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|token| !token.is_empty());
    if let Some(token) = from_header {
        return Some(token.to_string());
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty());
    if let Some(token) = bearer {
        return Some(token.to_string());
    }
    request.uri().query()?;
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(request.uri()).ok()?;
    pairs
        .into_iter()
        .find(|(key, value)| key == "token" && !value.is_empty())
        .map(|(_, value)| value)
}

/// Compares two byte strings in time that depends only on their lengths,
/// never on where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let longest = a.len().max(b.len());
    let mut difference = u8::from(a.len() != b.len());
    for i in 0..longest {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= x ^ y;
    }
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = axum::http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap()
    }

    fn acl(protect_reads: bool) -> AclConfig {
        AclConfig {
            token: Some("s3cret".into()),
            protect_reads,
        }
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn legacy_get_writes_count_as_writes() {
        assert!(is_write(&Method::PUT, "/v1/kv/a"));
        assert!(is_write(&Method::DELETE, "/v1/kv/a"));
        assert!(is_write(&Method::GET, "/v1/agent/check/pass/web"));
        assert!(!is_write(&Method::GET, "/v1/kv/a"));
        assert!(!is_write(&Method::HEAD, "/v1/agent/services"));
    }

    #[test]
    fn the_token_is_read_from_header_bearer_or_query() {
        let acl = acl(false);
        let put = |uri: &str, headers: &[(&str, &str)]| {
            authorize(&acl, &request(Method::PUT, uri, headers)).is_ok()
        };
        assert!(!put("/v1/kv/a", &[]));
        assert!(put("/v1/kv/a", &[("X-Consul-Token", "s3cret")]));
        assert!(put("/v1/kv/a", &[("Authorization", "Bearer s3cret")]));
        assert!(put("/v1/kv/a?token=s3cret", &[]));
        assert!(put("/v1/kv/a?dc=dc1&token=s3cret", &[]));
        assert!(!put("/v1/kv/a?token=wrong", &[]));
        assert!(!put("/v1/kv/a", &[("Authorization", "Basic s3cret")]));
        assert!(!put("/v1/kv/a", &[("X-Consul-Token", "s3cre")]));
    }

    #[test]
    fn reads_are_open_unless_protected_and_probes_always() {
        let open = acl(false);
        let closed = acl(true);
        let get = |acl: &AclConfig, uri: &str| authorize(acl, &request(Method::GET, uri, &[]));
        assert!(get(&open, "/v1/kv/a").is_ok());
        assert!(get(&open, "/v1/agent/check/pass/x").is_err());
        let error = get(&closed, "/v1/kv/a").unwrap_err();
        assert_eq!(error.status, StatusCode::FORBIDDEN);
        assert!(error.message.contains("reads"), "{}", error.message);
        assert!(get(&closed, "/health/live").is_ok());
        assert!(get(&closed, "/health/ready").is_ok());
        assert!(get(&closed, "/health/detailed").is_err());
        assert!(
            authorize(
                &AclConfig::default(),
                &request(Method::PUT, "/v1/kv/a", &[])
            )
            .is_ok()
        );
    }
}
