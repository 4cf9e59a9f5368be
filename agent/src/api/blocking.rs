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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::time::Instant;

use super::cache::{Cacheable, Stamp};
use super::front::X_CONSUL_INDEX;
use super::{ApiError, ApiState, Query};
use crate::daemon::snapshot::Snapshot;

pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(600);

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

/// What a blocking query reads, hence which changes can change its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watch {
    /// Membership and node records: catalog and health endpoints.
    Cluster,
    /// The KV store: KV and flag endpoints.
    Kv,
    /// The user events this agent received: `/v1/event/list`.
    Events,
}

impl Watch {
    /// The index at which what it reads last changed.
    fn changed_at(self, snapshot: &Snapshot) -> u64 {
        match self {
            Watch::Cluster => snapshot.cluster_index,
            Watch::Kv => snapshot.kv_index,
            Watch::Events => snapshot.event_index,
        }
    }

    /// What an answer computed from `snapshot` was computed from, for the
    /// lookup cache; `None` for what it does not keep (the event list is
    /// read rarely, by watches, not on a service's hot path).
    fn stamp(self, snapshot: &Snapshot) -> Option<Stamp> {
        match self {
            Watch::Cluster => Some(Stamp::cluster(snapshot)),
            Watch::Kv => Some(Stamp::kv(snapshot)),
            Watch::Events => None,
        }
    }
}

/// Blocking queries of this agent, for `/v1/agent/self`.
#[derive(Debug, Default)]
pub struct BlockingStats {
    /// Queries waiting now.
    waiting: AtomicU64,
    /// Times a waiting query was woken to recompute its answer.
    wakeups: AtomicU64,
}

/// [`BlockingStats`] as read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockingCounts {
    pub waiting: u64,
    pub wakeups: u64,
}

impl BlockingStats {
    pub fn counts(&self) -> BlockingCounts {
        BlockingCounts {
            waiting: self.waiting.load(Ordering::Relaxed),
            wakeups: self.wakeups.load(Ordering::Relaxed),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::json!({
            "waiting": self.waiting.load(Ordering::Relaxed),
            "wakeups": self.wakeups.load(Ordering::Relaxed),
        })
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

/// Answers with `compute(snapshot)`; when the request carries the current
/// index, first waits until that answer changes or the wait runs out.
/// `watch` says what `compute` reads: other changes don't recompute it,
/// and an answer to a request without `?index=` is marked [`Cacheable`]
/// with it (so `compute` must read nothing else that changes).
pub async fn respond<F>(
    state: &ApiState,
    query: &Query,
    watch: Watch,
    compute: F,
) -> Result<Response, ApiError>
where
    F: Fn(&Snapshot) -> Result<Value, ApiError>,
{
    let blocking = Blocking::from_query(query)?;
    let mut snapshot_rx = state.snapshot_rx.clone();
    let mut snapshot = snapshot_rx.borrow_and_update().clone();
    let mut answer = compute(&snapshot);
    if blocking.index == Some(snapshot.index) {
        let _waiting = Waiting::new(&state.blocking.waiting);
        let first = answer.as_ref().ok().cloned();
        let mut seen = watch.changed_at(&snapshot);
        let deadline = Instant::now() + blocking.wait;
        loop {
            let changed = tokio::time::timeout_at(deadline, snapshot_rx.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                break;
            }
            snapshot = snapshot_rx.borrow_and_update().clone();
            if watch.changed_at(&snapshot) == seen {
                continue;
            }
            seen = watch.changed_at(&snapshot);
            state.blocking.wakeups.fetch_add(1, Ordering::Relaxed);
            answer = compute(&snapshot);
            if answer.as_ref().ok() != first.as_ref() {
                break;
            }
        }
    }
    let mut response = match answer {
        Ok(body) if blocking.index.is_none() => match watch.stamp(&snapshot) {
            Some(stamp) => json_cacheable(&body, stamp).into_response(),
            None => Json(body).into_response(),
        },
        Ok(body) => Json(body).into_response(),
        Err(error) => error.into_response(),
    };
    set_index(&mut response, snapshot.index);
    Ok(response)
}

fn set_index(response: &mut Response, index: u64) {
    response
        .headers_mut()
        .insert(X_CONSUL_INDEX, HeaderValue::from(index.max(1)));
}

/// A JSON answer serialized once, marked [`Cacheable`] at `stamp` (the
/// front layer keeps it for the next request with the same URI).
pub fn json_cacheable(body: &impl serde::Serialize, stamp: Stamp) -> Response {
    let bytes = match serde_json::to_vec(body) {
        Ok(bytes) => Bytes::from(bytes),
        Err(error) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot serialize the answer: {error}"),
            )
            .into_response();
        }
    };
    let content_type = HeaderValue::from_static("application/json");
    let mut response = Response::new(Body::from(bytes.clone()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type.clone());
    response.extensions_mut().insert(Cacheable {
        stamp,
        content_type,
        body: bytes,
        route: None,
    });
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
