//! Network coordinates: Vivaldi (Dabek et al., 2004) with the extensions
//! and the defaults of Serf's `coordinate` package, which Consul sorts by.
//!
//! Each agent places itself in an 8-dimensional Euclidean space plus a
//! *height* (the time a packet spends on the agent's own access link, which
//! no direction shortens), so that the distance between two coordinates
//! estimates the round trip between the two agents. Every direct probe the
//! agent makes is a sample: the probed member's coordinate and the time its
//! ack took. The sample moves our coordinate along the line between the two,
//! by a step that grows with how wrong the estimate was and with how sure we
//! are compared to the peer (`error`). Three extensions, as Serf:
//!
//! - a **latency filter**: the median of the last 3 samples per peer, so
//!   one late ack (a scheduling hiccup) does not throw the coordinate;
//! - an **adjustment**: the mean error of the last 20 samples, halved,
//!   added to distances, for what the Euclidean model can't fit;
//! - **gravity** towards the origin (`rho` = 150 s), so that a cluster's
//!   coordinates don't drift away together.
//!
//! Nothing here reads a clock or does I/O: the node hands in samples.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Dimensions of the Euclidean part (Serf's `Dimensionality`).
pub const DIMENSIONS: usize = 8;

/// Below this, a distance or a time is zero.
const ZERO: f64 = 1.0e-6;

/// Longest round trip taken as a sample (Serf refuses beyond 10 s too).
pub const MAX_RTT: Duration = Duration::from_secs(10);

/// Peers whose latency filters are kept at most; past it the filters start
/// over (they refill in three probes).
const MAX_FILTERS: usize = 4096;

/// Numbers in a coordinate's wire form: the vector, error, adjustment,
/// height.
pub const WIRE_VALUES: usize = DIMENSIONS + 3;
/// Bytes of the wire form: each number a little-endian `f32`.
pub const WIRE_LEN: usize = WIRE_VALUES * 4;

/// Largest magnitude of a component, the height or the adjustment (in
/// seconds) accepted from a peer: real ones stay within a few round trips
/// of the origin, and anything near `f64::MAX` would overflow a distance.
const MAX_COMPONENT: f64 = 1_000.0;

/// Vivaldi's parameters, Serf's `DefaultConfig`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoordinateConfig {
    /// Largest (and starting) error estimate: `VivaldiErrorMax`, 1.5.
    pub error_max: f64,
    /// How fast the error estimate follows the last sample's: `VivaldiCE`,
    /// 0.25.
    pub ce: f64,
    /// How far one sample moves the coordinate: `VivaldiCC`, 0.25.
    pub cc: f64,
    /// Samples in the adjustment's window: `AdjustmentWindowSize`, 20 (0
    /// turns the adjustment off).
    pub adjustment_window: usize,
    /// Smallest height, in seconds: `HeightMin`, 10 µs.
    pub height_min: f64,
    /// Samples per peer whose median is used: `LatencyFilterSize`, 3.
    pub latency_filter: usize,
    /// Gravity's scale, in seconds: `GravityRho`, 150.
    pub gravity_rho: f64,
}

impl Default for CoordinateConfig {
    fn default() -> Self {
        Self {
            error_max: 1.5,
            ce: 0.25,
            cc: 0.25,
            adjustment_window: 20,
            height_min: 10.0e-6,
            latency_filter: 3,
            gravity_rho: 150.0,
        }
    }
}

/// A network coordinate, in seconds (Consul's `Coord`: `Vec`, `Error`,
/// `Adjustment`, `Height`).
#[derive(Clone, Debug, PartialEq)]
pub struct Coordinate {
    pub vec: [f64; DIMENSIONS],
    /// How unsure the agent is of it (0 to `error_max`).
    pub error: f64,
    pub adjustment: f64,
    pub height: f64,
}

/// Why a coordinate or a sample was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoordinateError {
    #[error("round trip {0:?} is outside 0 to 10 s")]
    Rtt(Duration),
    #[error("coordinate has a component that is not finite or beyond {MAX_COMPONENT} s")]
    OutOfRange,
    #[error("coordinate error {0} is outside 0 to {1}")]
    Error(f64, f64),
}

