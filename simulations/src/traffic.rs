//! What each agent sends: datagrams (SWIM, UDP in the agent) and
//! anti-entropy messages (TCP in the agent), per agent, so that a hotspot
//! (an agent sending far more than the median one, such as a seed) shows.
//!
//! Bytes are payloads as the agent sends them: sealed datagrams, and
//! anti-entropy frames (length, envelope header, message); no UDP, TCP or IP
//! headers (a TCP exchange also costs about ten packets of headers on the
//! wire; see docs/benchmarks.md for lo-counted figures of real agents).

use crate::sim::Simulation;

/// Per-agent traffic of one run, per second of the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    /// Agents counted: up at the end, never crashed, paused or slowed.
    pub agents: usize,
    pub udp_bytes: Spread,
    pub udp_datagrams: Spread,
    pub tcp_bytes: Spread,
    pub tcp_messages: Spread,
    /// UDP and TCP together.
    pub bytes: Spread,
    /// The agent that sent the most bytes, and whether it is a seed.
    pub busiest: usize,
    pub busiest_is_seed: bool,
}

/// Median and maximum over the agents.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        } else {
            sorted[middle]
        };
        Self {
            median,
            max: sorted[sorted.len() - 1],
        }
    }

    /// The busiest agent against the median one.
    pub fn ratio(&self) -> f64 {
        if self.median > 0.0 {
            self.max / self.median
        } else {
            0.0
        }
    }
}

impl Traffic {
    pub fn of(sim: &Simulation) -> Self {
        let from = sim
            .scenario
            .traffic_from_s
            .clamp(0.0, sim.scenario.duration_s);
        let seconds = (sim.scenario.duration_s - from).max(f64::MIN_POSITIVE);
        let mut rows = Vec::new();
        for (index, slot) in sim.slots.iter().enumerate() {
            if slot.node.is_none() || slot.faulted || slot.left || slot.generation != 1 {
                continue;
            }
            let totals = slot.traffic_totals();
            let rate = |i: usize| totals[i].saturating_sub(slot.traffic_mark[i]) as f64 / seconds;
            rows.push((index, rate(0), rate(1), rate(2), rate(3)));
        }
        let column = |pick: fn(&(usize, f64, f64, f64, f64)) -> f64| -> Vec<f64> {
            rows.iter().map(pick).collect()
        };
        let busiest = rows
            .iter()
            .max_by(|a, b| (a.1 + a.3).total_cmp(&(b.1 + b.3)))
            .map_or(0, |row| row.0);
        Self {
            agents: rows.len(),
            udp_bytes: Spread::of(&column(|r| r.1)),
            udp_datagrams: Spread::of(&column(|r| r.2)),
            tcp_bytes: Spread::of(&column(|r| r.3)),
            tcp_messages: Spread::of(&column(|r| r.4)),
            bytes: Spread::of(&column(|r| r.1 + r.3)),
            busiest,
            busiest_is_seed: busiest < sim.scenario.seeds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_takes_the_middle_and_the_top() {
        let spread = Spread::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!(
            spread,
            Spread {
                median: 2.5,
                max: 4.0
            }
        );
        assert_eq!(Spread::of(&[5.0, 1.0, 2.0]).ratio(), 2.5);
        assert_eq!(Spread::of(&[]).ratio(), 0.0);
    }
}
