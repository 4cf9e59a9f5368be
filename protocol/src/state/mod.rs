//! The replicated cluster state: one record per node, merged by
//! last-writer-wins on `(generation, version)`, and the KV store with the
//! checks every peer's entry passes (limits, clock drift, remembered
//! deletes, the quota; see [`ClusterState::apply_kv`]).
//!
//! - `peers`: the digests being pulled and the records of members that
//!   are gone (what peers make the state hold, bounded).
//! - `coordinates`: members' network coordinates (soft state, bounded).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::anti_entropy::DigestEntry;
use crate::clock::Clock;
use crate::envelope::WireRange;
use crate::identity::NodeId;
use crate::kv::{KvEntry, KvError, KvStore, REMEMBERED_DELETE_WRITER, Stored};
use crate::pull::PendingPulls;
use crate::record::NodeRecord;

mod coordinates;
mod peers;
pub use peers::Accusation;

use peers::Reaped;

/// What merging one record did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// The record was new or newer and replaced ours.
    Applied,
    /// We already had it, or something newer.
    Stale,
    /// It claims our own node name with another identity, not one of our
    /// own earlier ones: ignored (we are the only writer of our record),
    /// counted, and noted as a rival (see [`ClusterState::take_rivals`]).
    Conflict,
    /// It exceeds the limits below: not trusted, not stored.
    Oversized,
    /// Its generation is further ahead of our clock than the allowed
    /// drift: it would hold the name forever. Not stored.
    FromTheFuture,
}

/// Default cap on a KV store's size (`kv.max_bytes`): keys and values.
pub const DEFAULT_KV_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Peers' input refused by the checks in this module, by reason. All
/// monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// KV entries and records over the size limits.
    pub oversized: u64,
    /// KV times and record generations more than the allowed drift ahead
    /// of our clock.
    pub clock_drift: u64,
    /// KV entries for keys we don't hold, older than a delete of that key
    /// we remember (see [`crate::kv`]): the delete was handed back.
    pub deleted: u64,
    /// KV entries that would take the store past `kv.max_bytes`.
    pub kv_quota: u64,
    /// Rumors of a kind this build doesn't know (a newer agent's): skipped.
    pub unknown_rumors: u64,
}

/// Most services a node record may carry.
pub const MAX_SERVICES: usize = 256;
/// Most checks a node record may carry, its services' included.
pub const MAX_CHECKS: usize = 1024;
/// Most tags (node tags, or one service's tags) a record may carry.
pub const MAX_RECORD_TAGS: usize = 128;
/// Largest encoded node record accepted from a peer, in bytes. Far above a
/// real node's (a few KiB for dozens of services), far below what would
/// let one peer bloat every agent's memory.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;
/// Longest node name (and KV writer name), as `node_name` allows.
pub const MAX_NAME: usize = 128;
/// Most rivals for our name noted between two [`ClusterState::take_rivals`]:
/// one is enough to act on; a bound keeps a flood of forged records from
/// growing the list.
const MAX_RIVALS: usize = 16;

/// Whether a record from a peer is within the limits. A local API
/// registration is held to tighter ones before it gets here.
pub fn within_limits(record: &NodeRecord) -> bool {
    let checks = record.checks.len()
        + record
            .services
            .iter()
            .map(|s| s.checks.len())
            .sum::<usize>();
    record.services.len() <= MAX_SERVICES
        && checks <= MAX_CHECKS
        && record.tags.len() <= MAX_RECORD_TAGS
        && record
            .services
            .iter()
            .all(|s| s.tags.len() <= MAX_RECORD_TAGS && s.meta.len() <= MAX_RECORD_TAGS)
        && record.name.len() <= MAX_NAME
        // Last: the only check that walks every byte.
        && crate::codec::encoded_len(record) <= MAX_RECORD_BYTES
}

/// Whether a KV entry from a peer is within the limits the API enforces on
/// local writes (key, value, writer name).
pub fn kv_within_limits(entry: &KvEntry) -> bool {
    crate::kv::validate_key(&entry.key).is_ok()
        && entry.value.len() <= crate::kv::MAX_VALUE
        && entry.writer.len() <= MAX_NAME
}

