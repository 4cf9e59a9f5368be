//! Consul's blocking queries and index headers.
//!
//! Every response carries `X-Consul-Index` (the snapshot index: ≥ 1,
//! monotonic, and larger after a restart than any index of the previous
//! run; see `daemon::index`) and `X-Consul-KnownLeader: true`.
//!
//! A request with `?index=N` where N is the current index waits (up to
//! `?wait=`, default 5 min, at most 10 min) until its own result changes,
//! then answers at once. Any other N is answered at once: a smaller one is
//! behind, and a larger one cannot be this agent's (the client got it
//! elsewhere, or the index went back), so waiting for the index to pass it
//! would leave the client with stale data for its whole wait; Consul resets
//! such a request to index 0 and answers too.
//!
//! A waiting query is woken only by a change to what it reads: the
//! cluster (catalog, health) or the KV store (KV, flags). It recomputes its
//! answer then, and returns if the answer differs.
//!
//! Budgets (docs/budgets.md):
//! - a waiting query keeps no answer, only its fingerprint, so 500 waiting
//!   queries cost their connections and little else; at most
//!   `server::MAX_CONNECTIONS` can wait at once;
//! - filtered queries ([`respond_filtered`]) compile and run their filter
//!   on the filter pool: at most [`FILTER_WORKERS`] at once, on threads of
//!   their own at low priority, never on the thread that serves the other
//!   requests (nor, of course, on the core loop's). A waiting one keeps only the filter's
//!   text and compiles it again at each wake;
//! - at most [`MAX_FILTERED_WAITING`] filtered queries wait at once (each
//!   wake recompiles them all); one more is answered 429, naming the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::time::Instant;

use super::cache::Cacheable;
use super::filter::{self, Filter};
use super::front::X_CONSUL_INDEX;
use super::{ApiError, ApiState, Query};
use crate::metrics::{Counters, Exposition, load};
use crate::reads::{Indexes, ReadAt, Reads};
use crate::snapshot::Snapshot;

pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(600);
pub use super::filter::pool::FILTER_WORKERS;
/// Filtered blocking queries waiting at once. Each wake (any change to the
/// cluster) compiles and runs every waiting filter again, on the filter
/// pool: 64 filters at their budget are a few hundred ms of one core.
pub const MAX_FILTERED_WAITING: u64 = 64;
/// `Retry-After` of a filtered blocking query refused, in seconds.
const RETRY_AFTER_SECONDS: u64 = 5;

/// `?index=` and `?wait=` of a request.
pub struct Blocking {
    index: Option<u64>,
    wait: Duration,
}

impl Blocking {
    pub fn from_query(query: &Query) -> Result<Self, ApiError> {
        let index = match query.get("index") {
            None | Some("") => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("index: `{text}` is not a number"),
                )
            })?),
        };
        let wait = match query.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(text) => crate::duration::parse(text).map_err(|error| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("wait: {error}"))
            })?,
        };
        Ok(Self {
            index,
            wait: wait.min(MAX_WAIT),
        })
    }
}

/// Whether an answer that read `reads` at `indexes` may be kept by the
/// lookup cache: not one that read the event list (read rarely, by
/// watches, not on a service's hot path).
fn cache_stamp(reads: Reads, indexes: Indexes) -> Option<ReadAt> {
    (!reads.events).then(|| reads.at(indexes))
}

/// Blocking queries and filter work of this agent: the filter pool, and
/// the counters `/v1/agent/self` and `/metrics` show.
#[derive(Debug, Default)]
pub struct BlockingCounters {
    /// Queries waiting now.
    waiting: AtomicU64,
    /// Times a waiting query was woken to recompute its answer.
    wakeups: AtomicU64,
    /// Filtered queries waiting now (at most [`MAX_FILTERED_WAITING`]).
    filtered_waiting: AtomicU64,
    /// Filtered blocking queries refused: [`MAX_FILTERED_WAITING`] waited.
    refused: AtomicU64,
    /// Where filters run.
    filter_pool: filter::pool::FilterPool,
}

impl Counters for BlockingCounters {
    fn prefix(&self) -> &'static str {
        "shoal_api_blocking_"
    }

    fn visit(&self, out: &mut Exposition) {
        out.gauge(
            "shoal_api_blocking_waiting",
            "Blocking queries (?index=) waiting now.",
            load(&self.waiting) as f64,
        );
        out.counter(
            "shoal_api_blocking_wakeups_total",
            "Times a waiting blocking query was woken to recompute its answer.",
            load(&self.wakeups),
        );
        out.gauge(
            "shoal_api_blocking_filtered_waiting",
            "Blocking queries with ?filter= waiting now (at most 64).",
            load(&self.filtered_waiting) as f64,
        );
        out.counter(
            "shoal_api_blocking_refused_total",
            "Blocking queries with ?filter= refused (429): 64 were waiting.",
            load(&self.refused),
        );
    }
}

