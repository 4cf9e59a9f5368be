//! [`Api`]: the HTTP service, the router behind one front step that every
//! request passes:
//!
//! 1. the URI and body-size limits and the `Host` check ([`guard`]), then
//!    a path with `//`, `.` or `..` redirected to its clean form
//!    ([`super::clean_path`]), as Consul's server does;
//! 2. a repeated read answered from the [`ResponseCache`] (a map hit and a
//!    reference-counted copy of the body) when its entry is current and
//!    the caller may read (no web page of another origin,
//!    [`super::browser`]; the token, with `acl.protect_reads`), without
//!    routing; anything else goes to the router, whose routes check their
//!    own [`Access`]; a method a route does not take gets a JSON 405
//!    naming the ones it does (Consul's legacy `GET` forms of writes
//!    among them);
//! 3. an answer marked [`Cacheable`] kept for the next request;
//! 4. `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact`
//!    on every response, errors and 404s included.
//!
//! One hand-written step rather than `from_fn` middleware layers: each of
//! those costs a boxed future and a cloned service per request, which was
//! most of a lookup's time. Per-request counters and latency (metrics)
//! belong here too: [`Api::call`] sees every request, and the route of a
//! cache hit is its URI's path.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tower_service::Service;

use super::cache::{Cacheable, ResponseCache};
use super::guard::{self, Access};
use super::request_counters::{MatchedRoute, RequestCounters, UNMATCHED};
use crate::config::AclConfig;
use crate::snapshot::Snapshot;

pub const X_CONSUL_INDEX: HeaderName = HeaderName::from_static("x-consul-index");
pub const X_CONSUL_KNOWN_LEADER: HeaderName = HeaderName::from_static("x-consul-knownleader");
pub const X_CONSUL_LAST_CONTACT: HeaderName = HeaderName::from_static("x-consul-lastcontact");

/// What the front step reads; built once with the router.
pub struct Front {
    /// The address the API is configured on (the `Host` check).
    pub http_addr: SocketAddr,
    pub acl: Arc<AclConfig>,
    pub snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    pub cache: Arc<ResponseCache>,
    /// Cache hits are counted under the route that computed the answer.
    pub metrics: Arc<RequestCounters>,
}

/// The API as a hyper service (see the module docs).
#[derive(Clone)]
pub struct Api {
    front: Arc<Front>,
    router: Router,
}

impl Api {
    pub fn new(front: Front, router: Router) -> Self {
        Self {
            front: Arc::new(front),
            router,
        }
    }

    /// Serves one request (also usable without hyper, e.g. in tests).
    pub fn call<B>(&self, request: Request<B>) -> ApiFuture
    where
        B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let front = &self.front;
        let start = Instant::now();
        if let Some(refused) = guard::check_request(&request, front.http_addr) {
            // No route matched yet: counted as unmatched, with its status.
            front.metrics.record(
                UNMATCHED,
                request.method(),
                refused.status(),
                start.elapsed(),
            );
            return ApiFuture::Ready(Some(with_consul_headers(refused, front)));
        }
        // Before the cache and the router: no route, and so no guard, ever
        // sees an unclean path (`clean_path`).
        if let Some(redirect) = super::clean_path::redirect(&request) {
            front.metrics.record(
                UNMATCHED,
                request.method(),
                redirect.status(),
                start.elapsed(),
            );
            return ApiFuture::Ready(Some(with_consul_headers(redirect, front)));
        }
        let key = cache_key(&request);
        if let Some(uri) = &key
            && super::browser::check_origin(Access::Read, &request).is_ok()
            && guard::check_token(&front.acl, Access::Read, &request).is_ok()
        {
            let snapshot = front.snapshot_rx.borrow();
            if let Some(hit) = front.cache.get(uri.as_str(), &snapshot) {
                let index = snapshot.index;
                drop(snapshot);
                if let Some(MatchedRoute(slot)) = hit.route {
                    front
                        .metrics
                        .record(slot, &Method::GET, StatusCode::OK, start.elapsed());
                }
                return ApiFuture::Ready(Some(cached(hit, index)));
            }
        }
        let mut router = self.router.clone();
        // A Router is always ready.
        let _ = Service::<Request<Body>>::poll_ready(
            &mut router,
            &mut Context::from_waker(Waker::noop()),
        );
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let routed = router.call(request.map(Body::new));
        let front = self.front.clone();
        ApiFuture::Routed(Box::pin(async move {
            let mut response = match routed.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if response.status() == StatusCode::METHOD_NOT_ALLOWED
                && !response.headers().contains_key(header::CONTENT_TYPE)
            {
                response = method_not_allowed(&method, &uri, response.headers());
                // The router's 405 passes no route's counters.
                front
                    .metrics
                    .record(UNMATCHED, &method, response.status(), start.elapsed());
            }
            if let Some(mut answer) = response.extensions_mut().remove::<Cacheable>()
                && response.status() == StatusCode::OK
                && let Some(key) = key
            {
                answer.route = response.extensions().get::<MatchedRoute>().copied();
                front.cache.insert(key.as_str(), answer);
            }
            with_consul_headers(response, &front)
        }))
    }
}

