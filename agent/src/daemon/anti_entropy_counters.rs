//! Counters of anti-entropy exchanges over TCP, bumped by the transport
//! (off the core loop), and how `/metrics` names them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::metrics::histogram::{BYTES_BUCKETS, EXCHANGE_BUCKETS};
use crate::metrics::{AtomicHistogram, Counters, Exposition, Kind, Value};

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
pub struct AntiEntropyCounters {
    exchanges: [[AtomicU64; 4]; 2],
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    duration: AtomicHistogram,
    /// Bytes each completed exchange moved, both ways.
    exchange_bytes: AtomicHistogram,
}

impl Default for AntiEntropyCounters {
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

impl AntiEntropyCounters {
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

impl Counters for AntiEntropyCounters {
    fn prefix(&self) -> &'static str {
        "shoal_sync_"
    }

    fn visit(&self, out: &mut Exposition) {
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
