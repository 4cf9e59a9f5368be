//! The agent's metrics: what `/metrics` (Prometheus text format),
//! `/v1/agent/metrics` (Consul's JSON shape) and `shoal metrics` show.
//!
//! Nothing here runs on the gossip loop or on a request's path beyond a
//! relaxed atomic add. Metrics are *collected at scrape time*: every source
//! reads what it already keeps — the [`Status`](crate::snapshot::Status)
//! the loop publishes on a timer, the snapshot, structs of `AtomicU64`s
//! bumped where things happen — and writes it into an [`Exposition`], a
//! plain list of metric families. The exposition is then encoded as
//! Prometheus text (by the `prometheus-client` crate, see [`encode`]) or as
//! Consul's JSON.
//!
//! - [`histogram`]: [`AtomicHistogram`], a lock-free histogram with fixed
//!   buckets.
//! - [`counters`]: the counters of anti-entropy, the KV disk and check runs.
//! - [`http`]: API request counts and latencies by matched route, recorded
//!   by a per-route layer that allocates nothing.
//! - [`process`]: RSS, CPU seconds and open fds from `/proc/self`.
//! - [`encode`]: the two output formats.
//!
//! # Adding a source of counters
//!
//! Keep your counters as a struct of `AtomicU64`s (relaxed), reachable from
//! `ApiState`, and implement [`MetricSource`] for it — one small function:
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
//! use shoal_agent::metrics::{Exposition, MetricSource};
//!
//! #[derive(Default)]
//! pub struct DnsCounters { pub queries: AtomicU64, pub refused: AtomicU64 }
//!
//! impl MetricSource for DnsCounters {
//!     fn collect(&self, out: &mut Exposition) {
//!         out.counter("shoal_dns_queries_total", "DNS queries answered.", self.queries.load(Relaxed));
//!         out.counter("shoal_dns_refused_total", "DNS queries refused.", self.refused.load(Relaxed));
//!     }
//! }
//!
//! let dns = DnsCounters::default();
//! let mut out = Exposition::default();
//! dns.collect(&mut out);
//! assert!(out.to_prometheus_text().contains("shoal_dns_queries_total 0"));
//! ```
//!
//! then add one line to `api::metrics::collect` (`state.dns.collect(&mut out);`).
//! Labelled series go through [`Exposition::family`]; histograms through
//! [`AtomicHistogram::snapshot`]. Names follow Prometheus's conventions:
//! the `shoal_` prefix, `_total` on counters, base units (`_seconds`,
//! `_bytes`) in the name.

pub mod counters;
pub mod encode;
pub mod features;
pub mod histogram;
pub mod http;
pub mod process;

pub use histogram::{AtomicHistogram, HistogramSnapshot};

use std::sync::Arc;
use std::time::Instant;

/// The counters the agent's parts bump, gathered for the API to read at
/// scrape time.
#[derive(Debug)]
pub struct AgentMetrics {
    /// HTTP API requests (bumped by the per-route layer).
    pub api: Arc<http::ApiMetrics>,
    /// Anti-entropy exchanges (bumped by `daemon::sync`).
    pub sync: Arc<counters::SyncMetrics>,
    /// KV writes and disk commits (`kv`, `kv::disk`).
    pub kv: Arc<counters::KvMetrics>,
    /// Check runs (`daemon::registrar`).
    pub checks: Arc<counters::CheckMetrics>,
    /// When the agent started, for rates.
    pub started: Instant,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            api: Default::default(),
            sync: Default::default(),
            kv: Default::default(),
            checks: Default::default(),
            started: Instant::now(),
        }
    }
}

/// Anything that can report metrics at scrape time.
pub trait MetricSource: Send + Sync {
    /// Writes the current values into `out`. Called on every scrape, off
    /// the gossip loop: read atomics and snapshots, never wait.
    fn collect(&self, out: &mut Exposition);
}

/// The type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (resets when the agent restarts). Its name ends
    /// in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into buckets, with their sum and count.
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One value of a series.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Counter(u64),
    /// A counter of a fractional quantity (CPU seconds).
    FloatCounter(f64),
    Gauge(f64),
    Histogram(HistogramSnapshot),
}

/// A series: one set of label values and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<(&'static str, String)>,
    pub value: Value,
}

/// Every series of one metric name.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub series: Vec<Series>,
}

impl Family {
    /// Adds a series with `labels`. The value must match the family's kind.
    pub fn push(&mut self, labels: &[(&'static str, &str)], value: Value) -> &mut Self {
        debug_assert!(matches!(
            (&value, self.kind),
            (Value::Counter(_) | Value::FloatCounter(_), Kind::Counter)
                | (Value::Gauge(_), Kind::Gauge)
                | (Value::Histogram(_), Kind::Histogram)
        ));
        self.series.push(Series {
            labels: labels
                .iter()
                .map(|(name, value)| (*name, (*value).to_string()))
                .collect(),
            value,
        });
        self
    }
}

/// What one scrape saw: metric families in the order they were added.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    pub families: Vec<Family>,
}

impl Exposition {
    /// A family with no series yet, to add labelled series to.
    pub fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) -> &mut Family {
        debug_assert!(
            !self.families.iter().any(|family| family.name == name),
            "metric {name} added twice"
        );
        debug_assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
        self.families.push(Family {
            name,
            help,
            kind,
            series: Vec::new(),
        });
        self.families.last_mut().expect("just pushed")
    }

    /// A counter without labels.
    pub fn counter(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.family(name, help, Kind::Counter)
            .push(&[], Value::Counter(value));
    }

    /// A counter of a fractional quantity, without labels.
    pub fn float_counter(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.family(name, help, Kind::Counter)
            .push(&[], Value::FloatCounter(value));
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.family(name, help, Kind::Gauge)
            .push(&[], Value::Gauge(value));
    }

    /// A histogram without labels.
    pub fn histogram(&mut self, name: &'static str, help: &'static str, value: HistogramSnapshot) {
        self.family(name, help, Kind::Histogram)
            .push(&[], Value::Histogram(value));
    }

    /// The family called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|family| family.name == name)
    }
}
