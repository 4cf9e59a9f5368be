//! What every request passes before a handler sees it.
//!
//! - [`check_request`], in front of the router (`api::front`): the URI and
//!   body-size limits, and the `Host` header. A browser page can make a loopback name of its own
//!   (DNS rebinding) point at the agent; its requests then carry that
//!   name, so only loopback names and addresses and the configured
//!   `http_addr` are served (a request without `Host`, HTTP/1.0, is a
//!   local tool's).
//! - [`authorize`], on each route: where the request comes from and the
//!   body's type (what a web page of another origin sends is refused,
//!   [`super::browser`]), the API token (`[acl]`), then the body.
//!   What a route needs is declared where the route is ([`Access`], through
//!   [`Routes`]), so the decision follows the route the router matched
//!   (after percent-decoding), never the raw path. Writes — every method
//!   but `GET`, plus Consul's legacy `GET` forms that change state — need
//!   the token when one is configured; so do reading and changing the
//!   gossip keyring, whose keys let their holder join the cluster. Safe by
//!   default: an agent without a token refuses keyring reads and changes
//!   alike unless `acl.allow_unauthenticated_keyring`, so nothing reveals
//!   a key without the operator's opt-in (`render-env`, the other secret,
//!   is refused by its handler on an agent without a token). Other reads
//!   need the token only with `acl.protect_reads`; `/health/live` and
//!   `/health/ready` are always open.
//!
//! The token is taken from `X-Consul-Token`, `Authorization: Bearer TOKEN`
//! or `?token=` (python-consul's way), as Consul does, and compared in
//! constant time. A refused request gets a 403 JSON error and changes
//! nothing: the handler never runs, and its body is never read.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use super::{ApiError, ApiState};
use crate::config::AclConfig;

/// Largest request body, in bytes. A KV value may be 512 KiB
/// ([`shoal_protocol::kv::MAX_VALUE`]); service registrations are a few KiB.
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest request URI (path and query), in bytes. KV keys are at most
/// 512 bytes; Consul's query parameters are short.
pub const MAX_URI: usize = 8 * 1024;
/// How long a client may take to send a request body once its head is in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What a route needs from its caller when a token is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Orchestrator probes: never a token.
    Open,
    /// A read: the token only with `acl.protect_reads`.
    Read,
    /// Changes state: the token.
    Write,
    /// Reads a secret (the agent's environment, through `render-env`):
    /// the token, whatever `protect_reads` says.
    Secret,
    /// Reads (`GET`, `HEAD`) or changes the gossip keyring: the token;
    /// without one configured, refused unless
    /// `acl.allow_unauthenticated_keyring`.
    Keyring,
}

impl Access {
    /// Whether a request needs the token under `acl`.
    pub fn needs_token(self, acl: &AclConfig) -> bool {
        match self {
            Access::Open => false,
            Access::Read => acl.protect_reads,
            Access::Write | Access::Secret | Access::Keyring => true,
        }
    }

    /// What the caller was trying to do, for the 403.
    fn what(self) -> &'static str {
        match self {
            Access::Open | Access::Read => "reads",
            Access::Write => "writes",
            Access::Secret => {
                "reading secrets such as the agent's environment, or following its log"
            }
            Access::Keyring => "the gossip keyring",
        }
    }
}

/// The API's routes, each registered with the access it needs: there is no
/// way to add one without saying whether it reads, writes or is open.
pub struct Routes {
    router: Router<ApiState>,
    acl: Arc<AclConfig>,
    metrics: Arc<super::request_counters::RequestCounters>,
}

impl Routes {
    pub fn new(
        acl: Arc<AclConfig>,
        metrics: Arc<super::request_counters::RequestCounters>,
    ) -> Self {
        Self {
            router: Router::new(),
            acl,
            metrics,
        }
    }

    /// Adds `route` at `path`, behind [`authorize`] for `access`, counted
    /// and timed under its pattern (`request_counters`). The same path may be
    /// added again with other methods and another access.
    pub fn add(mut self, access: Access, path: &str, route: MethodRouter<ApiState>) -> Self {
        let layer = axum::middleware::from_fn_with_state((self.acl.clone(), access), authorize);
        let measured = self.metrics.layer(self.metrics.route(path));
        self.router = self
            .router
            .route(path, route.route_layer(layer).route_layer(measured));
        self
    }

    pub fn open(self, path: &str, route: MethodRouter<ApiState>) -> Self {
        self.add(Access::Open, path, route)
    }

    pub fn read(self, path: &str, route: MethodRouter<ApiState>) -> Self {
        self.add(Access::Read, path, route)
    }

