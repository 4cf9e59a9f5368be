//! `[[templates]]`: files rendered from the catalog and the KV store with
//! Jinja2 templates (the `minijinja` crate), as consul-template does, from
//! the agent itself.
//!
//! - [`functions`]: what a template can call (`service`, `services`,
//!   `nodes`, `key`, `key_or_default`, `tree`, `flag`, `env`) and
//!   [`functions::render`], which records what a render read.
//! - `runner`: one task per template: waits for a change to what its last
//!   render read (the snapshot's `cluster_index` / `kv_index`), lets the
//!   changes settle (`wait.min` / `wait.max`), renders off the async
//!   runtime, writes the file atomically when the output changed, then
//!   runs the command.
//! - `output`: the atomic write and the command.
//!
//! Nothing here touches the core loop: the runners read the published
//! [`Snapshot`] like any other reader. A template that fails (syntax,
//! missing key, function error) keeps the previous file; the error is
//! logged and shown in `/v1/agent/self` (`Stats.templates`) and
//! `/health/detailed` (`templates`). Commands come from the config file
//! only: the API's dry run (`POST /v1/shoal/template/render`) never runs
//! one and never writes a file.

pub mod functions;
mod output;
mod runner;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TemplateConfig;
use crate::metrics::{Counters, Exposition, load};
use crate::runners::Runners;
use crate::snapshot::Snapshot;
pub use functions::{RenderError, RenderOptions, Rendered, render};

/// Dry runs through the API at once; another one that arrives meanwhile is
/// refused (429), so that callers can't pile up renders (each may use up
/// to its fuel in CPU and memory).
pub const API_RENDERS_AT_ONCE: usize = 1;

/// Counters for metrics (relaxed: each is read on its own).
#[derive(Debug, Default)]
pub struct TemplateCounters {
    /// Renders of configured templates, failed ones included.
    pub renders: AtomicU64,
    /// Renders that failed (syntax, missing key, function error, unreadable
    /// source) or whose file could not be written.
    pub errors: AtomicU64,
    /// Destination files written (the output had changed).
    pub writes: AtomicU64,
    /// Commands started.
    pub command_runs: AtomicU64,
    /// Commands that exited non-zero, timed out or could not start.
    pub command_failures: AtomicU64,
    /// Dry runs through the API.
    pub dry_runs: AtomicU64,
    /// Dry runs refused because [`API_RENDERS_AT_ONCE`] were running.
    pub dry_runs_refused: AtomicU64,
}

impl TemplateCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Counters for TemplateCounters {
    fn prefix(&self) -> &'static str {
        "shoal_template_"
    }

    fn visit(&self, out: &mut Exposition) {
        out.counter(
            "shoal_template_renders_total",
            "Renders of configured templates, failed ones included.",
            load(&self.renders),
        );
        out.counter(
            "shoal_template_errors_total",
            "Template renders that failed or whose file could not be written (the old file is kept).",
            load(&self.errors),
        );
        out.counter(
            "shoal_template_writes_total",
            "Template destination files written because the output changed.",
            load(&self.writes),
        );
        out.counter(
            "shoal_template_command_runs_total",
            "Template commands started.",
            load(&self.command_runs),
        );
        out.counter(
            "shoal_template_command_failures_total",
            "Template commands that exited non-zero, timed out or could not start.",
            load(&self.command_failures),
        );
        out.counter(
            "shoal_template_dry_runs_total",
            "Template dry runs through the API.",
            load(&self.dry_runs),
        );
        out.counter(
            "shoal_template_dry_runs_refused_total",
            "Template dry runs refused (429) because another one was running.",
            load(&self.dry_runs_refused),
        );
    }
}

/// How the last command of a template went.
#[derive(Clone, Debug, Serialize)]
pub struct CommandOutcome {
    /// RFC 3339 time it finished.
    pub at: String,
    /// Exit status; `None` when it was killed or did not start.
    pub exit_code: Option<i32>,
    pub ok: bool,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One template's state, as `/v1/agent/self` shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TemplateState {
    pub destination: String,
    /// RFC 3339 time of the last successful render.
    pub last_render: Option<String>,
    /// RFC 3339 time the file was last written.
    pub last_write: Option<String>,
    /// Why the last render failed; cleared by the next good one.
    pub last_error: Option<String>,
    pub last_command: Option<CommandOutcome>,
    /// What the last render read: `cluster`, `kv`.
    pub reads: Vec<&'static str>,
}

/// Counters and per-template state, shared by the runners and the API.
#[derive(Debug)]
pub struct TemplateStats {
    pub counters: TemplateCounters,
    states: Mutex<BTreeMap<String, TemplateState>>,
    /// Bounds concurrent API dry runs.
    pub(crate) api_renders: Semaphore,
}

impl Default for TemplateStats {
    fn default() -> Self {
        Self {
            counters: TemplateCounters::default(),
            states: Mutex::default(),
            api_renders: Semaphore::new(API_RENDERS_AT_ONCE),
        }
    }
}

impl TemplateStats {
    fn update(&self, name: &str, change: impl FnOnce(&mut TemplateState)) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let state = states
            .entry(name.to_string())
            .or_insert_with(|| TemplateState {
                destination: name.to_string(),
                ..TemplateState::default()
            });
        change(state);
    }

    fn remove(&self, name: &str) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.remove(name);
    }

    /// Every configured template's state, by destination.
    pub fn states(&self) -> Vec<TemplateState> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.values().cloned().collect()
    }

    /// `Stats.templates` of `/v1/agent/self`.
    pub fn json(&self) -> Value {
        let mut body = crate::metrics::stats_json(&self.counters);
        body["templates"] = json!(self.states());
        body
    }

    /// `templates` of `/health/detailed`: each template with `ok` or
    /// `error` and the error.
    pub fn health_json(&self) -> Value {
        self.states()
            .into_iter()
            .map(|state| {
                json!({
                    "destination": state.destination,
                    "status": if state.last_error.is_some() { "error" } else { "ok" },
                    "error": state.last_error,
                    "last_render": state.last_render,
                })
            })
            .collect()
    }
}

impl Counters for TemplateStats {
    fn prefix(&self) -> &'static str {
        self.counters.prefix()
    }

    fn visit(&self, out: &mut Exposition) {
        self.counters.visit(out);
    }
}

/// The running templates: reconfigured on reload.
#[derive(Clone)]
pub struct Templates {
    stats: Arc<TemplateStats>,
    runners: Runners<TemplateConfig>,
}

impl Templates {
    /// Starts one runner per template; they stop with `stop`.
    pub fn spawn(
        configs: Vec<TemplateConfig>,
        snapshot_rx: watch::Receiver<Arc<Snapshot>>,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        let stats = Arc::new(TemplateStats::default());
        let (started, removed) = (stats.clone(), stats.clone());
        let runners = Runners::spawn(
            configs,
            tracker,
            stop,
            move |config: &TemplateConfig, token| {
                started.update(&config.name(), |_| {});
                runner::template_loop(config.clone(), snapshot_rx.clone(), started.clone(), token)
            },
            move |config: &TemplateConfig| removed.remove(&config.name()),
        );
        Self { stats, runners }
    }

    /// Applies a reloaded `[[templates]]`: changed and new templates
    /// (re)start and render at once, removed ones stop (their files stay).
    pub fn reconfigure(&self, configs: Vec<TemplateConfig>) {
        self.runners.reconfigure(configs);
    }

    pub fn stats(&self) -> Arc<TemplateStats> {
        self.stats.clone()
    }
}
