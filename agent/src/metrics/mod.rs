//! The agent's metrics: what `/metrics` (Prometheus text format),
//! `/v1/agent/metrics` (Consul's JSON shape), `shoal metrics` and the
//! counters of `/v1/agent/self` (`Stats`) show.
//!
//! Nothing here runs on the core loop or on a request's path beyond a
//! relaxed atomic add. Metrics are *collected at scrape time*: each
//! subsystem keeps its counters (structs of `AtomicU64`s, bumped where
//! things happen) in its own folder, and says once, in its [`Counters`]
//! implementation, how they are named and described. That one description
//! is written into an [`Exposition`], a plain list of metric families, which
//! is encoded as Prometheus text (by the `prometheus-client` crate, see
//! [`encode`]), as Consul's JSON, or as the subsystem's section of
//! `/v1/agent/self` ([`stats_json`]): a counter is named once.
//!
//! This module is a leaf: it knows no subsystem. It holds
//!
//! - [`Counters`], the trait every subsystem's counters implement, and the
//!   [`Registry`] of them the API reads at scrape time;
//! - [`histogram`]: [`AtomicHistogram`], a lock-free histogram with fixed
//!   buckets;
//! - [`encode`]: the output formats.
//!
//! # Adding a source of counters
//!
//! Keep your counters as a struct of `AtomicU64`s (relaxed) in your
//! subsystem's folder, named `*Counters`, and implement [`Counters`] for
//! it. `/v1/agent/self` shows each family under its name without
//! [`Counters::prefix`] and without `_total`:
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
//! use shoal_agent::metrics::{Counters, Exposition, stats_json};
//!
//! #[derive(Default)]
//! pub struct DnsCounters { pub queries: AtomicU64, pub refused: AtomicU64 }
//!
//! impl Counters for DnsCounters {
//!     fn prefix(&self) -> &'static str { "shoal_dns_" }
//!     fn visit(&self, out: &mut Exposition) {
//!         out.counter("shoal_dns_queries_total", "DNS queries answered.", self.queries.load(Relaxed));
//!         out.counter("shoal_dns_refused_total", "DNS queries refused.", self.refused.load(Relaxed));
//!     }
//! }
//!
//! let dns = DnsCounters::default();
//! let mut out = Exposition::default();
//! dns.visit(&mut out);
//! assert!(out.to_prometheus_text().contains("shoal_dns_queries_total 0"));
//! assert_eq!(stats_json(&dns)["refused"], 0);
//! ```
//!
//! then add it to the [`Registry`] where the daemon builds it (and, for a
//! `Stats` section, one line in `api::agent`). Labelled series go through
//! [`Exposition::family`]; histograms through [`AtomicHistogram::snapshot`].
//! Names follow Prometheus's conventions: the `shoal_` prefix, `_total` on
//! counters, base units (`_seconds`, `_bytes`) in the name.

pub mod encode;
pub mod histogram;

pub use histogram::{AtomicHistogram, HistogramSnapshot};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A subsystem's counters: one description drives `/metrics`,
/// `/v1/agent/metrics` and its section of `/v1/agent/self`.
pub trait Counters: Send + Sync {
    /// What every metric name of this source starts with (`shoal_dns_`):
    /// `/v1/agent/self` shows each under its name without it.
    fn prefix(&self) -> &'static str;

    /// Writes the current values into `out`. Called on every scrape, off
    /// the core loop: read atomics and snapshots, never wait.
    fn visit(&self, out: &mut Exposition);
}

/// The counters of one source, as its section of `/v1/agent/self` shows
/// them (see [`Exposition::to_stats_json`]).
pub fn stats_json(counters: &dyn Counters) -> serde_json::Value {
    let mut out = Exposition::default();
    counters.visit(&mut out);
    out.to_stats_json(counters.prefix())
}

/// Reads a counter bumped with relaxed adds (each counter is read on its
/// own; no ordering between them is promised).
pub fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Every source of counters, in the order `/metrics` shows them. Built by
/// the daemon, which knows them all; read by the API at scrape time.
pub struct Registry {
    sources: Vec<Arc<dyn Counters>>,
    /// When the agent started, for rates.
    pub started: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            started: Instant::now(),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefixes: Vec<&str> = self.sources.iter().map(|source| source.prefix()).collect();
        f.debug_struct("Registry")
            .field("sources", &prefixes)
            .finish()
    }
}

impl Registry {
    /// Adds a source, shown after those added before it.
    pub fn add(&mut self, counters: Arc<dyn Counters>) -> &mut Self {
        self.sources.push(counters);
        self
    }

    /// Writes every source into `out`.
    pub fn visit(&self, out: &mut Exposition) {
        for source in &self.sources {
            source.visit(out);
        }
    }
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