    pub fn write(self, path: &str, route: MethodRouter<ApiState>) -> Self {
        self.add(Access::Write, path, route)
    }

    pub fn secret(self, path: &str, route: MethodRouter<ApiState>) -> Self {
        self.add(Access::Secret, path, route)
    }

    pub fn keyring(self, path: &str, route: MethodRouter<ApiState>) -> Self {
        self.add(Access::Keyring, path, route)
    }

    pub fn into_router(self) -> Router<ApiState> {
        self.router
    }
}

/// What runs in front of the router: limits first (cheap), then the `Host`
/// header. `http_addr` is the address the API is configured on. `Some` is
/// the refusal to send.
pub fn check_request<B>(
    request: &axum::http::Request<B>,
    http_addr: SocketAddr,
) -> Option<Response> {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI {
        return Some(
            ApiError::new(
                StatusCode::URI_TOO_LONG,
                format!("the request URI is {uri_len} bytes; at most {MAX_URI} are accepted"),
            )
            .into_response(),
        );
    }
    if let Some(length) = content_length(request.headers())
        && length > MAX_BODY as u64
    {
        return Some(too_large(length));
    }
    check_host(request, http_addr)
        .err()
        .map(IntoResponse::into_response)
}

/// The middleware on each route: where the request comes from, the body's
/// type, the token its [`Access`] needs, then the body, read whole within
/// its size and time limits so that handlers never wait on a slow client.
pub async fn authorize(
    State((acl, access)): State<(Arc<AclConfig>, Access)>,
    request: Request,
    next: Next,
) -> Response {
    // What a browser sent for another site is refused whatever the token.
    let checked = super::browser::check_origin(access, &request)
        .and_then(|()| super::browser::check_body_type(&request))
        .and_then(|()| check_token(&acl, access, &request));
    if let Err(error) = checked {
        return error.into_response();
    }
    // Most requests (every GET) have no body: nothing to wait for.
    if request.body().is_end_stream() {
        return next.run(request).await;
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

/// Checks the request's token against what its route needs. `Err` is the
/// 403 to send.
pub(crate) fn check_token<B>(
    acl: &AclConfig,
    access: Access,
    request: &axum::http::Request<B>,
) -> Result<(), ApiError> {
    let Some(expected) = &acl.token else {
        if access == Access::Keyring && !acl.allow_unauthenticated_keyring {
            // Reads too: the keys admit their reader to the cluster.
            let (doing, let_do) = if is_read(request.method()) {
                ("reading", "read")
            } else {
                ("changing", "change")
            };
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{doing} the gossip keyring needs the API token, and this agent has none: set acl.token (--acl-token, SHOAL_ACL_TOKEN) and send it, or set [acl] allow_unauthenticated_keyring = true (--acl-allow-unauthenticated-keyring) to let any caller {let_do} the keys"
                ),
            ));
        }
        return Ok(());
    };
    if !access.needs_token(acl) {
        return Ok(());
    }
    let what = access.what();
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

/// Whether `method` only reads (what the keyring's 403 says it refused).
fn is_read(method: &axum::http::Method) -> bool {
    method == axum::http::Method::GET || method == axum::http::Method::HEAD
}

/// Refuses a request whose `Host` (or absolute URI) names anything but
/// this machine's loopback or the configured `http_addr`.
fn check_host<B>(request: &axum::http::Request<B>, http_addr: SocketAddr) -> Result<(), ApiError> {
    let from_uri = request.uri().authority().map(|a| a.as_str());
    let from_header = request
        .headers()
        .get(header::HOST)
        .map(|value| value.to_str().unwrap_or(""));
    for host in from_uri.into_iter().chain(from_header) {
        if !host_allowed(host, http_addr) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Host `{host}` is not this agent: the API answers only to localhost, loopback addresses and its http_addr ({http_addr}), so that a web page cannot reach it through a DNS name of its own"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a `Host` value (`name`, `name:port`, `[v6]`, `[v6]:port`) names
/// this agent: `localhost`, a loopback address, or `http_addr`'s address.
/// When `http_addr` is a wildcard (`0.0.0.0`), any IP address is accepted:
/// the agent then serves every interface, and a DNS rebinding attack always
/// carries a name, never an address.
pub fn host_allowed(host: &str, http_addr: SocketAddr) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, "")) => inside,
            Some((inside, port)) if port.strip_prefix(':').is_some_and(is_port) => inside,
            _ => return false,
        },
        None => match host.split_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let Ok(ip) = name.parse::<IpAddr>() else {
        return false;
    };
    ip.is_loopback() || ip == http_addr.ip() || http_addr.ip().is_unspecified()
}

