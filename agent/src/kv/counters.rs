//! Counters of the KV store's local writes (bumped by the core loop) and
//! of its disk (the disk writer), and how `/metrics` names them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::metrics::histogram::LATENCY_BUCKETS;
use crate::metrics::{AtomicHistogram, Counters, Exposition, Kind, Value};

/// Writes to the KV store made on this agent, and its disk.
#[derive(Debug)]
pub struct KvCounters {
    /// Local writes accepted (written ahead to disk), refused (bad input,
    /// quota, clock) and not applied because `?cas=` did not match.
    writes: [AtomicU64; 3],
    commits: AtomicU64,
    commit_failures: AtomicU64,
    commit_duration: AtomicHistogram,
}

/// What became of a local KV write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteResult {
    Accepted = 0,
    Refused = 1,
    CasMismatch = 2,
}

const WRITE_RESULTS: [&str; 3] = ["accepted", "refused", "cas_mismatch"];

impl Default for KvCounters {
    fn default() -> Self {
        Self {
            writes: Default::default(),
            commits: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            commit_duration: AtomicHistogram::seconds(LATENCY_BUCKETS),
        }
    }
}

impl KvCounters {
    pub fn write(&self, result: WriteResult) {
        self.writes[result as usize].fetch_add(1, Relaxed);
    }

    /// A durable commit (write and fsync) ended.
    pub fn commit(&self, ok: bool, took: Duration) {
        if ok {
            self.commits.fetch_add(1, Relaxed);
        } else {
            self.commit_failures.fetch_add(1, Relaxed);
        }
        self.commit_duration.observe_duration(took);
    }
}

impl Counters for KvCounters {
    fn prefix(&self) -> &'static str {
        "shoal_kv_"
    }

    fn visit(&self, out: &mut Exposition) {
        let family = out.family(
            "shoal_kv_writes_total",
            "KV writes and deletes made on this agent (API, flags, keyring), by result.",
            Kind::Counter,
        );
        for (result, count) in WRITE_RESULTS.iter().zip(&self.writes) {
            family.push(&[("result", result)], Value::Counter(count.load(Relaxed)));
        }
        out.counter(
            "shoal_kv_disk_commits_total",
            "Durable KV database commits (local writes and peers' entries).",
            self.commits.load(Relaxed),
        );
        out.counter(
            "shoal_kv_disk_failures_total",
            "KV database commits that failed (full or failing disk).",
            self.commit_failures.load(Relaxed),
        );
        out.histogram(
            "shoal_kv_fsync_duration_seconds",
            "How long a durable KV commit took, its fsync included.",
            self.commit_duration.snapshot(),
        );
    }
}