/// All node records this agent knows, its own included.
#[derive(Debug)]
pub struct ClusterState {
    local_name: String,
    records: BTreeMap<String, NodeRecord>,
    pulls: PendingPulls,
    /// Identities whose member foca forgot: their records were dropped
    /// and are not taken back from peers that still hold them.
    reaped: Reaped,
    /// Departures learned since the node last asked (see
    /// [`ClusterState::take_departures`]).
    departures: peers::Departures,
    /// Records found without a member at the last sweeps, by name: how
    /// many sweeps in a row.
    orphans: BTreeMap<String, u8>,
    /// Records or our own record changed since the last `take_changed`.
    changed: bool,
    /// The KV store changed since the last `take_kv_changed`.
    kv_changed: bool,
    name_conflicts: u64,
    /// The generation this agent's data dir used before this start: a
    /// record with it is our own earlier identity, whatever its address.
    previous_generation: Option<u64>,
    /// Whether our record is offered to peers (digests, deltas, records
    /// asked for). A newcomer holds it back until it has checked that no
    /// live agent holds its name, so a taken name never overwrites the
    /// holder's record anywhere.
    claimed: bool,
    /// Identities that claimed our name since the last `take_rivals`.
    rivals: Vec<NodeId>,
    refusals: Refusals,
    clock: Clock,
    kv: KvStore,
    kv_applied: Vec<Stored>,
    kv_max_bytes: u64,
    /// Set once the quota refused a peer's entry: we lack entries nobody
    /// deleted (the agent warns about it).
    kv_incomplete: bool,
    /// Live entries replaced by a handed-back delete since the driver last
    /// asked, with the delete's time (see [`crate::kv`]).
    kv_quarantined: Vec<(KvEntry, u64)>,
    /// How many live entries handed-back deletes replaced, ever.
    kv_quarantined_total: u64,
    /// The wire versions each peer's record advertises, by address, with
    /// the generation of that record (what a datagram to it is sealed in,
    /// see [`ClusterState::wire_range_of`]).
    wire_ranges: HashMap<SocketAddr, (u64, WireRange)>,
    /// Members' network coordinates (see `coordinates`).
    coordinates: coordinates::Coordinates,
}

impl ClusterState {
    pub fn new(local: NodeRecord) -> Self {
        let local_name = local.name.clone();
        let mut records = BTreeMap::new();
        records.insert(local_name.clone(), local);
        Self {
            local_name,
            records,
            pulls: PendingPulls::default(),
            reaped: Reaped::default(),
            departures: peers::Departures::default(),
            orphans: BTreeMap::new(),
            changed: true,
            kv_changed: true,
            name_conflicts: 0,
            previous_generation: None,
            claimed: true,
            rivals: Vec::new(),
            refusals: Refusals::default(),
            clock: Clock::new(crate::clock::DEFAULT_MAX_CLOCK_DRIFT),
            kv: KvStore::default(),
            kv_applied: Vec::new(),
            kv_max_bytes: DEFAULT_KV_MAX_BYTES,
            kv_incomplete: false,
            kv_quarantined: Vec::new(),
            kv_quarantined_total: 0,
            wire_ranges: HashMap::new(),
            coordinates: coordinates::Coordinates::default(),
        }
    }

    /// Counts a rumor of a kind this build doesn't know.
    pub fn note_unknown_rumor(&mut self) {
        self.refusals.unknown_rumors += 1;
    }

    /// The wire versions `peer` advertises, if we hold its record: the
    /// record of that very identity. An agent that restarted (a new
    /// generation at the same address) may be another build, an older one
    /// after a rollback: until its new record arrives it is spoken to in
    /// the oldest version, which every build opens.
    pub fn wire_range_of(&self, peer: &NodeId) -> Option<WireRange> {
        self.wire_ranges
            .get(&peer.addr)
            .filter(|(generation, _)| *generation == peer.generation)
            .map(|(_, range)| *range)
    }

