//! A histogram that records with a handful of relaxed atomic adds: no lock,
//! no allocation. Buckets are fixed at construction (upper bounds in
//! seconds); counts are kept per bucket and made cumulative when read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds for fast local work (API requests, fsyncs, check runs):
/// 100 µs to 10 min, so a blocking query's whole wait still lands in a
/// bucket.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// Upper bounds for exchanges over the network: 1 ms to 5 min.
pub const EXCHANGE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Upper bounds for sizes in bytes: 256 B to 64 MiB, by fours.
pub const BYTES_BUCKETS: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

/// Observations of durations (recorded in nanoseconds, shown in seconds)
/// or of plain amounts such as bytes.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// Upper bounds in the recorded unit (ns for durations), for the
    /// comparisons on the hot path.
    raw_bounds: Box<[u64]>,
    /// One per bound, plus one for +Inf; not cumulative.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    /// Recorded units per shown unit: 1e9 for durations, 1 for amounts.
    scale: f64,
}

/// What a histogram held when read, cumulative as Prometheus shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations in this bucket)`, not cumulative,
    /// without +Inf (which holds `count`).
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

impl AtomicHistogram {
    /// A histogram of durations, with bounds in seconds.
    pub fn seconds(bounds: &'static [f64]) -> Self {
        Self::new(bounds, 1e9)
    }

    /// A histogram of amounts (bytes, counts), with bounds in that unit.
    pub fn amounts(bounds: &'static [f64]) -> Self {
        Self::new(bounds, 1.0)
    }

    fn new(bounds: &'static [f64], scale: f64) -> Self {
        debug_assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]));
        Self {
            bounds,
            raw_bounds: bounds.iter().map(|bound| (bound * scale) as u64).collect(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Records a duration (for a histogram made by [`Self::seconds`]).
    pub fn observe_duration(&self, duration: Duration) {
        self.observe_raw(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records an amount (for a histogram made by [`Self::amounts`]).
    pub fn observe(&self, amount: u64) {
        self.observe_raw(amount);
    }

    fn observe_raw(&self, raw: u64) {
        let bucket = self.raw_bounds.partition_point(|&bound| bound < raw);
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum.fetch_add(raw, Relaxed);
    }

    /// The current counts. Taken bucket by bucket without a lock, so a
    /// concurrent observation may show in `count` and not yet in `sum`;
    /// `count` is the sum of the buckets read, so the exposition is always
    /// consistent.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.bounds.len());
        let mut count = 0;
        for (index, bound) in self.bounds.iter().enumerate() {
            let observed = self.counts[index].load(Relaxed);
            count += observed;
            buckets.push((*bound, observed));
        }
        count += self.counts[self.bounds.len()].load(Relaxed);
        HistogramSnapshot {
            buckets,
            sum: self.sum.load(Relaxed) as f64 / self.scale,
            count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_at_or_above_them() {
        let histogram = AtomicHistogram::seconds(&[0.001, 0.01, 0.1]);
        histogram.observe_duration(Duration::from_micros(500));
        histogram.observe_duration(Duration::from_millis(1)); // on the bound: le
        histogram.observe_duration(Duration::from_millis(50));
        histogram.observe_duration(Duration::from_secs(3));
        let snapshot = histogram.snapshot();
        assert_eq!(
            snapshot.buckets,
            vec![(0.001, 2), (0.01, 0), (0.1, 1)],
            "{snapshot:?}"
        );
        assert_eq!(snapshot.count, 4);
        assert!((snapshot.sum - 3.0515).abs() < 1e-9, "{}", snapshot.sum);
    }

    #[test]
    fn amounts_are_not_scaled() {
        let histogram = AtomicHistogram::amounts(BYTES_BUCKETS);
        histogram.observe(300);
        histogram.observe(u64::MAX / 2);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets[1], (1024.0, 1));
        assert_eq!(snapshot.count, 2);
    }
}