impl Coordinate {
    /// At the origin, as unsure as can be: where every agent starts.
    pub fn new(config: &CoordinateConfig) -> Self {
        Self {
            vec: [0.0; DIMENSIONS],
            error: config.error_max,
            adjustment: 0.0,
            height: config.height_min,
        }
    }

    /// Whether every number is finite and within a sane range, and the
    /// error within `0..=error_max`: what a peer's coordinate must be to be
    /// used.
    pub fn check(&self, config: &CoordinateConfig) -> Result<(), CoordinateError> {
        let sane = |x: f64| x.is_finite() && x.abs() <= MAX_COMPONENT;
        if !self.vec.iter().copied().all(sane)
            || !sane(self.adjustment)
            || !sane(self.height)
            || self.height < 0.0
        {
            return Err(CoordinateError::OutOfRange);
        }
        if !(0.0..=config.error_max).contains(&self.error) {
            return Err(CoordinateError::Error(self.error, config.error_max));
        }
        Ok(())
    }

    /// The estimated round trip to `other`: the Euclidean distance plus
    /// both heights, plus both adjustments unless that would make it
    /// negative (Serf's `DistanceTo`).
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        let raw = self.raw_distance(other);
        let adjusted = raw + self.adjustment + other.adjustment;
        let seconds = if adjusted > 0.0 { adjusted } else { raw };
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }

    fn raw_distance(&self, other: &Coordinate) -> f64 {
        magnitude(&difference(&self.vec, &other.vec)) + self.height + other.height
    }

    /// Moves by `force` seconds along the line from `other` to us (away
    /// when positive), and the height with it.
    fn apply_force(
        &self,
        config: &CoordinateConfig,
        force: f64,
        other: &Coordinate,
        rng: &mut StdRng,
    ) -> Coordinate {
        let mut moved = self.clone();
        let (unit, distance) = unit_vector(&self.vec, &other.vec, rng);
        for (component, direction) in moved.vec.iter_mut().zip(unit) {
            *component += direction * force;
        }
        if distance > ZERO {
            moved.height = ((moved.height + other.height) * force / distance + moved.height)
                .max(config.height_min);
        }
        moved
    }

    /// The wire form: the 11 numbers as little-endian `f32`s (44 bytes),
    /// which keep about 7 digits: a microsecond in a second.
    pub fn to_wire(&self) -> [u8; WIRE_LEN] {
        let mut bytes = [0u8; WIRE_LEN];
        let numbers = self
            .vec
            .iter()
            .chain([&self.error, &self.adjustment, &self.height]);
        for (chunk, number) in bytes.chunks_exact_mut(4).zip(numbers) {
            chunk.copy_from_slice(&(*number as f32).to_le_bytes());
        }
        bytes
    }

    /// Reads [`Coordinate::to_wire`]'s form back, checked.
    pub fn from_wire(
        bytes: &[u8; WIRE_LEN],
        config: &CoordinateConfig,
    ) -> Result<Self, CoordinateError> {
        let value = |i: usize| {
            let chunk: [u8; 4] = bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes");
            f64::from(f32::from_le_bytes(chunk))
        };
        let coordinate = Coordinate {
            vec: std::array::from_fn(value),
            error: value(DIMENSIONS),
            adjustment: value(DIMENSIONS + 1),
            height: value(DIMENSIONS + 2),
        };
        coordinate.check(config)?;
        Ok(coordinate)
    }
}

fn difference(a: &[f64; DIMENSIONS], b: &[f64; DIMENSIONS]) -> [f64; DIMENSIONS] {
    std::array::from_fn(|i| a[i] - b[i])
}

