//! The simulated network: latency per link plus jitter, loss (global and
//! per one-way link), and partitions.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use rand::rngs::StdRng;
use rand::{Rng, RngExt};

use crate::scenario::NetworkSpec;

/// Virtual time in microseconds.
pub type Micros = u64;

/// First address handed out: node `i` listens on `10.0.0.0 + i`, port 7946.
const BASE_IP: u32 = 0x0A00_0000;
const PORT: u16 = 7946;

/// The gossip address of node `index`.
pub fn node_addr(index: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(BASE_IP + index as u32), PORT))
}

/// The node listening on `addr`, if it is one of ours.
pub fn node_index(addr: SocketAddr, nodes: usize) -> Option<usize> {
    match addr {
        SocketAddr::V4(v4) => {
            let index = u32::from(*v4.ip()).checked_sub(BASE_IP)? as usize;
            (index < nodes && v4.port() == PORT).then_some(index)
        }
        SocketAddr::V6(_) => None,
    }
}

/// Link properties and the partition in force.
pub struct Network {
    latency: Micros,
    spread: Micros,
    jitter: Micros,
    loss: f64,
    link_loss: HashMap<(u32, u32), f64>,
    /// Gilbert-Elliott bursty loss: `(enter, leave, loss_in_burst)`, and
    /// the one-way links in a burst now.
    bursty: Option<(f64, f64, f64)>,
    in_burst: HashMap<(u32, u32), bool>,
    /// Side of the partition each node is on (all zero when healed).
    side: Vec<u8>,
    /// One-way latency between zones (see `NetworkSpec::zone_rtt_ms`).
    zone_latency: Vec<Vec<Micros>>,
    pub sent: u64,
    pub lost: u64,
}

impl Network {
    pub fn new(spec: &NetworkSpec, nodes: usize) -> Self {
        let micros = |ms: f64| (ms * 1000.0).round() as Micros;
        Self {
            latency: micros(spec.latency_ms),
            spread: micros(spec.spread_ms),
            jitter: micros(spec.jitter_ms),
            loss: spec.loss,
            link_loss: HashMap::new(),
            bursty: None,
            in_burst: HashMap::new(),
            side: vec![0; nodes],
            zone_latency: spec
                .zone_rtt_ms
                .iter()
                .map(|row| row.iter().map(|&rtt| micros(rtt / 2.0)).collect())
                .collect(),
            sent: 0,
            lost: 0,
        }
    }

    pub fn set_loss(&mut self, loss: f64) {
        self.loss = loss;
    }

    pub fn set_link_loss(&mut self, from: usize, to: usize, loss: f64) {
        self.link_loss.insert((from as u32, to as u32), loss);
    }

    /// Bursty loss on every link (see `Action::BurstyLoss`); `enter = 0`
    /// turns it off.
    pub fn set_bursty_loss(&mut self, enter: f64, leave: f64, loss_in_burst: f64) {
        self.bursty = (enter > 0.0).then_some((enter, leave, loss_in_burst));
        self.in_burst.clear();
    }

    /// Nodes below `split` on one side, the rest on the other.
    pub fn partition(&mut self, split: usize) {
        for (index, side) in self.side.iter_mut().enumerate() {
            *side = u8::from(index >= split);
        }
    }

    pub fn heal(&mut self) {
        self.side.fill(0);
    }

    /// The nodes of `zone` on one side, every other node on the other: a
    /// datacenter cut off from the rest.
    pub fn isolate_zone(&mut self, zone: usize) {
        let zones = self.zone_latency.len().max(1);
        for (index, side) in self.side.iter_mut().enumerate() {
            *side = u8::from(index % zones == zone);
        }
    }

    /// How many zones there are (0 without zones).
    pub fn zones(&self) -> usize {
        self.zone_latency.len()
    }

    /// Whether `from` can reach `to` at all (partitions only; TCP
    /// exchanges use this, they retransmit through loss).
    pub fn connected(&self, from: usize, to: usize) -> bool {
        self.side[from] == self.side[to]
    }