impl<B> hyper::service::Service<Request<B>> for Api
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ApiFuture;

    fn call(&self, request: Request<B>) -> ApiFuture {
        Api::call(self, request)
    }
}

/// The answer of [`Api::call`]: at once (refused, or from the cache), or
/// from the router.
pub enum ApiFuture {
    Ready(Option<Response>),
    Routed(Pin<Box<dyn Future<Output = Response> + Send>>),
}

impl Future for ApiFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            ApiFuture::Ready(response) => Poll::Ready(Ok(response
                .take()
                .expect("ApiFuture polled after completion"))),
            ApiFuture::Routed(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}

/// The cache key of a request that may be answered from the cache: the
/// raw path and query of a `GET` without a body (the cached routes read
/// nothing from a body).
fn cache_key<B>(request: &Request<B>) -> Option<PathAndQuery> {
    let headers = request.headers();
    let bodiless = !headers.contains_key(header::TRANSFER_ENCODING)
        && headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|length| length.as_bytes() == b"0");
    if request.method() != Method::GET || !bodiless {
        return None;
    }
    request.uri().path_and_query().cloned()
}

/// The router's bare 405 as a JSON error naming the methods the route
/// takes (its `Allow` header, which is kept).
fn method_not_allowed(method: &Method, uri: &axum::http::Uri, headers: &HeaderMap) -> Response {
    let allow = headers
        .get(header::ALLOW)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    let why = if *method == Method::GET && allow.contains("PUT") {
        " (Consul's legacy GET forms of writes are not served, as in Consul since 1.0: a web page could send them with an <img> tag)"
    } else {
        ""
    };
    let mut response = super::ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {method} is not allowed on {}: use {}{why}",
            uri.path(),
            if allow.is_empty() {
                "another method"
            } else {
                &allow
            }
        ),
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// A response from a cache entry, at the snapshot index `index`.
fn cached(hit: Cacheable, index: u64) -> Response {
    let mut response = Response::new(Body::from(hit.body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, hit.content_type);
    headers.insert(X_CONSUL_INDEX, HeaderValue::from(index.max(1)));
    known_leader(headers);
    response
}

fn with_consul_headers(mut response: Response, front: &Front) -> Response {
    let headers = response.headers_mut();
    if !headers.contains_key(X_CONSUL_INDEX) {
        let index = front.snapshot_rx.borrow().index;
        headers.insert(X_CONSUL_INDEX, HeaderValue::from(index.max(1)));
    }
    known_leader(headers);
    response
}

/// Every answer is the agent's own and current, so the leader is known
/// and was last heard from now; a forwarded answer says otherwise itself.
fn known_leader(headers: &mut HeaderMap) {
    if !headers.contains_key(X_CONSUL_KNOWN_LEADER) {
        headers.insert(X_CONSUL_KNOWN_LEADER, HeaderValue::from_static("true"));
    }
    if !headers.contains_key(X_CONSUL_LAST_CONTACT) {
        headers.insert(X_CONSUL_LAST_CONTACT, HeaderValue::from_static("0"));
    }
}