    /// Sets the drift allowed to peers' times and the KV quota.
    pub fn set_limits(&mut self, max_clock_drift: std::time::Duration, kv_max_bytes: u64) {
        self.clock = Clock::new(max_clock_drift);
        self.kv_max_bytes = kv_max_bytes;
    }

    /// The current time, as the driver gave it (see [`crate::clock`]).
    pub fn set_clock(&mut self, now: std::time::Duration) {
        self.clock.set(now);
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Our own record.
    pub fn local(&self) -> &NodeRecord {
        &self.records[&self.local_name]
    }

    /// Changes our own record and bumps its version; returns the result.
    pub fn update_local(&mut self, change: impl FnOnce(&mut NodeRecord)) -> &NodeRecord {
        let record = self
            .records
            .get_mut(&self.local_name)
            .expect("the local record is never removed");
        change(record);
        record.version += 1;
        self.changed = true;
        record
    }

    /// Changes our own record without bumping its version: for data that
    /// rides along with the next real change (check output) and must not
    /// cause gossip by itself.
    pub fn refresh_local(&mut self, change: impl FnOnce(&mut NodeRecord)) {
        let record = self
            .records
            .get_mut(&self.local_name)
            .expect("the local record is never removed");
        change(record);
        self.changed = true;
    }

    /// Merges a record from a peer.
    pub fn merge(&mut self, record: NodeRecord) -> Merge {
        if !within_limits(&record) {
            self.refusals.oversized += 1;
            return Merge::Oversized;
        }
        if record.id.generation > self.clock.max_generation() {
            self.refusals.clock_drift += 1;
            return Merge::FromTheFuture;
        }
        if record.name == self.local_name {
            // An older copy of our own record is merely stale; another
            // identity claiming our name is a conflict.
            if self.is_own_identity(record.id) {
                self.refute_if_newer(&record);
                return Merge::Stale;
            }
            self.name_conflicts += 1;
            if self.rivals.len() < MAX_RIVALS && !self.rivals.contains(&record.id) {
                self.rivals.push(record.id);
            }
            return Merge::Conflict;
        }
        if self.reaped.contains(&record.id) {
            return Merge::Stale;
        }
        match self.records.get(&record.name) {
            Some(current) if !record.supersedes(current) => Merge::Stale,
            current => {
                // One entry per record: an address it left is forgotten.
                if let Some(moved) = current.map(|c| c.id.addr).filter(|a| *a != record.id.addr) {
                    self.wire_ranges.remove(&moved);
                }
                self.wire_ranges
                    .insert(record.id.addr, (record.id.generation, record.wire_range()));
                if record.left && !current.is_some_and(|c| c.id == record.id && c.left) {
                    self.departures.left(record.id);
                }
                self.records.insert(record.name.clone(), record);
                self.changed = true;
                Merge::Applied
            }
        }
    }

    /// Whether `id` is us now or one of our own earlier identities: an
    /// earlier generation at our address (a restart), or the generation our
    /// data dir used last (a restart at another address).
    fn is_own_identity(&self, id: NodeId) -> bool {
        let local = self.local().id;
        id == local
            || (id.addr == local.addr && id.generation < local.generation)
            || Some(id.generation) == self.previous_generation
    }

    /// Tells which generation this agent's data dir used before this
    /// start, so that a record of it is not taken for a rival.
    pub fn set_previous_generation(&mut self, generation: u64) {
        self.previous_generation = Some(generation);
    }

    /// Identities that claimed our name since the last call (at most
    /// `MAX_RIVALS`). The node decides which of them are alive.
    pub fn take_rivals(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.rivals)
    }

    /// Whether our record is offered to peers.
    pub fn claimed(&self) -> bool {
        self.claimed
    }

    /// Holds our record back from peers (`false`) or offers it (`true`).
    pub fn set_claimed(&mut self, claimed: bool) {
        self.claimed = claimed;
    }