fn magnitude(v: &[f64; DIMENSIONS]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The unit vector from `b` to `a` and the distance between them; a random
/// direction when they coincide (two agents that both start at the origin
/// must still push each other apart).
fn unit_vector(
    a: &[f64; DIMENSIONS],
    b: &[f64; DIMENSIONS],
    rng: &mut StdRng,
) -> ([f64; DIMENSIONS], f64) {
    let diff = difference(a, b);
    let distance = magnitude(&diff);
    if distance > ZERO {
        return (diff.map(|x| x / distance), distance);
    }
    loop {
        let random: [f64; DIMENSIONS] = std::array::from_fn(|_| rng.random::<f64>() - 0.5);
        let length = magnitude(&random);
        if length > ZERO {
            return (random.map(|x| x / length), 0.0);
        }
    }
}

/// Counters of a [`Vivaldi`] client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VivaldiStats {
    /// Samples taken.
    pub samples: u64,
    /// Samples refused (a round trip out of range, a peer's coordinate
    /// out of range).
    pub refused: u64,
    /// Times the coordinate became invalid and started over at the origin.
    pub resets: u64,
}

/// One agent's own coordinate and what updates it (Serf's `Client`).
/// `P` names a peer for its latency filter.
#[derive(Debug)]
pub struct Vivaldi<P> {
    config: CoordinateConfig,
    coordinate: Coordinate,
    origin: Coordinate,
    adjustment_samples: Vec<f64>,
    adjustment_next: usize,
    filters: HashMap<P, Vec<f64>>,
    rng: StdRng,
    stats: VivaldiStats,
}

impl<P: Hash + Eq + Clone> Vivaldi<P> {
    pub fn new(config: CoordinateConfig, seed: u64) -> Self {
        Self {
            coordinate: Coordinate::new(&config),
            origin: Coordinate::new(&config),
            adjustment_samples: vec![0.0; config.adjustment_window],
            adjustment_next: 0,
            filters: HashMap::new(),
            rng: StdRng::seed_from_u64(seed ^ 0x7669_7661_6c64_6921),
            stats: VivaldiStats::default(),
            config,
        }
    }

    pub fn coordinate(&self) -> &Coordinate {
        &self.coordinate
    }

    pub fn config(&self) -> &CoordinateConfig {
        &self.config
    }

    pub fn stats(&self) -> &VivaldiStats {
        &self.stats
    }

    /// Forgets `peer`'s latency filter (it left or failed).
    pub fn forget(&mut self, peer: &P) {
        self.filters.remove(peer);
    }

    /// One sample: a direct probe of `peer`, whose coordinate is `theirs`,
    /// was answered after `rtt`. Returns our coordinate after it.
    pub fn update(
        &mut self,
        peer: &P,
        theirs: &Coordinate,
        rtt: Duration,
    ) -> Result<&Coordinate, CoordinateError> {
        let refused = |stats: &mut VivaldiStats, error| {
            stats.refused += 1;
            Err(error)
        };
        if rtt > MAX_RTT {
            return refused(&mut self.stats, CoordinateError::Rtt(rtt));
        }
        if let Err(error) = theirs.check(&self.config) {
            return refused(&mut self.stats, error);
        }
        self.stats.samples += 1;
        let rtt = self.filtered(peer, rtt.as_secs_f64());
        self.update_vivaldi(theirs, rtt);
        self.update_adjustment(theirs, rtt);
        self.update_gravity();
        if self.coordinate.check(&self.config).is_err() {
            self.stats.resets += 1;
            self.coordinate = Coordinate::new(&self.config);
        }
        Ok(&self.coordinate)
    }