impl BlockingCounters {
    /// Runs `work` on the filter pool ([`FILTER_WORKERS`] threads at low
    /// priority).
    async fn on_filter_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        self.filter_pool
            .run(work)
            .await
            .map_err(|error| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string()))
    }

    /// A place among the filtered queries waiting, or the 429 that names
    /// the limit.
    fn filtered_place(&self) -> Result<Waiting<'_>, ApiError> {
        let taken =
            self.filtered_waiting
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |waiting| {
                    (waiting < MAX_FILTERED_WAITING).then_some(waiting + 1)
                });
        if taken.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{MAX_FILTERED_WAITING} blocking queries with a filter are waiting on this agent already (the limit); retry later, or without `filter` or `index`"
                ),
            ));
        }
        Ok(Waiting(&self.filtered_waiting))
    }
}

/// Counts a query as waiting while it lives.
struct Waiting<'a>(&'a AtomicU64);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An answer's JSON: a tree (most reads, and every filtered one: a filter
/// runs on a tree), or bytes serialized straight from the records, for the
/// lookups a service makes on its hot path (`consul_json::ServiceEntry`):
/// building the tree was most of the CPU a cache miss cost.
pub enum Answer {
    Tree(Value),
    Serialized(Bytes),
}

impl From<Value> for Answer {
    fn from(tree: Value) -> Self {
        Answer::Tree(tree)
    }
}

impl Answer {
    /// `body` serialized now.
    pub fn serialize(body: &impl serde::Serialize) -> Result<Self, ApiError> {
        serde_json::to_vec(body)
            .map(|bytes| Answer::Serialized(Bytes::from(bytes)))
            .map_err(cannot_serialize)
    }

    fn into_bytes(self) -> Result<Bytes, ApiError> {
        match self {
            Answer::Serialized(bytes) => Ok(bytes),
            Answer::Tree(tree) => serde_json::to_vec(&tree)
                .map(Bytes::from)
                .map_err(cannot_serialize),
        }
    }
}

fn cannot_serialize(error: serde_json::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot serialize the answer: {error}"),
    )
}

/// Answers with `compute(snapshot)`; when the request carries the current
/// index, first waits until that answer changes or the wait runs out.
/// `reads` says what `compute` reads: other changes don't recompute it,
/// and an answer to a request without `?index=` is marked [`Cacheable`]
/// with it (so `compute` must read nothing else that changes).
pub async fn respond<F, R>(
    state: &ApiState,
    query: &Query,
    reads: Reads,
    compute: F,
) -> Result<Response, ApiError>
where
    F: Fn(&Snapshot) -> Result<R, ApiError>,
    R: Into<Answer>,
{
    let compute =
        |snapshot: Arc<Snapshot>| std::future::ready(Ok(compute(&snapshot).map(Into::into)));
    wait_and_answer(state, query, reads, None, compute).await
}

/// [`respond`] for the endpoints that take `?filter=`: `compute` gets the
/// compiled filter, and with one, runs on the filter pool (see the module
/// doc); without one, where `respond` runs it. A filter that does not
/// compile is answered 400 at once, and a filtered blocking query past
/// [`MAX_FILTERED_WAITING`] 429.
pub async fn respond_filtered<F, R>(
    state: &ApiState,
    query: &Query,
    reads: Reads,
    filter: Option<filter::Source>,
    compute: F,
) -> Result<Response, ApiError>
where
    F: Fn(&Snapshot, Option<&Filter>) -> Result<R, ApiError> + Send + Sync + 'static,
    R: Into<Answer> + Send + 'static,
{
    let Some(source) = filter else {
        return respond(state, query, reads, |snapshot| compute(snapshot, None)).await;
    };
    let compute = Arc::new(compute);
    let source = Arc::new(source);
    let stats = state.blocking.clone();
    let on_pool = |snapshot: Arc<Snapshot>| {
        let (compute, source, stats) = (compute.clone(), source.clone(), stats.clone());
        async move {
            // Compiled for this computation and dropped with it: a waiting
            // query holds the text only.
            let work = move || {
                source
                    .compile()
                    .map(|filter| compute(&snapshot, Some(&filter)).map(Into::into))
            };
            stats.on_filter_pool(work).await?
        }
    };
    wait_and_answer(state, query, reads, Some(&state.blocking), on_pool).await
}

