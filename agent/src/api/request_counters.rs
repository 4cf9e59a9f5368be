//! API request counts and latencies, by the route the router matched (its
//! pattern, `/v1/kv/{*key}`, never the raw path: a label per key would
//! grow without bound), the method and the status code.
//!
//! Every route is wrapped in a [`RecordLayer`] when it is declared
//! (`guard::Routes`). Per request it reads the clock twice and does a
//! few relaxed atomic adds: no lock, no allocation (a route's counters are
//! allocated once, on its first request).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{Method, Request, StatusCode};
use axum::response::Response;

use crate::metrics::histogram::LATENCY_BUCKETS;
use crate::metrics::{AtomicHistogram, Counters, Exposition, Kind, Value};

/// Most distinct route patterns measured; more share the last slot.
pub const MAX_ROUTES: usize = 192;
/// The slot of requests no route matched.
pub const UNMATCHED: usize = 0;

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "other"];
/// Status codes counted apart; any other is counted under its class
/// (`2xx`, `4xx`, ...).
const CODES: [u16; 17] = [
    200, 204, 301, 304, 400, 403, 404, 405, 408, 409, 413, 414, 429, 500, 501, 503, 507,
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const CODE_SLOTS: usize = CODES.len() + CLASSES.len();

/// Requests to the HTTP API.
#[derive(Debug)]
pub struct RequestCounters {
    /// Route patterns by slot; written while the router is built, read by
    /// scrapes, never on a request's path.
    names: Mutex<Vec<String>>,
    slots: Box<[OnceLock<Box<RouteCells>>]>,
    in_flight: AtomicU64,
}

#[derive(Debug)]
struct RouteCells {
    counts: [[AtomicU64; CODE_SLOTS]; METHODS.len()],
    duration: AtomicHistogram,
}

impl Default for RequestCounters {
    fn default() -> Self {
        Self {
            names: Mutex::new(vec!["unmatched".to_string()]),
            slots: (0..MAX_ROUTES).map(|_| OnceLock::new()).collect(),
            in_flight: AtomicU64::new(0),
        }
    }
}

impl RequestCounters {
    /// The slot of the route `pattern` (the same slot for the same pattern).
    pub fn route(&self, pattern: &str) -> usize {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = names.iter().position(|name| name == pattern) {
            return slot;
        }
        if names.len() == MAX_ROUTES {
            return MAX_ROUTES - 1;
        }
        names.push(pattern.to_string());
        names.len() - 1
    }

    /// A request to the route in `slot` was answered with `status`.
    pub fn record(&self, slot: usize, method: &Method, status: StatusCode, took: Duration) {
        self.record_in(slot, method_slot(method), status, took);
    }

    fn record_in(&self, slot: usize, method: usize, status: StatusCode, took: Duration) {
        let cells = self.slots[slot.min(MAX_ROUTES - 1)].get_or_init(|| {
            Box::new(RouteCells {
                counts: Default::default(),
                duration: AtomicHistogram::seconds(LATENCY_BUCKETS),
            })
        });
        cells.counts[method][code_slot(status)].fetch_add(1, Relaxed);
        cells.duration.observe_duration(took);
    }

    /// The layer that measures the route in `slot`.
    pub fn layer(self: &Arc<Self>, slot: usize) -> RecordLayer {
        RecordLayer {
            metrics: self.clone(),
            slot,
        }
    }
}

fn method_slot(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::PUT => 1,
        Method::POST => 2,
        Method::DELETE => 3,
        _ => 4,
    }
}

fn code_slot(status: StatusCode) -> usize {
    let code = status.as_u16();
    match CODES.iter().position(|&known| known == code) {
        Some(slot) => slot,
        None => CODES.len() + usize::from((code / 100).clamp(1, 5) - 1),
    }
}

fn code_label(slot: usize) -> String {
    match CODES.get(slot) {
        Some(code) => code.to_string(),
        None => CLASSES[slot - CODES.len()].to_string(),
    }
}

