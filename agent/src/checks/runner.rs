//! Runs checks: one task per check, probing every interval, each run
//! bounded by the check's timeout, results sent without ever blocking.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::definition::{CheckDefinition, CheckKind};
use super::exec::probe_exec;
use super::http::HttpProbe;
use super::system::SystemProbe;
use super::tcp::probe_tcp;
use super::{CheckResult, DependencyLookup, ProbeResult};

/// Results dropped because the results channel was full.
static DROPPED_RESULTS: AtomicU64 = AtomicU64::new(0);

/// How many check results were dropped so far because their receiver lagged
/// (for metrics: a steady rise means the registry task is too slow).
pub fn dropped_results() -> u64 {
    DROPPED_RESULTS.load(Ordering::Relaxed)
}

/// Spawns [`run_check`] on the current runtime. The task ends when
/// `cancel` fires or `results_tx` closes; at once for TTL checks, which
/// have nothing to run (their owner calls `CheckState::expire_ttl`).
pub fn spawn_check(
    definition: Arc<CheckDefinition>,
    results_tx: Sender<CheckResult>,
    dependency: DependencyLookup,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run_check(definition, results_tx, dependency, cancel))
}

/// Probes `definition` every interval until cancelled; the first run comes
/// after a random delay of up to one interval, so that checks registered
/// together (an agent start) do not all run in the same instant.
///
/// Results go out with `try_send`: when the channel is full the result is
/// dropped and counted ([`dropped_results`]); the next one carries the news.
pub async fn run_check(
    definition: Arc<CheckDefinition>,
    results_tx: Sender<CheckResult>,
    dependency: DependencyLookup,
    cancel: CancellationToken,
) {
    let Some(mut prober) = Prober::new(&definition, dependency) else {
        return;
    };
    let mut next_run = Instant::now() + jitter(definition.interval);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = sleep_until(next_run) => {}
        }
        let started = Instant::now();
        let result = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            result = prober.run_bounded(&definition) => result,
        };
        let report = CheckResult {
            check_id: definition.id.clone(),
            result,
            duration: started.elapsed(),
        };
        match results_tx.try_send(report) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED_RESULTS.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(check = %definition.id, "check result dropped: channel full");
            }
            Err(TrySendError::Closed(_)) => return,
        }
        // Measured from the start of the run: a slow probe does not stretch
        // the period, and a probe that used a whole interval runs again at once.
        next_run = started + definition.interval;
    }
}

/// Runs `definition` once, bounded by its timeout (for a "run now" on
/// registration, and for tests). TTL checks report their current lack of
/// a result as critical.
pub async fn probe(definition: &CheckDefinition, dependency: DependencyLookup) -> ProbeResult {
    match Prober::new(definition, dependency) {
        Some(mut prober) => prober.run_bounded(definition).await,
        None => ProbeResult::critical("TTL checks are not probed: the service reports them"),
    }
}

/// A check's probe with what it keeps between runs.
enum Prober {
    Http(Box<HttpProbe>),
    Tcp(String),
    Exec(Vec<String>),
    System(Box<SystemProbe>),
    Dependency {
        service: String,
        min_passing: usize,
        lookup: DependencyLookup,
    },
}

impl Prober {
    /// `None` for TTL checks.
    fn new(definition: &CheckDefinition, dependency: DependencyLookup) -> Option<Self> {
        Some(match &definition.kind {
            CheckKind::Http {
                url,
                method,
                headers,
                body,
                tls,
            } => Prober::Http(Box::new(HttpProbe::new(
                url,
                method,
                headers,
                body,
                tls,
                definition.timeout,
            ))),
            CheckKind::Tcp { address } => Prober::Tcp(address.clone()),
            CheckKind::Exec { args } => Prober::Exec(args.clone()),
            CheckKind::System(check) => Prober::System(Box::new(SystemProbe::new(check.clone()))),
            CheckKind::Dependency {
                service,
                min_passing,
            } => Prober::Dependency {
                service: service.clone(),
                min_passing: *min_passing,
                lookup: dependency,
            },
            CheckKind::Ttl { .. } => return None,
        })
    }

    /// One run; past the timeout the probe is dropped (an exec probe's
    /// program is killed) and the result is critical.
    async fn run_bounded(&mut self, definition: &CheckDefinition) -> ProbeResult {
        let timeout = definition.timeout;
        match tokio::time::timeout(timeout, self.run()).await {
            Ok(result) => result,
            Err(_) => ProbeResult::critical(format!(
                "{} check timed out after {}",
                definition.kind_name(),
                humantime::format_duration(timeout)
            )),
        }
    }

    async fn run(&mut self) -> ProbeResult {
        match self {
            Prober::Http(probe) => probe.run().await,
            Prober::Tcp(address) => probe_tcp(address).await,
            Prober::Exec(args) => probe_exec(args).await,
            Prober::System(probe) => probe.run().await,
            Prober::Dependency {
                service,
                min_passing,
                lookup,
            } => dependency_result(service, *min_passing, lookup(service)),
        }
    }
}

fn dependency_result(service: &str, min_passing: usize, passing: usize) -> ProbeResult {
    let instances = if passing == 1 {
        "instance"
    } else {
        "instances"
    };
    let output = format!("{passing} passing {instances} of `{service}` (need {min_passing})");
    if passing >= min_passing {
        ProbeResult::passing(output)
    } else {
        ProbeResult::critical(output)
    }
}

/// A random delay in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::random_range(0..nanos))
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
