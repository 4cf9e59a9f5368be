//! What the simulator measures while it runs: when a state change reached
//! each node, who declared whom down and when, how long a healed
//! partition took to converge, and whether the KV store did.

use std::collections::{HashMap, HashSet};

use shoal_protocol::NodeId;
use shoal_protocol::kv::KvStore;

use crate::network::Micros;

/// A record change being followed through the cluster.
#[derive(Debug)]
pub struct ChangeTrack {
    pub origin: usize,
    pub name: String,
    pub version: u64,
    pub at: Micros,
    /// Which nodes have it.
    pub reached: Vec<bool>,
    /// Delays (since `at`) at which other nodes got it, in arrival order.
    pub arrivals: Vec<Micros>,
    /// Nodes other than the origin that were up when the change was made.
    pub audience: usize,
}

impl ChangeTrack {
    /// Delay until `fraction` of the audience had the change, if it got
    /// that far.
    pub fn time_to(&self, fraction: f64) -> Option<Micros> {
        let needed = ((self.audience as f64) * fraction).ceil().max(1.0) as usize;
        self.arrivals.get(needed - 1).copied()
    }

    pub fn complete(&self) -> bool {
        self.arrivals.len() >= self.audience
    }
}

/// A crashed node and who noticed.
#[derive(Debug)]
pub struct CrashTrack {
    pub node: usize,
    pub id: NodeId,
    pub at: Micros,
    /// Live nodes that had it as an active member when it crashed.
    pub expected: usize,
    pub observers: usize,
    pub first: Option<Micros>,
    pub all: Option<Micros>,
    /// Each observer's delay, in the order they declared it down.
    pub delays: Vec<Micros>,
}

/// A healthy identity that somebody declared down.
#[derive(Debug, Default)]
pub struct FalseDown {
    pub observers: usize,
    /// The target was paused or slowed at some point (its own fault).
    pub faulted: bool,
    pub first: Micros,
}

/// Everything measured during one run.
#[derive(Debug, Default)]
pub struct Metrics {
    pub changes: Vec<ChangeTrack>,
    pub crashes: Vec<CrashTrack>,
    /// Identities each observer has seen go down.
    pub down_seen: Vec<HashSet<NodeId>>,
    pub false_downs: HashMap<NodeId, FalseDown>,
    /// Downs of healthy nodes across a partition: expected, not counted as
    /// false positives.
    pub partition_downs: u64,
    /// Of those, declared by a node on the smaller side: the verdicts of
    /// a minority about the rest (Lifeguard's dynamic suspicion makes a
    /// short cut end before them).
    pub partition_downs_by_minority: u64,
    /// Healthy nodes that learned they had been declared down and renewed
    /// their identity.
    pub renewals: u64,
    pub heal_at: Option<Micros>,
    pub converged_after_heal: Option<Micros>,
    pub samples: Vec<Sample>,
    pub kv: KvTrack,
    /// Anti-entropy exchanges opened (digests sent).
    pub sync_exchanges: u64,
    /// Exchanges nodes asked for with addresses outside the cluster.
    pub syncs_outside: u64,
    /// Bytes of anti-entropy messages as the agent frames them (length,
    /// envelope header, message; unsealed).
    pub sync_bytes: u64,
    /// Exchanges refused by a responder serving `max_exchanges` already.
    pub syncs_refused: u64,
    /// Every node started at once (a join at t = 0, a mass restart): when,
    /// and how long until every healthy node held every healthy node's
    /// current record.
    pub cold_starts: Vec<ColdStart>,
}

/// One start of every node at once (see `Metrics::cold_starts`).
#[derive(Clone, Copy, Debug)]
pub struct ColdStart {
    pub at: Micros,
    pub complete_after: Option<Micros>,
}

