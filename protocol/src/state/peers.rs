//! What peers make the cluster state hold, bounded: the digests being
//! pulled (see [`crate::pull`]) and the records of members that are gone
//! (dropped when foca forgets the member, or when no member backs them at
//! two sweeps in a row, and not taken back from peers afterwards).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;

use super::ClusterState;
use crate::identity::NodeId;
use crate::pull::PendingPulls;
use crate::record::NodeRecord;
use crate::rumor::RumorKey;

/// Identities of forgotten members remembered at most.
const MAX_REAPED: usize = 4096;

/// The last [`MAX_REAPED`] items seen, oldest first out.
#[derive(Debug)]
pub(super) struct Seen<T> {
    order: VecDeque<T>,
    set: HashSet<T>,
}

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Self {
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }
}

/// The identities of the last [`MAX_REAPED`] members foca forgot.
pub(super) type Reaped = Seen<NodeId>;

impl<T: Copy + Eq + std::hash::Hash> Seen<T> {
    /// Whether `item` is new.
    pub(super) fn insert(&mut self, item: T) -> bool {
        if !self.set.insert(item) {
            return false;
        }
        self.order.push_back(item);
        if self.order.len() > MAX_REAPED
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        true
    }

    pub(super) fn remove(&mut self, item: &T) {
        if self.set.remove(item) {
            self.order.retain(|other| other != item);
        }
    }

    pub(super) fn contains(&self, item: &T) -> bool {
        !self.set.is_empty() && self.set.contains(item)
    }
}

/// One member's word that its probe of another failed (see
/// [`crate::suspicion`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Accusation {
    pub target: NodeId,
    pub incarnation: u16,
    pub accuser: NodeId,
}

impl ClusterState {
    /// The digests being pulled (see [`crate::pull`]).
    pub fn pulls_mut(&mut self) -> &mut PendingPulls {
        &mut self.pulls
    }

    /// A tick of the pulls: the retries that are due (see
    /// [`PendingPulls::tick`]).
    pub fn tick_pulls(&mut self) -> Vec<crate::pull::PullSource> {
        let mut pulls = std::mem::take(&mut self.pulls);
        let due = pulls.tick(|key| self.wants(key));
        self.pulls = pulls;
        due
    }

    /// Whether what `key` names is still news to us (a pull is still
    /// wanted).
    pub fn wants(&self, key: &RumorKey) -> bool {
        match key {
            RumorKey::Node {
                name,
                order: (generation, version),
            } => match self.records.get(name) {
                Some(current) => (*generation, *version) > (current.id.generation, current.version),
                None => true,
            },
            // Only whether ours is older: the time checks ran when the
            // digest came (`kv_is_news`) and run again on what arrives.
            RumorKey::Kv {
                key,
                order: (time, writer),
            } => match self.kv.get(key) {
                Some(stored) => (*time, writer) > (stored.entry.time, &stored.entry.writer),
                None => true,
            },
            // Events are never announced by digest, so never pulled.
            RumorKey::Event { .. } | RumorKey::Prune { .. } | RumorKey::Accuse { .. } => false,
        }
    }

    /// foca forgot the member `id` (down longer than `remove_down_after`):
    /// drops its record, and any older one at its address, unless it is
    /// ours. Returns the names dropped.
    pub fn forget_member(&mut self, id: NodeId) -> Vec<String> {
        if id == self.local().id {
            return Vec::new();
        }
        self.reaped.insert(id);
        let doomed: Vec<String> = self
            .records
            .values()
            .filter(|record| {
                record.name != self.local_name
                    && record.id.addr == id.addr
                    && record.id.generation <= id.generation
            })
            .map(|record| record.name.clone())
            .collect();
        self.remove_records(&doomed);
        doomed
    }

    /// A member came up: its record is welcome again (a member foca forgot
    /// can come back with the same identity after a long partition).
    pub fn member_up(&mut self, id: NodeId) {
        self.reaped.remove(&id);
    }

    /// Drops the records that no member backs any more: records whose
    /// member foca does not know (`known`: the newest generation foca holds
    /// at each address, down members included), or whose address a newer
    /// identity took under another name. A record is dropped only when the
    /// previous sweep found it orphaned too, so one that arrived before its
    /// member (a rumor can beat foca's member update) has a whole sweep
    /// interval to be claimed; a dropped record is not taken back from
    /// peers (see [`ClusterState::member_up`]). Returns the names dropped.
    pub fn sweep_orphans(&mut self, known: &HashMap<SocketAddr, u64>) -> Vec<String> {
        let mut newest: HashMap<SocketAddr, u64> = HashMap::new();
        for record in self.records.values() {
            let generation = newest.entry(record.id.addr).or_default();
            *generation = (*generation).max(record.id.generation);
        }
        let mut orphans = BTreeMap::new();
        for record in self.records.values() {
            let backed = record.name == self.local_name
                || (known
                    .get(&record.id.addr)
                    .is_some_and(|&generation| generation >= record.id.generation)
                    && newest.get(&record.id.addr) == Some(&record.id.generation));
            if !backed {
                let sweeps = self.orphans.get(&record.name).copied().unwrap_or(0);
                orphans.insert(record.name.clone(), sweeps.saturating_add(1));
            }
        }
        let doomed: Vec<String> = orphans
            .iter()
            .filter(|(_, sweeps)| **sweeps >= 2)
            .map(|(name, _)| name.clone())
            .collect();
        self.orphans = orphans;
        // Peers that still hold them must not bring them back (each would
        // keep handing them to the other): taken back only if their member
        // comes up.
        for name in &doomed {
            if let Some(record) = self.records.get(name) {
                self.reaped.insert(record.id);
            }
        }
        self.remove_records(&doomed);
        doomed
    }