impl Counters for RequestCounters {
    fn prefix(&self) -> &'static str {
        "shoal_api_"
    }

    fn visit(&self, out: &mut Exposition) {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let used: Vec<(&String, &RouteCells)> = names
            .iter()
            .zip(self.slots.iter())
            .filter_map(|(name, cells)| Some((name, &**cells.get()?)))
            .collect();
        let family = out.family(
            "shoal_api_requests_total",
            "HTTP API requests answered, by matched route pattern, method and status code.",
            Kind::Counter,
        );
        for (route, cells) in &used {
            for (method, codes) in METHODS.iter().zip(&cells.counts) {
                for (slot, count) in codes.iter().enumerate() {
                    let count = count.load(Relaxed);
                    if count > 0 {
                        family.push(
                            &[
                                ("route", route),
                                ("method", method),
                                ("code", &code_label(slot)),
                            ],
                            Value::Counter(count),
                        );
                    }
                }
            }
        }
        let family = out.family(
            "shoal_api_request_duration_seconds",
            "How long HTTP API requests took to answer, by matched route pattern (blocking queries include their wait).",
            Kind::Histogram,
        );
        for (route, cells) in &used {
            family.push(
                &[("route", route)],
                Value::Histogram(cells.duration.snapshot()),
            );
        }
        out.gauge(
            "shoal_api_requests_in_flight",
            "HTTP API requests being answered now (blocking queries included).",
            self.in_flight.load(Relaxed) as f64,
        );
    }
}

/// The route a `200` answer to a `GET` came from, left in its extensions
/// so that the lookup cache can count a later hit under the same route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchedRoute(pub usize);

/// Wraps a route's service in [`Record`].
#[derive(Clone, Debug)]
pub struct RecordLayer {
    metrics: Arc<RequestCounters>,
    slot: usize,
}

impl<S> tower_layer::Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            metrics: self.metrics.clone(),
            slot: self.slot,
        }
    }
}

/// A route's service that counts and times what it answers.
#[derive(Clone, Debug)]
pub struct Record<S> {
    inner: S,
    metrics: Arc<RequestCounters>,
    slot: usize,
}

impl<S, B> tower_service::Service<Request<B>> for Record<S>
where
    S: tower_service::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = method_slot(request.method());
        self.metrics.in_flight.fetch_add(1, Relaxed);
        Recorded {
            inner: self.inner.call(request),
            in_flight: InFlight(self.metrics.clone()),
            slot: self.slot,
            method,
            start: Instant::now(),
        }
    }
}

/// Counts a request as in flight until its future is done or dropped.
#[derive(Debug)]
struct InFlight(Arc<RequestCounters>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Record`].
    pub struct Recorded<F> {
        #[pin]
        inner: F,
        in_flight: InFlight,
        slot: usize,
        method: usize,
        start: Instant,
    }
}

impl<F, E> Future for Recorded<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut output = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &mut output {
            if *this.method == 0 && response.status() == StatusCode::OK {
                response.extensions_mut().insert(MatchedRoute(*this.slot));
            }
            this.in_flight.0.record_in(
                *this.slot,
                *this.method,
                response.status(),
                this.start.elapsed(),
            );
        }
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_method_and_code() {
        let metrics = RequestCounters::default();
        let kv = metrics.route("/v1/kv/{*key}");
        assert_eq!(metrics.route("/v1/kv/{*key}"), kv, "one slot per pattern");
        metrics.record(kv, &Method::GET, StatusCode::OK, Duration::from_millis(2));
        metrics.record(kv, &Method::PUT, StatusCode::OK, Duration::from_millis(3));
        metrics.record(kv, &Method::GET, StatusCode::IM_A_TEAPOT, Duration::ZERO);
        metrics.record(
            UNMATCHED,
            &Method::GET,
            StatusCode::NOT_FOUND,
            Duration::ZERO,
        );
        let mut out = Exposition::default();
        metrics.visit(&mut out);
        let text = out.to_prometheus_text();
        for line in [
            r#"shoal_api_requests_total{route="/v1/kv/{*key}",method="GET",code="200"} 1"#,
            r#"shoal_api_requests_total{route="/v1/kv/{*key}",method="PUT",code="200"} 1"#,
            r#"shoal_api_requests_total{route="/v1/kv/{*key}",method="GET",code="4xx"} 1"#,
            r#"shoal_api_requests_total{route="unmatched",method="GET",code="404"} 1"#,
            r#"shoal_api_request_duration_seconds_count{route="/v1/kv/{*key}"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}