/// The port of a `Host` header: decimal digits that fit in 16 bits.
fn is_port(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

/// The token a request presents: `X-Consul-Token`, then `Authorization:
/// Bearer`, then `?token=`. Empty values count as absent.
pub(crate) fn presented_token<B>(request: &axum::http::Request<B>) -> Option<String> {
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
    use axum::http::Method;

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
            allow_unauthenticated_keyring: false,
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
    fn the_token_is_read_from_header_bearer_or_query() {
        let acl = acl(false);
        let put = |uri: &str, headers: &[(&str, &str)]| {
            check_token(&acl, Access::Write, &request(Method::PUT, uri, headers)).is_ok()
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
    fn each_access_needs_the_token_it_says() {
        let open = acl(false);
        let closed = acl(true);
        let get = |acl: &AclConfig, access: Access| {
            check_token(acl, access, &request(Method::GET, "/x", &[]))
        };
        assert!(get(&open, Access::Read).is_ok());
        assert!(get(&open, Access::Write).is_err());
        let error = get(&open, Access::Secret).unwrap_err();
        assert_eq!(error.status, StatusCode::FORBIDDEN);
        assert!(error.message.contains("secrets"), "{}", error.message);
        let error = get(&open, Access::Keyring).unwrap_err();
        assert!(error.message.contains("keyring"), "{}", error.message);
        let error = get(&closed, Access::Read).unwrap_err();
        assert!(error.message.contains("reads"), "{}", error.message);
        assert!(get(&closed, Access::Open).is_ok());
        // Without a token configured, everything is open to the guard but
        // the keyring, read or changed, which needs the opt-in (`Secret`'s
        // one route refuses in its handler).
        for access in [Access::Read, Access::Write, Access::Secret] {
            assert!(get(&AclConfig::default(), access).is_ok());
        }
        let opted_in = AclConfig {
            allow_unauthenticated_keyring: true,
            ..AclConfig::default()
        };
        for (method, doing) in [
            (Method::GET, "reading"),
            (Method::HEAD, "reading"),
            (Method::POST, "changing"),
            (Method::PUT, "changing"),
            (Method::DELETE, "changing"),
        ] {
            let keyring = request(method.clone(), "/v1/operator/keyring", &[]);
            let error = check_token(&AclConfig::default(), Access::Keyring, &keyring).unwrap_err();
            assert_eq!(error.status, StatusCode::FORBIDDEN);
            for part in [doing, "acl.token", "allow_unauthenticated_keyring"] {
                assert!(error.message.contains(part), "{method}: {}", error.message);
            }
            assert!(check_token(&opted_in, Access::Keyring, &keyring).is_ok());
            assert!(check_token(&open, Access::Keyring, &keyring).is_err());
        }
    }

    #[test]
    fn only_loopback_and_http_addr_hosts_are_served() {
        let loopback: SocketAddr = "127.0.0.1:8500".parse().unwrap();
        let lan: SocketAddr = "10.0.0.5:8500".parse().unwrap();
        let wildcard: SocketAddr = "0.0.0.0:8500".parse().unwrap();
        for host in [
            "localhost",
            "LocalHost:8500",
            "127.0.0.1",
            "127.0.0.1:8500",
            "127.9.8.7:1",
            "[::1]",
            "[::1]:8500",
        ] {
            assert!(host_allowed(host, loopback), "{host}");
            assert!(host_allowed(host, lan), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:8500",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "localhost:",
            "localhost:99999",
            "localhost:80:80",
            "[::1",
            "[::1]x",
            "::1",
            "10.0.0.5:8500",
        ] {
            assert!(!host_allowed(host, loopback), "{host}");
        }
        assert!(host_allowed("10.0.0.5:8500", lan));
        assert!(!host_allowed("10.0.0.6:8500", lan));
        assert!(host_allowed("10.0.0.6:8500", wildcard));
        assert!(!host_allowed("evil.example", wildcard));

        let check = |uri: &str, host: Option<&str>| {
            let headers: Vec<(&str, &str)> = host.map(|h| ("Host", h)).into_iter().collect();
            check_host(&request(Method::GET, uri, &headers), loopback)
        };
        assert!(check("/v1/kv/a", None).is_ok());
        assert!(check("/v1/kv/a", Some("localhost:8500")).is_ok());
        let error = check("/v1/kv/a", Some("evil.example")).unwrap_err();
        assert_eq!(error.status, StatusCode::FORBIDDEN);
        assert!(error.message.contains("Host"), "{}", error.message);
        assert!(check("http://evil.example/v1/kv/a", Some("localhost")).is_err());
    }
}