    pub(super) fn remove_records(&mut self, names: &[String]) {
        for name in names {
            if let Some(record) = self.records.remove(name) {
                self.wire_ranges.remove(&record.id.addr);
                self.orphans.remove(name);
                self.changed = true;
            }
        }
    }
}

/// Departures the node has to act on, gathered where records and rumors
/// are merged (the rumor handler sees only the state, not foca): members
/// whose record now says they left (they are reaped on the left
/// schedule), and prunes asked for by a `force-leave -prune` somewhere
/// (see [`crate::node`]'s `reap`).
#[derive(Debug, Default)]
pub(super) struct Departures {
    left: Vec<NodeId>,
    prunes: Vec<NodeId>,
    /// Prunes already taken, so that each is news (and re-gossiped) once.
    prunes_seen: Reaped,
    /// Accusations (see [`crate::suspicion`]) the node has not taken yet,
    /// and those already taken, so that each is news (and re-gossiped)
    /// once.
    accusations: Vec<Accusation>,
    accusations_seen: Seen<Accusation>,
    /// A peer holds a newer copy of our own record than we do (another
    /// agent force-left us while we were cut off from it): we must
    /// outdate it.
    refute: bool,
}

impl Departures {
    pub(super) fn left(&mut self, id: NodeId) {
        self.left.push(id);
    }
}

impl ClusterState {
    /// Identities whose record turned to "left", and identities to prune,
    /// since the last call.
    pub fn take_departures(&mut self) -> (Vec<NodeId>, Vec<NodeId>) {
        (
            std::mem::take(&mut self.departures.left),
            std::mem::take(&mut self.departures.prunes),
        )
    }

    /// An accusation was gossiped to us (or made here): whether it is news.
    /// The node counts it at its next step (see [`crate::suspicion`]).
    pub fn offer_accusation(&mut self, target: NodeId, incarnation: u16, accuser: NodeId) -> bool {
        let accusation = Accusation {
            target,
            incarnation,
            accuser,
        };
        if !self.departures.accusations_seen.insert(accusation) {
            return false;
        }
        if self.departures.accusations.len() < MAX_REAPED {
            self.departures.accusations.push(accusation);
        }
        true
    }

    /// Accusations offered since the last call.
    pub fn take_accusations(&mut self) -> Vec<Accusation> {
        std::mem::take(&mut self.departures.accusations)
    }

    /// A prune of `id` was gossiped to us (or asked for here): whether it
    /// is news. The node carries it out at its next step, if it holds `id`
    /// as down.
    pub fn offer_prune(&mut self, id: NodeId) -> bool {
        if self.departures.prunes_seen.contains(&id) || id == self.local().id {
            return false;
        }
        self.departures.prunes_seen.insert(id);
        self.departures.prunes.push(id);
        true
    }

    /// `record` is ours (this very identity) but newer than what we hold:
    /// another agent wrote it, marked left, by force-leave. Our version
    /// jumps to it, and the node gossips one newer still (see
    /// [`ClusterState::take_refute`]), as a suspected member refutes.
    pub(super) fn refute_if_newer(&mut self, record: &NodeRecord) {
        let local = self.local();
        let newer = record.version > local.version
            || (record.version == local.version && record.left != local.left);
        if record.id == local.id && newer {
            let version = record.version;
            self.refresh_local(|ours| ours.version = version);
            self.departures.refute = true;
        }
    }

    /// Whether our record must be gossiped anew to outdate a copy a peer
    /// wrote (see `ClusterState::refute_if_newer`).
    pub fn take_refute(&mut self) -> bool {
        std::mem::take(&mut self.departures.refute)
    }

    /// Whether the member `id` was forgotten (reaped, pruned or orphaned)
    /// and has not come up since.
    pub fn is_reaped(&self, id: &NodeId) -> bool {
        self.reaped.contains(id)
    }

    /// Remembers `id` as forgotten without holding any record of it: a
    /// prune of a member we never knew, so that stale gossip about it is
    /// not taken in later.
    pub fn mark_reaped(&mut self, id: NodeId) {
        if id != self.local().id {
            self.reaped.insert(id);
        }
    }
}