    /// One-way delay of a packet, before jitter. Fixed per link, and the
    /// same both ways, derived from the node numbers so it needs no table.
    fn link_latency(&self, from: usize, to: usize) -> Micros {
        let base = self.base_latency(from, to);
        if self.spread == 0 {
            return base;
        }
        let (low, high) = (from.min(to) as u64, from.max(to) as u64);
        let mut x = low.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ high;
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 29;
        base + x % self.spread
    }

    /// The latency a link has before its spread: its zones' when there are
    /// zones, else the same everywhere.
    fn base_latency(&self, from: usize, to: usize) -> Micros {
        let zones = self.zone_latency.len();
        if zones == 0 {
            return self.latency;
        }
        self.zone_latency[from % zones][to % zones]
    }

    /// The zone of node `index` (0 without zones).
    pub fn zone(&self, index: usize) -> usize {
        index % self.zone_latency.len().max(1)
    }

    /// The mean round trip between two nodes, in seconds: both one-way
    /// latencies plus the mean jitter of each.
    pub fn mean_rtt(&self, a: usize, b: usize) -> f64 {
        let one_way = |from, to| self.link_latency(from, to) as f64 + self.jitter as f64 / 2.0;
        (one_way(a, b) + one_way(b, a)) / 1e6
    }

    /// Decides the fate of one datagram: `Some(delay)` or lost.
    pub fn datagram(&mut self, rng: &mut StdRng, from: usize, to: usize) -> Option<Micros> {
        self.sent += 1;
        let link = (from as u32, to as u32);
        let mut loss = self.link_loss.get(&link).copied().unwrap_or(self.loss);
        if let Some((enter, leave, loss_in_burst)) = self.bursty {
            let bad = self.in_burst.entry(link).or_insert(false);
            let flip = if *bad { leave } else { enter };
            if flip > 0.0 && rng.random_bool(flip.min(1.0)) {
                *bad = !*bad;
            }
            if *bad {
                loss = loss_in_burst;
            }
        }
        if !self.connected(from, to) || (loss > 0.0 && rng.random_bool(loss)) {
            self.lost += 1;
            return None;
        }
        Some(self.delay(rng, from, to))
    }

    /// Delay of one message on a reliable stream (no loss).
    pub fn delay(&self, rng: &mut StdRng, from: usize, to: usize) -> Micros {
        let jitter = if self.jitter > 0 {
            rng.next_u64() % self.jitter
        } else {
            0
        };
        self.link_latency(from, to) + jitter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn addresses_round_trip() {
        for index in [0, 1, 255, 256, 9_999] {
            assert_eq!(node_index(node_addr(index), 10_000), Some(index));
        }
        assert_eq!(node_index(node_addr(10), 10), None);
    }

    #[test]
    fn partitions_and_one_way_loss() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut network = Network::new(&NetworkSpec::default(), 4);
        network.partition(2);
        assert!(network.datagram(&mut rng, 0, 3).is_none());
        assert!(network.datagram(&mut rng, 0, 1).is_some());
        network.heal();
        network.set_link_loss(0, 3, 1.0);
        assert!(network.datagram(&mut rng, 0, 3).is_none());
        assert!(network.datagram(&mut rng, 3, 0).is_some());
    }

    #[test]
    fn bursty_loss_comes_in_runs() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut network = Network::new(&NetworkSpec::default(), 2);
        // Mean burst 5 datagrams, one burst per 100 good ones: about 4.7 %
        // lost, in runs.
        network.set_bursty_loss(0.01, 0.2, 1.0);
        let fates: Vec<bool> = (0..100_000)
            .map(|_| network.datagram(&mut rng, 0, 1).is_none())
            .collect();
        let lost = fates.iter().filter(|&&lost| lost).count() as f64 / fates.len() as f64;
        assert!((0.03..0.07).contains(&lost), "{lost}");
        let runs = fates.windows(2).filter(|pair| !pair[0] && pair[1]).count() as f64;
        let mean_run = fates.iter().filter(|&&lost| lost).count() as f64 / runs;
        assert!((3.5..7.0).contains(&mean_run), "{mean_run}");
        network.set_bursty_loss(0.0, 0.0, 0.0);
        assert!((0..1_000).all(|_| network.datagram(&mut rng, 0, 1).is_some()));
    }
}
