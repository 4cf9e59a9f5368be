//! `[[watches]]`: run a handler with Consul's JSON whenever part of the
//! cluster's state changes, as `consul watch` does (and `shoal watch`, the
//! command-line form in `cli::watch`).
//!
//! - this file: [`Watches`] (one task per watch, kept in step with the
//!   config by [`crate::runners`]) and each watch's loop.
//! - [`render`]: the JSON each type hands its handler, built from a
//!   snapshot with the HTTP API's own builders.
//! - [`handler`]: running a program (JSON on stdin) or an HTTP request.
//!
//! Watches run in tasks of their own and only read published snapshots:
//! they never hold up the core loop. A watch renders again only when the
//! index of what it reads moved (`cluster_index`, `kv_index` or
//! `event_index`), and runs its handler only when the JSON differs from
//! what the handler last got: a KV write doesn't fire a `service` watch,
//! and a node's check output doesn't fire anything. Each watch waits for
//! its handler before it looks again, so a handler never runs twice at
//! once; changes meanwhile are folded into the next run. Failures (exit
//! status, timeout, HTTP error) are logged and counted
//! ([`WatchCounters`]).

pub mod handler;
pub mod render;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{WatchDefinition, WatchKind};
use crate::metrics::{Counters, Exposition, load};
use crate::reads::Indexes;
use crate::runners::Runners;
use crate::snapshot::Snapshot;

/// Watch counters (relaxed, monotonic but `running`), for metrics.
#[derive(Debug, Default)]
pub struct WatchCounters {
    /// Handler runs started.
    pub runs: AtomicU64,
    /// Handler runs that failed (non-zero exit, timeout, HTTP error).
    pub failures: AtomicU64,
    /// Watches running now.
    pub running: AtomicU64,
}

impl Counters for WatchCounters {
    fn prefix(&self) -> &'static str {
        "shoal_watch_"
    }

    fn visit(&self, out: &mut Exposition) {
        out.counter(
            "shoal_watch_runs_total",
            "Watch handler runs started.",
            load(&self.runs),
        );
        out.counter(
            "shoal_watch_failures_total",
            "Watch handler runs that failed (non-zero exit, timeout, HTTP error).",
            load(&self.failures),
        );
        out.gauge(
            "shoal_watch_running",
            "Watch handlers running now.",
            load(&self.running) as f64,
        );
    }
}

/// The running watches: reconfigured on reload.
#[derive(Clone)]
pub struct Watches {
    runners: Runners<WatchDefinition>,
}

impl Watches {
    /// Starts one task per watch; they stop with `stop`.
    pub fn spawn(
        definitions: Vec<WatchDefinition>,
        snapshot_rx: watch::Receiver<Arc<Snapshot>>,
        counters: Arc<WatchCounters>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let runners = Runners::spawn(
            definitions,
            tracker,
            stop,
            move |definition: &WatchDefinition, token| {
                watch_loop(
                    definition.clone(),
                    snapshot_rx.clone(),
                    counters.clone(),
                    token,
                )
            },
            |definition: &WatchDefinition| {
                tracing::info!(kind = definition.kind.type_name(), "watch removed");
            },
        );
        Self { runners }
    }

    /// Applies a reloaded `[[watches]]`: the watches that stayed keep
    /// running (and what their handler last got).
    pub fn reconfigure(&self, definitions: Vec<WatchDefinition>) {
        self.runners.reconfigure(definitions);
    }
}

/// What the handler got last, to tell a change from a repeat.
#[derive(Default)]
struct Seen {
    /// The JSON (every kind but `event`).
    body: Option<Value>,
    /// The ID of the newest event handled (`event`).
    last_event: Option<String>,
}

/// The JSON to hand the handler now, if it should run: always the first
/// time, then when the JSON differs (for `event`: when there are new
/// events, and only those).
fn next_body(kind: &WatchKind, snapshot: &Snapshot, seen: &mut Seen, first: bool) -> Option<Value> {
    if let WatchKind::Event { .. } = kind {
        let Value::Array(events) = render::render(kind, snapshot) else {
            return None;
        };
        let start = seen
            .last_event
            .as_ref()
            .and_then(|last| events.iter().position(|event| event["ID"] == **last))
            .map_or(0, |at| at + 1);
        let new: Vec<Value> = events[start..].to_vec();
        if !first && new.is_empty() {
            return None;
        }
        if let Some(last) = new.last() {
            seen.last_event = last["ID"].as_str().map(str::to_string);
        }
        return Some(Value::Array(if first { events } else { new }));
    }
    let body = render::render(kind, snapshot);
    if !first && seen.body.as_ref() == Some(&body) {
        return None;
    }
    seen.body = Some(body.clone());
    Some(body)
}

async fn watch_loop(
    definition: WatchDefinition,
    mut snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    counters: Arc<WatchCounters>,
    stop: CancellationToken,
) {
    counters.running.fetch_add(1, Ordering::Relaxed);
    let kind = definition.kind.type_name();
    tracing::info!(kind, "watch started");
    let mut seen = Seen::default();
    let reads = render::reads(&definition.kind);
    let mut rendered_at: Option<Indexes> = None;
    loop {
        let snapshot = snapshot_rx.borrow_and_update().clone();
        let at = snapshot.indexes();
        // Wait for the configured services before the first run.
        if snapshot.checks_loaded && rendered_at.is_none_or(|then| reads.changed(&then, &at)) {
            let first = rendered_at.is_none();
            rendered_at = Some(at);
            if let Some(body) = next_body(&definition.kind, &snapshot, &mut seen, first) {
                let bytes = serde_json::to_vec(&body).unwrap_or_default();
                counters.runs.fetch_add(1, Ordering::Relaxed);
                let run = handler::run_handler(
                    &definition.handler,
                    &bytes,
                    snapshot.index,
                    definition.timeout,
                );
                let outcome = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    outcome = run => outcome,
                };
                match outcome {
                    Ok(()) => tracing::debug!(kind, index = snapshot.index, "watch handler ran"),
                    Err(error) => {
                        counters.failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(kind, %error, "watch handler failed");
                    }
                }
            }
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            changed = snapshot_rx.changed() => if changed.is_err() { break },
        }
    }
    counters.running.fetch_sub(1, Ordering::Relaxed);
}