    /// The median of the peer's last `latency_filter` samples, this one
    /// included.
    fn filtered(&mut self, peer: &P, rtt: f64) -> f64 {
        if !self.filters.contains_key(peer) && self.filters.len() >= MAX_FILTERS {
            self.filters.clear();
        }
        let samples = self.filters.entry(peer.clone()).or_default();
        samples.push(rtt);
        if samples.len() > self.config.latency_filter.max(1) {
            samples.remove(0);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    fn update_vivaldi(&mut self, theirs: &Coordinate, rtt: f64) {
        let rtt = rtt.max(ZERO);
        let estimate = self.coordinate.distance_to(theirs).as_secs_f64();
        let wrongness = (estimate - rtt).abs() / rtt;
        let total_error = (self.coordinate.error + theirs.error).max(ZERO);
        let weight = self.coordinate.error / total_error;
        let config = self.config;
        self.coordinate.error = (config.ce * weight * wrongness
            + self.coordinate.error * (1.0 - config.ce * weight))
            .min(config.error_max);
        let force = config.cc * weight * (rtt - estimate);
        self.coordinate = self
            .coordinate
            .apply_force(&config, force, theirs, &mut self.rng);
    }

    fn update_adjustment(&mut self, theirs: &Coordinate, rtt: f64) {
        let window = self.adjustment_samples.len();
        if window == 0 {
            return;
        }
        self.adjustment_samples[self.adjustment_next] = rtt - self.coordinate.raw_distance(theirs);
        self.adjustment_next = (self.adjustment_next + 1) % window;
        let sum: f64 = self.adjustment_samples.iter().sum();
        self.coordinate.adjustment = sum / (2.0 * window as f64);
    }

    fn update_gravity(&mut self) {
        let distance = self.origin.distance_to(&self.coordinate).as_secs_f64();
        let force = -(distance / self.config.gravity_rho).powi(2);
        let config = self.config;
        self.coordinate = self
            .coordinate
            .apply_force(&config, force, &self.origin, &mut self.rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: f64) -> Duration {
        Duration::from_secs_f64(value / 1000.0)
    }

    /// Nodes on a plane at known positions (in ms), each probing random
    /// others for `rounds` rounds with the true round trip: the median
    /// relative error of every pair's estimate.
    fn converge(positions: &[(f64, f64)], rounds: usize, seed: u64) -> f64 {
        let config = CoordinateConfig::default();
        let mut clients: Vec<Vivaldi<usize>> = (0..positions.len())
            .map(|i| Vivaldi::new(config, seed + i as u64))
            .collect();
        let true_rtt = |a: usize, b: usize| {
            let (dx, dy) = (
                positions[a].0 - positions[b].0,
                positions[a].1 - positions[b].1,
            );
            ms((dx * dx + dy * dy).sqrt() + 0.2)
        };
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..rounds {
            for a in 0..positions.len() {
                let b = rng.random_range(0..positions.len() - 1);
                let b = if b >= a { b + 1 } else { b };
                let theirs = clients[b].coordinate().clone();
                clients[a].update(&b, &theirs, true_rtt(a, b)).unwrap();
            }
        }
        let mut errors = Vec::new();
        for a in 0..positions.len() {
            for b in (a + 1)..positions.len() {
                let estimate = clients[a]
                    .coordinate()
                    .distance_to(clients[b].coordinate())
                    .as_secs_f64();
                let truth = true_rtt(a, b).as_secs_f64();
                errors.push((estimate - truth).abs() / truth);
            }
        }
        errors.sort_by(f64::total_cmp);
        errors[errors.len() / 2]
    }

    #[test]
    fn a_new_coordinate_is_at_the_origin_and_unsure() {
        let config = CoordinateConfig::default();
        let origin = Coordinate::new(&config);
        assert_eq!(origin.error, 1.5);
        assert_eq!(origin.distance_to(&origin), Duration::from_micros(20));
    }

    #[test]
    fn a_grid_of_nodes_converges_to_its_true_round_trips() {
        // 25 nodes on a 5 x 5 grid, 10 ms apart: 10 to 57 ms round trips.
        let grid: Vec<(f64, f64)> = (0..25)
            .map(|i| (f64::from(i % 5) * 10.0, f64::from(i / 5) * 10.0))
            .collect();
        for seed in 1..=3 {
            let error = converge(&grid, 200, seed);
            assert!(error < 0.15, "seed {seed}: median relative error {error}");
        }
    }

    #[test]
    fn three_zones_converge() {
        // Three zones 1, 20 and 80 ms apart (the layout), 5 nodes
        // each, a little spread inside a zone.
        let mut nodes = Vec::new();
        for (x, y) in [(0.0, 0.0), (20.0, 0.0), (0.0, 80.0)] {
            for i in 0..5 {
                nodes.push((x + f64::from(i) * 0.2, y + f64::from(i % 2) * 0.3));
            }
        }
        let error = converge(&nodes, 300, 7);
        assert!(error < 0.15, "median relative error {error}");
    }

    #[test]
    fn the_latency_filter_takes_the_median_of_three() {
        let config = CoordinateConfig::default();
        let mut client: Vivaldi<u8> = Vivaldi::new(config, 1);
        assert_eq!(client.filtered(&1, 0.010), 0.010);
        assert_eq!(
            client.filtered(&1, 0.500),
            0.500,
            "median of two: the larger"
        );
        assert_eq!(client.filtered(&1, 0.011), 0.011, "one late ack is ignored");
        assert_eq!(client.filtered(&1, 0.012), 0.012);
        assert_eq!(client.filtered(&2, 0.100), 0.100, "per peer");
        client.forget(&1);
        assert_eq!(client.filtered(&1, 0.030), 0.030);
    }

    #[test]
    fn bad_samples_and_coordinates_are_refused_and_change_nothing() {
        let config = CoordinateConfig::default();
        let mut client: Vivaldi<u8> = Vivaldi::new(config, 1);
        let before = client.coordinate().clone();
        let good = Coordinate::new(&config);
        assert_eq!(
            client
                .update(&1, &good, Duration::from_secs(11))
                .unwrap_err(),
            CoordinateError::Rtt(Duration::from_secs(11))
        );
        let mut nan = good.clone();
        nan.vec[3] = f64::NAN;
        assert_eq!(
            client.update(&1, &nan, ms(5.0)).unwrap_err(),
            CoordinateError::OutOfRange
        );
        let mut huge = good.clone();
        huge.height = 1.0e300;
        assert!(client.update(&1, &huge, ms(5.0)).is_err());
        let mut sure = good.clone();
        sure.error = -0.5;
        assert!(client.update(&1, &sure, ms(5.0)).is_err());
        assert_eq!(client.coordinate(), &before);
        assert_eq!(client.stats().refused, 4);
        assert_eq!(client.stats().samples, 0);
    }

    #[test]
    fn gravity_pulls_a_far_coordinate_back_towards_the_origin() {
        let config = CoordinateConfig::default();
        let mut client: Vivaldi<u8> = Vivaldi::new(config, 1);
        client.coordinate.vec[0] = 300.0;
        client.update_gravity();
        // (300 / 150)^2 = 4 s towards the origin.
        assert!((client.coordinate.vec[0] - 296.0).abs() < 1.0e-6);
    }

    #[test]
    fn the_wire_form_round_trips_and_is_checked() {
        let config = CoordinateConfig::default();
        let mut coordinate = Coordinate::new(&config);
        coordinate.vec = [0.001, -0.002, 0.0005, 0.0, 0.01, 0.0, -0.0001, 0.0];
        coordinate.error = 0.2;
        coordinate.adjustment = -0.0003;
        coordinate.height = 0.00012;
        let back = Coordinate::from_wire(&coordinate.to_wire(), &config).unwrap();
        let origin = Coordinate::new(&config);
        let before = coordinate.distance_to(&origin);
        let after = back.distance_to(&origin);
        assert!(
            before.abs_diff(after) < Duration::from_nanos(100),
            "{before:?} {after:?}"
        );
        let mut nan = coordinate.to_wire();
        nan[DIMENSIONS * 4..DIMENSIONS * 4 + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(
            Coordinate::from_wire(&nan, &config),
            Err(CoordinateError::Error(..))
        ));
        let mut infinite = coordinate.to_wire();
        infinite[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        assert_eq!(
            Coordinate::from_wire(&infinite, &config),
            Err(CoordinateError::OutOfRange)
        );
    }
}