/// The one loop behind [`respond`] and [`respond_filtered`]. `compute`'s
/// outer error refuses the request at once (a filter that does not
/// compile); its inner result is the answer. `filtered`: the query takes a
/// place among the filtered ones while it waits.
async fn wait_and_answer<C, Fut>(
    state: &ApiState,
    query: &Query,
    reads: Reads,
    filtered: Option<&BlockingCounters>,
    compute: C,
) -> Result<Response, ApiError>
where
    C: Fn(Arc<Snapshot>) -> Fut,
    Fut: Future<Output = Result<Result<Answer, ApiError>, ApiError>>,
{
    let blocking = Blocking::from_query(query)?;
    let mut snapshot_rx = state.snapshot_rx.clone();
    let mut snapshot = snapshot_rx.borrow_and_update().clone();
    let mut answer = compute(snapshot.clone()).await?;
    if blocking.index == Some(snapshot.index) {
        let _place = match filtered.map(BlockingCounters::filtered_place).transpose() {
            Ok(place) => place,
            Err(refused) => {
                let mut response = refused.into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
                return Ok(response);
            }
        };
        let _waiting = Waiting::new(&state.blocking.waiting);
        // Only a fingerprint while waiting: 500 waiting queries must not
        // hold 500 copies of a large answer.
        let first = fingerprint(&answer);
        drop(answer);
        let mut seen = snapshot.indexes();
        let deadline = Instant::now() + blocking.wait;
        answer = loop {
            let changed = tokio::time::timeout_at(deadline, snapshot_rx.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                // The answer as of now (what it reads has not changed).
                break compute(snapshot.clone()).await?;
            }
            snapshot = snapshot_rx.borrow_and_update().clone();
            if !reads.changed(&seen, &snapshot.indexes()) {
                continue;
            }
            seen = snapshot.indexes();
            state.blocking.wakeups.fetch_add(1, Ordering::Relaxed);
            let now = compute(snapshot.clone()).await?;
            if fingerprint(&now) != first {
                break now;
            }
        };
    }
    let stamp = blocking
        .index
        .is_none()
        .then(|| cache_stamp(reads, snapshot.indexes()))
        .flatten();
    let mut response = match answer.and_then(Answer::into_bytes) {
        Ok(bytes) => json_bytes(bytes, stamp),
        Err(error) => error.into_response(),
    };
    set_index(&mut response, snapshot.index);
    Ok(response)
}

/// What tells two answers apart: a hash of the JSON (`None` for an error,
/// as all errors counted as the same answer before).
fn fingerprint(answer: &Result<Answer, ApiError>) -> Option<u64> {
    let hash = xxhash_rust::xxh3::xxh3_64;
    match answer.as_ref().ok()? {
        Answer::Serialized(bytes) => Some(hash(bytes)),
        Answer::Tree(tree) => Some(hash(&serde_json::to_vec(tree).unwrap_or_default())),
    }
}

fn set_index(response: &mut Response, index: u64) {
    response
        .headers_mut()
        .insert(X_CONSUL_INDEX, HeaderValue::from(index.max(1)));
}

/// A JSON answer serialized once, marked [`Cacheable`] at `stamp` (the
/// front layer keeps it for the next request with the same URI).
pub fn json_cacheable(body: &impl serde::Serialize, stamp: ReadAt) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_bytes(Bytes::from(bytes), Some(stamp)),
        Err(error) => cannot_serialize(error).into_response(),
    }
}

/// A `200` with serialized JSON, marked [`Cacheable`] when given a stamp.
fn json_bytes(bytes: Bytes, stamp: Option<ReadAt>) -> Response {
    let content_type = HeaderValue::from_static("application/json");
    let mut response = Response::new(Body::from(bytes.clone()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type.clone());
    if let Some(stamp) = stamp {
        response.extensions_mut().insert(Cacheable {
            stamp,
            content_type,
            body: bytes,
            route: None,
        });
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_of(text: &str) -> Result<Duration, String> {
        let query = Query(vec![("wait".into(), text.into())]);
        Blocking::from_query(&query)
            .map(|blocking| blocking.wait)
            .map_err(|error| error.message)
    }

    #[test]
    fn wait_takes_go_durations_up_to_the_maximum() {
        assert_eq!(wait_of("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(wait_of("120000ms"), Ok(Duration::from_secs(120)));
        assert_eq!(wait_of("0"), Ok(Duration::ZERO));
        assert_eq!(wait_of(""), Ok(DEFAULT_WAIT));
        assert_eq!(wait_of("1h"), Ok(MAX_WAIT));
        let error = wait_of("10").unwrap_err();
        assert!(error.starts_with("wait: `10`"), "{error}");
    }
}