    /// Whether a record with this name and order would be news to us.
    pub fn is_news(&mut self, name: &str, generation: u64, version: u64) -> bool {
        if name == self.local_name {
            // While our name is unchecked, any other record of it is worth
            // fetching: it may be a live agent's.
            return !self.claimed && generation != self.local().id.generation;
        }
        if generation > self.clock.max_generation() {
            self.refusals.clock_drift += 1;
            return false;
        }
        match self.records.get(name) {
            Some(current) => (generation, version) > (current.id.generation, current.version),
            None => true,
        }
    }

    pub fn get(&self, name: &str) -> Option<&NodeRecord> {
        self.records.get(name)
    }

    pub fn records(&self) -> impl Iterator<Item = &NodeRecord> {
        self.records.values()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// How many records claimed our name with another identity.
    pub fn name_conflicts(&self) -> u64 {
        self.name_conflicts
    }

    /// How many records and KV entries from peers were refused for
    /// exceeding the limits.
    pub fn oversized(&self) -> u64 {
        self.refusals.oversized
    }

    /// Peers' input refused so far, by reason.
    pub fn refusals(&self) -> Refusals {
        self.refusals
    }

    /// Records we offer to peers: all but our own while it is held back.
    fn offered(&self) -> impl Iterator<Item = &NodeRecord> {
        self.records
            .values()
            .filter(|record| self.claimed || record.name != self.local_name)
    }

    /// Name and order of every record we offer, for anti-entropy. Without
    /// our own (held back), a peer answers with its record of our name.
    pub fn digest(&self) -> Vec<DigestEntry> {
        self.offered()
            .map(|record| DigestEntry {
                name: record.name.clone(),
                generation: record.id.generation,
                version: record.version,
            })
            .collect()
    }

    /// Compares a peer's digest with ours: the records the peer lacks (or
    /// has older), and the names of those it has newer than we do.
    pub fn delta(&mut self, theirs: &[DigestEntry]) -> (Vec<NodeRecord>, Vec<String>) {
        let mut wanted = Vec::new();
        // Indexed by name: a linear search per record made an exchange
        // quadratic in the cluster size (10^6 comparisons at 1,000 nodes).
        let mut seen = BTreeMap::new();
        for entry in theirs {
            seen.insert(entry.name.as_str(), (entry.generation, entry.version));
            if self.is_news(&entry.name, entry.generation, entry.version) {
                wanted.push(entry.name.clone());
            }
        }
        let missing = self
            .offered()
            .filter(|record| {
                seen.get(record.name.as_str())
                    .is_none_or(|&order| (record.id.generation, record.version) > order)
            })
            .cloned()
            .collect();
        (missing, wanted)
    }

    /// Copies of the records with these names (unknown names, and ours
    /// while it is held back, are skipped).
    pub fn records_named(&self, names: &[String]) -> Vec<NodeRecord> {
        names
            .iter()
            .filter(|name| self.claimed || **name != self.local_name)
            .filter_map(|name| self.records.get(name))
            .cloned()
            .collect()
    }

    /// The KV store.
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// Mutable access for restoring from disk and collecting tombstones;
    /// changes made here are not reported by [`ClusterState::take_kv_applied`].
    /// Callers that change it say so with [`ClusterState::mark_kv_changed`].
    pub fn kv_mut(&mut self) -> &mut KvStore {
        &mut self.kv
    }

    /// Records a change made through [`ClusterState::kv_mut`].
    pub fn mark_kv_changed(&mut self) {
        self.kv_changed = true;
    }

    /// Applies a KV entry from a peer (a rumor or anti-entropy) if it
    /// passes the checks and wins; returns whether it was applied. Refused,
    /// and counted by reason: entries over the size limits, entries from
    /// further ahead than the allowed clock drift (they would win every
    /// later write), entries for keys we don't hold that are older than a
    /// delete of that key we remember (the delete is handed back; see
    /// [`crate::kv`]), and entries that would take the store past its
    /// quota. A live entry of ours that a handed-back delete replaces is
    /// noted for the quarantine ([`ClusterState::take_kv_quarantined`]).
    pub fn apply_kv(&mut self, entry: Arc<KvEntry>) -> bool {
        if !kv_within_limits(&entry) {
            self.refusals.oversized += 1;
            return false;
        }
        if !self.kv_time_acceptable(entry.time) {
            return false;
        }
        if let Some(deleted_at) = self.deleted_after(&entry.key, entry.time, entry.deleted) {
            self.refusals.deleted += 1;
            if !entry.deleted {
                self.hand_back_delete(&entry.key, deleted_at);
            }
            return false;
        }
        let bytes = self.kv.bytes_with(&entry);
        if bytes > self.kv_max_bytes && bytes > self.kv.bytes() {
            self.refusals.kv_quota += 1;
            self.kv_incomplete = true;
            return false;
        }
        let replaced = self
            .kv
            .get(&entry.key)
            .filter(|held| {
                entry.deleted
                    && entry.writer == REMEMBERED_DELETE_WRITER
                    && !held.entry.deleted
                    && entry.supersedes(&held.entry)
            })
            .map(|held| (*held.entry).clone());
        let applied = self.apply_kv_unchecked(entry.clone()).is_some();
        if let Some(replaced) = replaced.filter(|_| applied) {
            self.kv_quarantined.push((replaced, entry.time));
            self.kv_quarantined_total += 1;
        }
        applied
    }

    /// The time of a delete of `key` we remember that came after `time`,
    /// when we don't hold the key (what we hold decides otherwise). For a
    /// tombstone (`deleted`), a remembered delete at the same time counts
    /// too: it is that very delete, collected here already, and taking it
    /// back would keep it for another grace while the peer collects it and
    /// then takes it back from us, forever. A live value at the same time
    /// is kept (a tie keeps the write).
    fn deleted_after(&self, key: &str, time: u64, deleted: bool) -> Option<u64> {
        if self.kv.get(key).is_some() {
            return None;
        }
        self.kv
            .remembered_deletes()
            .deleted_at(key)
            .filter(|&deleted_at| deleted_at > time || (deleted && deleted_at == time))
    }

    /// Stores the tombstone of a remembered delete again, so that
    /// anti-entropy carries it to the peer that sent an older value (see
    /// [`crate::kv`]). A delete always fits: no quota check.
    fn hand_back_delete(&mut self, key: &str, deleted_at: u64) {
        let tombstone = KvEntry {
            key: key.to_string(),
            value: Vec::new(),
            flags: 0,
            time: deleted_at,
            writer: REMEMBERED_DELETE_WRITER.to_string(),
            deleted: true,
        };
        self.apply_kv_unchecked(Arc::new(tombstone));
    }

    /// Live entries a handed-back delete replaced since the last call, each
    /// with the delete's time: the driver quarantines them.
    pub fn take_kv_quarantined(&mut self) -> Vec<(KvEntry, u64)> {
        std::mem::take(&mut self.kv_quarantined)
    }

    /// How many live entries handed-back deletes replaced, ever.
    pub fn kv_quarantined_total(&self) -> u64 {
        self.kv_quarantined_total
    }

    /// Applies a local write (its time chosen by this agent): it must win
    /// and fit in the quota.
    pub fn apply_local_kv(&mut self, entry: Arc<KvEntry>) -> Result<Stored, KvError> {
        let bytes = self.kv.bytes_with(&entry);
        if bytes > self.kv_max_bytes && bytes > self.kv.bytes() {
            return Err(KvError::QuotaExceeded {
                needed: bytes,
                max_bytes: self.kv_max_bytes,
            });
        }
        self.apply_kv_unchecked(entry).ok_or(KvError::Superseded)
    }

    fn apply_kv_unchecked(&mut self, entry: Arc<KvEntry>) -> Option<Stored> {
        let received = self.clock.now_ntp64().unwrap_or(0);
        let stored = self.kv.apply_at(entry, received)?;
        self.kv_applied.push(stored.clone());
        self.kv_changed = true;
        Some(stored)
    }

    /// The drift check of [`ClusterState::apply_kv`], counted.
    fn kv_time_acceptable(&mut self, time: u64) -> bool {
        if time > self.clock.max_kv_time() {
            self.refusals.clock_drift += 1;
            return false;
        }
        true
    }

    /// Whether a KV write with this order would be applied: it passes the
    /// time checks, no delete we remember came after it, and it wins over
    /// ours.
    pub fn kv_is_news(&mut self, key: &str, time: u64, writer: &str) -> bool {
        if !self.kv_time_acceptable(time) {
            return false;
        }
        if self.deleted_after(key, time, false).is_some() {
            self.refusals.deleted += 1;
            return false;
        }
        match self.kv.get(key) {
            Some(stored) => (time, writer) > (stored.entry.time, stored.entry.writer.as_str()),
            None => true,
        }
    }

    /// Whether the quota refused a peer's entry (we lack entries nobody
    /// deleted); restored from disk with [`ClusterState::set_kv_incomplete`].
    pub fn kv_incomplete(&self) -> bool {
        self.kv_incomplete
    }

    pub fn set_kv_incomplete(&mut self, incomplete: bool) {
        self.kv_incomplete = incomplete;
    }

    /// The most bytes the KV store may hold (`kv.max_bytes`).
    pub fn kv_max_bytes(&self) -> u64 {
        self.kv_max_bytes
    }

    /// KV entries applied since the last call, for the driver to persist.
    pub fn take_kv_applied(&mut self) -> Vec<Stored> {
        std::mem::take(&mut self.kv_applied)
    }

    /// Whether a node record (ours included) changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::replace(&mut self.changed, false)
    }

