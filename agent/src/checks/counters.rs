//! Counters of this agent's health check runs (bumped by the core loop as
//! results arrive), and how `/metrics` names them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use shoal_protocol::CheckStatus;

use super::definition::CheckKind;
use crate::metrics::histogram::LATENCY_BUCKETS;
use crate::metrics::{AtomicHistogram, Counters, Exposition, Kind, Value};

const CHECK_KINDS: [&str; 6] = ["http", "tcp", "exec", "ttl", "system", "dependency"];
const CHECK_STATUSES: [&str; 3] = ["passing", "warning", "critical"];

/// Runs of this agent's health checks.
#[derive(Debug)]
pub struct CheckCounters {
    runs: [[AtomicU64; 3]; 6],
    durations: [AtomicHistogram; 6],
}

impl Default for CheckCounters {
    fn default() -> Self {
        Self {
            runs: Default::default(),
            durations: std::array::from_fn(|_| AtomicHistogram::seconds(LATENCY_BUCKETS)),
        }
    }
}

impl CheckCounters {
    /// A check of `kind` ran and saw `status` in `took`.
    pub fn run(&self, kind: &CheckKind, status: CheckStatus, took: Duration) {
        let kind = match kind {
            CheckKind::Http { .. } => 0,
            CheckKind::Tcp { .. } => 1,
            CheckKind::Exec { .. } => 2,
            CheckKind::Ttl { .. } => 3,
            CheckKind::System(_) => 4,
            CheckKind::Dependency { .. } => 5,
        };
        let status = match status {
            CheckStatus::Passing => 0,
            CheckStatus::Warning => 1,
            CheckStatus::Critical => 2,
        };
        self.runs[kind][status].fetch_add(1, Relaxed);
        self.durations[kind].observe_duration(took);
    }
}

impl Counters for CheckCounters {
    fn prefix(&self) -> &'static str {
        "shoal_check_"
    }

    fn visit(&self, out: &mut Exposition) {
        let family = out.family(
            "shoal_check_runs_total",
            "Health check runs on this agent, by kind and the status they saw.",
            Kind::Counter,
        );
        for (kind, statuses) in CHECK_KINDS.iter().zip(&self.runs) {
            for (status, count) in CHECK_STATUSES.iter().zip(statuses) {
                let count = count.load(Relaxed);
                if count > 0 {
                    family.push(&[("kind", kind), ("status", status)], Value::Counter(count));
                }
            }
        }
        let family = out.family(
            "shoal_check_duration_seconds",
            "How long health check runs took, by kind.",
            Kind::Histogram,
        );
        for (kind, histogram) in CHECK_KINDS.iter().zip(&self.durations) {
            let snapshot = histogram.snapshot();
            if snapshot.count > 0 {
                family.push(&[("kind", kind)], Value::Histogram(snapshot));
            }
        }
    }
}