/// The KV writes of the run and whether every node holds their outcome.
#[derive(Debug, Default)]
pub struct KvTrack {
    /// The last-writer-wins merge of every write a node accepted: the map
    /// every healthy node must end up with.
    pub expected: KvStore,
    /// Writes accepted by `Node::write_kv`.
    pub writes: u64,
    /// Writes not made: their node was crashed, paused or gone.
    pub refused: u64,
    /// The last write, heal or restart: what convergence is timed from.
    pub disturbed_at: Micros,
    /// When every healthy node last came to hold `expected`, if it has
    /// since the last disturbance.
    pub converged_at: Option<Micros>,
    /// A convergence check is scheduled.
    pub check_pending: bool,
    /// Tombstones collected, over all nodes.
    pub collected: u64,
}

/// One row of the time series.
#[derive(Clone, Debug)]
pub struct Sample {
    pub time: Micros,
    pub live: usize,
    pub min_view: usize,
    pub max_view: usize,
    pub datagrams: u64,
    pub bytes: u64,
    pub false_downs: usize,
    /// Fraction of the audience that has the latest change.
    pub change_coverage: f64,
    pub max_health_score: u32,
    /// Of the ordered pairs of zones, the share with a route for a read
    /// (see `Simulation::zone_routes`, from `routes_between_zones`); 1 without zones.
    pub zone_routes: f64,
}

impl Metrics {
    pub fn new(nodes: usize) -> Self {
        Self {
            down_seen: vec![HashSet::new(); nodes],
            ..Self::default()
        }
    }

    /// Whether some change still has nodes to reach.
    pub fn changes_pending(&self) -> bool {
        self.changes.iter().any(|change| !change.complete())
    }

    /// Records that `node` now holds `(name, version)` or newer.
    pub fn saw_version(&mut self, node: usize, name: &str, version: u64, now: Micros) {
        for change in &mut self.changes {
            if change.name == name && version >= change.version && !change.reached[node] {
                change.reached[node] = true;
                if node != change.origin {
                    change.arrivals.push(now - change.at);
                }
            }
        }
    }

    /// Records that `observer` saw `target` (a crashed node) go down.
    /// Returns false when no crash matches the identity.
    pub fn saw_crash_detected(&mut self, target: NodeId, now: Micros) -> bool {
        let Some(crash) = self.crashes.iter_mut().find(|crash| crash.id == target) else {
            return false;
        };
        crash.observers += 1;
        let delay = now - crash.at;
        crash.delays.push(delay);
        crash.first.get_or_insert(delay);
        if crash.observers >= crash.expected && crash.all.is_none() {
            crash.all = Some(delay);
        }
        true
    }

    /// Records a healthy node declared down by one more observer.
    pub fn saw_false_down(&mut self, target: NodeId, faulted: bool, now: Micros) {
        let entry = self.false_downs.entry(target).or_insert_with(|| FalseDown {
            first: now,
            ..FalseDown::default()
        });
        entry.observers += 1;
        entry.faulted |= faulted;
    }

    /// False positives about nodes that were never faulted: identities
    /// declared down by anyone, and by more than half of `live` nodes.
    pub fn false_positive_counts(&self, live: usize, faulted: bool) -> (usize, usize) {
        let matching = self
            .false_downs
            .values()
            .filter(|down| down.faulted == faulted);
        let (mut anyone, mut majority) = (0, 0);
        for down in matching {
            anyone += 1;
            if down.observers * 2 > live {
                majority += 1;
            }
        }
        (anyone, majority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_count_the_audience() {
        let mut change = ChangeTrack {
            origin: 0,
            name: "a".into(),
            version: 2,
            at: 0,
            reached: vec![false; 5],
            arrivals: vec![10, 20, 30, 40],
            audience: 4,
        };
        assert_eq!(change.time_to(0.5), Some(20));
        assert_eq!(change.time_to(1.0), Some(40));
        change.arrivals.pop();
        assert_eq!(change.time_to(1.0), None);
        assert!(!change.complete());
    }
}