    /// Whether the KV store changed since the last call.
    pub fn take_kv_changed(&mut self) -> bool {
        std::mem::replace(&mut self.kv_changed, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::net::SocketAddr;

    fn record(name: &str, port: u16, generation: u64, version: u64) -> NodeRecord {
        let mut record = NodeRecord::new(
            NodeId {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                generation,
            },
            name,
        );
        record.version = version;
        record
            .tags
            .insert("v".into(), format!("{generation}.{version}"));
        record
    }

    fn arbitrary_record() -> impl Strategy<Value = NodeRecord> {
        (0usize..4, 1u16..3, 0u64..3, 0u64..4).prop_map(|(name, port, generation, version)| {
            record(["a", "b", "c", "d"][name], port, generation, version)
        })
    }

    fn merged(records: &[NodeRecord]) -> BTreeMap<String, NodeRecord> {
        let mut state = ClusterState::new(record("local", 9, 1, 1));
        for record in records {
            state.merge(record.clone());
        }
        state.records
    }

    /// A peer is spoken to in the versions its record advertises only while
    /// it is the identity that record is of: an agent restarted at the same
    /// address (perhaps rolled back to a build that speaks only version 1)
    /// gets the oldest version until its new record arrives.
    #[test]
    fn wire_ranges_hold_for_the_identity_whose_record_advertised_them() {
        let mut state = ClusterState::new(record("local", 9, 1, 1));
        let mut newer = record("b", 2, 5, 1);
        newer.tags.insert(
            crate::record::WIRE_TAG.into(),
            crate::record::wire_tag(WireRange { min: 1, max: 2 }),
        );
        state.merge(newer.clone());
        let range = state.wire_range_of(&newer.id);
        assert_eq!(range, Some(WireRange { min: 1, max: 2 }));
        let restarted = NodeId {
            generation: 6,
            ..newer.id
        };
        assert_eq!(state.wire_range_of(&restarted), None);
        // Its record arrives, advertising only version 1.
        let mut rolled_back = record("b", 2, 6, 1);
        rolled_back.tags.insert(
            crate::record::WIRE_TAG.into(),
            crate::record::wire_tag(WireRange { min: 1, max: 1 }),
        );
        state.merge(rolled_back);
        assert_eq!(
            state.wire_range_of(&restarted),
            Some(WireRange { min: 1, max: 1 })
        );
        assert_eq!(state.wire_range_of(&newer.id), None);
    }

    #[test]
    fn newer_generation_beats_higher_version() {
        let mut state = ClusterState::new(record("local", 9, 1, 1));
        assert_eq!(state.merge(record("a", 1, 1, 50)), Merge::Applied);
        assert_eq!(state.merge(record("a", 1, 2, 1)), Merge::Applied);
        assert_eq!(state.merge(record("a", 1, 1, 99)), Merge::Stale);
        assert_eq!(state.get("a").unwrap().id.generation, 2);
    }

    #[test]
    fn records_over_the_limits_are_refused() {
        let mut state = ClusterState::new(record("local", 9, 1, 1));
        let mut huge = record("a", 1, 1, 1);
        huge.tags = (0..=MAX_RECORD_TAGS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert_eq!(state.merge(huge), Merge::Oversized);
        assert!(state.get("a").is_none());
        assert_eq!(state.oversized(), 1);
    }

    #[test]
    fn records_and_kv_entries_over_the_byte_limits_are_refused() {
        let mut state = ClusterState::new(record("local", 9, 1, 1));
        let mut big = record("a", 1, 1, 1);
        // Few tags, but each huge: only the encoded size catches it.
        big.tags = (0..4)
            .map(|i| (format!("k{i}"), "x".repeat(MAX_RECORD_BYTES / 3)))
            .collect();
        assert_eq!(state.merge(big), Merge::Oversized);
        let entry = |key: &str, value: usize| {
            std::sync::Arc::new(KvEntry {
                key: key.into(),
                value: vec![b'v'; value],
                flags: 0,
                time: 1,
                writer: "a".into(),
                deleted: false,
            })
        };
        assert!(!state.apply_kv(entry("big", crate::kv::MAX_VALUE + 1)));
        assert!(!state.apply_kv(entry("/slash", 1)));
        assert!(!state.apply_kv(entry(&"k".repeat(crate::kv::MAX_KEY + 1), 1)));
        assert!(state.apply_kv(entry("fits", crate::kv::MAX_VALUE)));
        assert_eq!(state.oversized(), 4);
    }

    #[test]
    fn our_own_name_is_never_overwritten() {
        let mut state = ClusterState::new(record("local", 9, 1, 1));
        assert_eq!(state.merge(record("local", 8, 5, 5)), Merge::Conflict);
        assert_eq!(state.local().id.addr.port(), 9);
        assert_eq!(state.name_conflicts(), 1);
    }

    #[test]
    fn only_other_identities_claiming_our_name_are_rivals() {
        let mut state = ClusterState::new(record("local", 9, 5, 1));
        state.set_previous_generation(3);
        // Our own earlier generations: at our address, or the generation
        // our data dir used last, wherever it was advertised.
        assert_eq!(state.merge(record("local", 9, 4, 7)), Merge::Stale);
        assert_eq!(state.merge(record("local", 8, 3, 7)), Merge::Stale);
        assert_eq!(state.merge(record("local", 9, 5, 0)), Merge::Stale);
        assert!(state.take_rivals().is_empty());
        // Another address, older or newer: a rival, noted once.
        assert_eq!(state.merge(record("local", 8, 2, 1)), Merge::Conflict);
        assert_eq!(state.merge(record("local", 8, 2, 2)), Merge::Conflict);
        assert_eq!(state.merge(record("local", 7, 9, 1)), Merge::Conflict);
        let rivals: Vec<u16> = state
            .take_rivals()
            .iter()
            .map(|id| id.addr.port())
            .collect();
        assert_eq!(rivals, [8, 7]);
        assert!(state.take_rivals().is_empty());
        assert_eq!(state.name_conflicts(), 3);
        assert_eq!(state.local().id.addr.port(), 9);
    }

    #[test]
    fn a_held_back_record_is_never_offered() {
        let mut state = ClusterState::new(record("local", 9, 1, 1));
        state.merge(record("a", 1, 1, 1));
        state.set_claimed(false);
        let names: Vec<String> = state.digest().into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["a"]);
        let (missing, _) = state.delta(&[]);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].name, "a");
        assert!(state.records_named(&["local".into()]).is_empty());
        state.set_claimed(true);
        assert_eq!(state.digest().len(), 2);
        assert_eq!(state.records_named(&["local".into()]).len(), 1);
    }

