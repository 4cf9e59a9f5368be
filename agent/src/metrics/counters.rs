//! Counters bumped where things happen, off the gossip loop or with a
//! relaxed atomic add on it: anti-entropy exchanges (the TCP transport),
//! the KV store's writes and disk (the loop and the disk writer), and
//! check runs (the loop, as results arrive). Each struct reports itself
//! as a [`MetricSource`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use shoal_protocol::CheckStatus;

use super::histogram::{AtomicHistogram, BYTES_BUCKETS, EXCHANGE_BUCKETS, LATENCY_BUCKETS};
use super::{Exposition, Kind, MetricSource, Value};
use crate::checks::definition::CheckKind;

/// Which side started an anti-entropy exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Initiated = 0,
    Served = 1,
}

const ROLES: [&str; 2] = ["initiated", "served"];

/// How an anti-entropy exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every step done.
    Completed = 0,
    /// A frame or the connection failed, or the peer broke the protocol.
    Failed = 1,
    /// A frame or the whole exchange took too long.
    Timeout = 2,
    /// Never started: too many exchanges running, or (served) the peer's
    /// address is over its limits.
    Refused = 3,
}

const OUTCOMES: [&str; 4] = ["completed", "failed", "timeout", "refused"];

/// Anti-entropy exchanges over TCP.
#[derive(Debug)]
pub struct SyncMetrics {
    exchanges: [[AtomicU64; 4]; 2],
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    duration: AtomicHistogram,
    /// Bytes each completed exchange moved, both ways.
    exchange_bytes: AtomicHistogram,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        Self {
            exchanges: Default::default(),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            duration: AtomicHistogram::seconds(EXCHANGE_BUCKETS),
            exchange_bytes: AtomicHistogram::amounts(BYTES_BUCKETS),
        }
    }
}

impl SyncMetrics {
    /// An exchange ended (or was refused).
    pub fn exchange(&self, role: Role, outcome: Outcome, took: Duration, bytes: u64) {
        self.exchanges[role as usize][outcome as usize].fetch_add(1, Relaxed);
        if outcome != Outcome::Refused {
            self.duration.observe_duration(took);
            self.exchange_bytes.observe(bytes);
        }
    }

    pub fn sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }

    pub fn received(&self, bytes: usize) {
        self.bytes_received.fetch_add(bytes as u64, Relaxed);
    }
}

impl MetricSource for SyncMetrics {
    fn collect(&self, out: &mut Exposition) {
        let family = out.family(
            "shoal_sync_exchanges_total",
            "Anti-entropy exchanges, by which side started them and how they ended.",
            Kind::Counter,
        );
        for (role, outcomes) in ROLES.iter().zip(&self.exchanges) {
            for (outcome, count) in OUTCOMES.iter().zip(outcomes) {
                family.push(
                    &[("role", role), ("outcome", outcome)],
                    Value::Counter(count.load(Relaxed)),
                );
            }
        }
        out.counter(
            "shoal_sync_sent_bytes_total",
            "Bytes of anti-entropy frames sent, envelopes included.",
            self.bytes_sent.load(Relaxed),
        );
        out.counter(
            "shoal_sync_received_bytes_total",
            "Bytes of anti-entropy frames received, envelopes included.",
            self.bytes_received.load(Relaxed),
        );
        out.histogram(
            "shoal_sync_exchange_duration_seconds",
            "How long anti-entropy exchanges took, refused ones left out.",
            self.duration.snapshot(),
        );
        out.histogram(
            "shoal_sync_exchange_bytes",
            "Bytes one anti-entropy exchange moved, both ways, refused ones left out.",
            self.exchange_bytes.snapshot(),
        );
    }
}

/// Writes to the KV store made on this agent, and its disk.
#[derive(Debug)]
pub struct KvMetrics {
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

impl Default for KvMetrics {
    fn default() -> Self {
        Self {
            writes: Default::default(),
            commits: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            commit_duration: AtomicHistogram::seconds(LATENCY_BUCKETS),
        }
    }
}

impl KvMetrics {
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

impl MetricSource for KvMetrics {
    fn collect(&self, out: &mut Exposition) {
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

const CHECK_KINDS: [&str; 6] = ["http", "tcp", "exec", "ttl", "system", "dependency"];
const CHECK_STATUSES: [&str; 3] = ["passing", "warning", "critical"];

/// Runs of this agent's health checks.
#[derive(Debug)]
pub struct CheckMetrics {
    runs: [[AtomicU64; 3]; 6],
    durations: [AtomicHistogram; 6],
}

impl Default for CheckMetrics {
    fn default() -> Self {
        Self {
            runs: Default::default(),
            durations: std::array::from_fn(|_| AtomicHistogram::seconds(LATENCY_BUCKETS)),
        }
    }
}

impl CheckMetrics {
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

impl MetricSource for CheckMetrics {
    fn collect(&self, out: &mut Exposition) {
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