    #[test]
    fn delta_sends_what_the_peer_lacks_and_asks_for_what_it_has_newer() {
        let mut ours = ClusterState::new(record("local", 9, 1, 1));
        ours.merge(record("a", 1, 1, 3));
        ours.merge(record("b", 2, 1, 1));
        let theirs = vec![
            DigestEntry {
                name: "a".into(),
                generation: 1,
                version: 2,
            },
            DigestEntry {
                name: "b".into(),
                generation: 1,
                version: 7,
            },
            DigestEntry {
                name: "c".into(),
                generation: 1,
                version: 1,
            },
        ];
        let (missing, wanted) = ours.delta(&theirs);
        let names: Vec<_> = missing.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "local"]);
        assert_eq!(wanted, ["b", "c"]);
    }

    #[test]
    fn a_forgotten_member_loses_its_record_until_it_comes_back() {
        let mut state = ClusterState::new(record("local", 9, 1, 1));
        let a = record("a", 1, 5, 1);
        state.merge(a.clone());
        state.merge(record("b", 2, 1, 1));
        // An older record at the same address goes too; ours never does.
        assert_eq!(state.forget_member(a.id), ["a"]);
        assert_eq!(state.forget_member(state.local().id), Vec::<String>::new());
        assert_eq!(
            state.merge(a.clone()),
            Merge::Stale,
            "a peer can't bring it back"
        );
        state.member_up(a.id);
        assert_eq!(state.merge(a), Merge::Applied);
        assert_eq!(state.len(), 3);
    }

    #[test]
    fn records_no_member_backs_go_at_the_second_sweep() {
        let mut state = ClusterState::new(record("local", 9, 1, 1));
        state.merge(record("backed", 1, 1, 1));
        state.merge(record("early", 2, 1, 1));
        state.merge(record("renamed-old", 3, 1, 1));
        state.merge(record("renamed-new", 3, 2, 1));
        let mut known: HashMap<SocketAddr, u64> = [(1, 1), (3, 2)]
            .into_iter()
            .map(|(port, generation)| (SocketAddr::from(([127, 0, 0, 1], port)), generation))
            .collect();
        assert!(
            state.sweep_orphans(&known).is_empty(),
            "a whole sweep of grace"
        );
        // "early" found its member meanwhile; the old name at a renamed
        // address did not.
        known.insert(SocketAddr::from(([127, 0, 0, 1], 2)), 1);
        assert_eq!(state.sweep_orphans(&known), ["renamed-old"]);
        let mut names: Vec<&str> = state.records().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["backed", "early", "local", "renamed-new"]);
        // A peer that still holds it can't bring it back.
        assert_eq!(state.merge(record("renamed-old", 3, 1, 1)), Merge::Stale);
        known.clear();
        state.sweep_orphans(&known);
        assert_eq!(state.sweep_orphans(&known).len(), 3);
        assert_eq!(state.len(), 1, "our own record always stays");
    }

    proptest! {
        #[test]
        fn merge_is_order_independent(records in proptest::collection::vec(arbitrary_record(), 0..12), seed in any::<u64>()) {
            let mut shuffled = records.clone();
            // A seeded Fisher-Yates so the property covers many orders.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(merged(&records), merged(&shuffled));
        }

        #[test]
        fn merge_is_idempotent(records in proptest::collection::vec(arbitrary_record(), 0..12)) {
            let twice: Vec<_> = records.iter().chain(records.iter()).cloned().collect();
            prop_assert_eq!(merged(&records), merged(&twice));
        }

        #[test]
        fn merging_states_is_associative(
            a in proptest::collection::vec(arbitrary_record(), 0..6),
            b in proptest::collection::vec(arbitrary_record(), 0..6),
            c in proptest::collection::vec(arbitrary_record(), 0..6),
        ) {
            // (a ∪ b) ∪ c == a ∪ (b ∪ c), merging whole states.
            let ab: Vec<_> = merged(&[a.clone(), b.clone()].concat()).into_values().collect();
            let left = merged(&[ab, c.clone()].concat());
            let bc: Vec<_> = merged(&[b, c].concat()).into_values().collect();
            let right = merged(&[a, bc].concat());
            prop_assert_eq!(left, right);
        }
    }
}
