//! The replicated key/value store: a last-writer-wins map.
//!
//! Each entry carries the hybrid-logical-clock time of its write and the
//! writer's node name; the larger `(time, writer)` wins. Deletes are
//! tombstones, collected after a grace period. The merge is commutative,
//! associative and idempotent, so any delivery order ends in the same map.
//!
//! For anti-entropy, keys fall into [`BUCKETS`] buckets by hash; each bucket
//! keeps the XOR of its entries' hashes, updated in O(1) per change, so two
//! agents compare 256 hashes instead of every key.
//!
//! # Remembered deletes
//!
//! Once a tombstone is collected, the store alone can no longer tell
//! "deleted" from "never heard of": a peer that missed the delete would
//! hand the old value back. So collecting a tombstone leaves a *remembered
//! delete* behind ([`RememberedDeletes`]): the hash of its key and its
//! write time, 16 bytes of payload, kept far longer than the grace period
//! (see [`REMEMBER_DELETES_FOR`], bounded by [`MAX_REMEMBERED_DELETES`]).
//! The rule that uses it lives in the merge of peers' entries
//! (`state::ClusterState::apply_kv`):
//!
//! - an entry from a peer (exchange or rumor) for a key we don't hold,
//!   older than a delete of *that very key* we remember, is refused
//!   (counted), and the delete is handed back: we store the tombstone again
//!   (its key, the remembered time, the writer [`REMEMBERED_DELETE_WRITER`])
//!   and anti-entropy carries it to the peer like any tombstone, where
//!   last-writer-wins replaces the old value as it would have had the
//!   tombstone never been collected;
//! - a node whose live value is replaced by such a handed-back delete
//!   reports it (`ClusterState::take_kv_quarantined`): the agent keeps the
//!   value in a quarantine and logs its key.
//!
//! Nothing else ever removes a live entry: an entry is dropped only by a
//! newer write or tombstone *for that key*, so a write that no delete came
//! after is never lost, whatever the partitions and collections. When a
//! remembered delete was forgotten (past its age or the count bound), the
//! rule keeps the entry: the risk becomes a resurrected delete, never a
//! lost write. Equal times keep the entry too (the handed-back tombstone's
//! writer, the empty name, loses every tie).
//!
//! Collection is guarded (see `Node::collect_tombstones`): it waits for the
//! grace period both on the delete's own clock and on ours, and pauses
//! while the node is alone, so a tombstone normally reaches everyone
//! before anyone collects it, and handing deletes back stays rare.
//!
//! Earlier versions kept one *collection horizon* per store instead (the
//! newest collected delete's time) and took every entry a peer lacked
//! below it for deleted: "deleted" and "never seen" looked the same, and a
//! write made on the other side of a long partition could be dropped. The
//! horizon fields stay on the wire (version 1); this version always sends
//! 0 there ("vouches for nothing", so an earlier agent drops nothing
//! because of it) and ignores what peers send.

use std::ops::Bound;
use std::sync::Arc;

use bincode::{Decode, Encode};
use xxhash_rust::xxh3::xxh3_64;

/// Anti-entropy buckets.
pub const BUCKETS: usize = 256;
/// Longest key, in bytes.
pub const MAX_KEY: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE: usize = 512 * 1024;
/// Most remembered deletes a store keeps; past it, the oldest are
/// forgotten first (counted, see [`RememberedDeletes::forgotten`]). About
/// 73 bytes of resident memory each (two persistent maps; measured by
/// filling one to the bound), so 7 MiB at the bound.
pub const MAX_REMEMBERED_DELETES: usize = 100_000;
/// How long a delete is remembered after it was collected, in grace
/// periods: 30 days with the default 72 h grace.
pub const REMEMBER_DELETES_FOR: u32 = 10;
/// The writer of a tombstone handed back from a remembered delete (see
/// the module docs): no node has this name, and it loses every tie.
pub const REMEMBERED_DELETE_WRITER: &str = "";

/// One key as replicated.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct KvEntry {
    pub key: String,
    /// Empty for a tombstone.
    pub value: Vec<u8>,
    /// Opaque to Shoal (Consul's `flags`).
    pub flags: u64,
    /// Hybrid-logical-clock time of the write (NTP64: seconds in the high
    /// 32 bits, fraction in the low 32).
    pub time: u64,
    /// Name of the node that wrote it: breaks ties between equal times.
    pub writer: String,
    pub deleted: bool,
}

impl KvEntry {
    /// Whether this entry wins over `other` under last-writer-wins. Two
    /// different entries with equal `(time, writer)` can only come from a
    /// misbehaving node; the content decides, so every agent still agrees.
    pub fn supersedes(&self, other: &KvEntry) -> bool {
        (
            self.time,
            &self.writer,
            self.deleted,
            self.flags,
            &self.value,
        ) > (
            other.time,
            &other.writer,
            other.deleted,
            other.flags,
            &other.value,
        )
    }

    fn hash(&self) -> u64 {
        let mut bytes = Vec::with_capacity(self.key.len() + self.writer.len() + 32);
        bytes.extend_from_slice(self.key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&self.time.to_le_bytes());
        bytes.extend_from_slice(self.writer.as_bytes());
        bytes.push(u8::from(self.deleted));
        bytes.extend_from_slice(&self.flags.to_le_bytes());
        bytes.extend_from_slice(&xxh3_64(&self.value).to_le_bytes());
        xxh3_64(&bytes)
    }
}

/// Which anti-entropy bucket a key is in.
pub fn bucket_of(key: &str) -> usize {
    (xxh3_64(key.as_bytes()) % BUCKETS as u64) as usize
}

/// Why a KV write is refused. Nothing was stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KvError {
    #[error("key must not be empty")]
    EmptyKey,
    #[error("key is {0} bytes; at most {MAX_KEY} are allowed")]
    KeyTooLong(usize),
    #[error("key must not start with '/'")]
    LeadingSlash,
    #[error("value is {0} bytes; at most {MAX_VALUE} are allowed")]
    ValueTooLarge(usize),
    #[error(
        "the KV store would hold {needed} bytes of keys and values, more than `kv.max_bytes` \
         ({max_bytes}); delete keys or raise kv.max_bytes"
    )]
    QuotaExceeded { needed: u64, max_bytes: u64 },
    #[error("a newer write to this key arrived first; this one was not applied")]
    Superseded,
    #[error(
        "the key holds a write time more than max_clock_drift ahead of this agent's clock, \
         so no later write can be stamped; check the clocks of the hosts"
    )]
    TimeFromTheFuture,
}

/// Checks a key against the limits.
pub fn validate_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        Err(KvError::EmptyKey)
    } else if key.len() > MAX_KEY {
        Err(KvError::KeyTooLong(key.len()))
    } else if key.starts_with('/') {
        Err(KvError::LeadingSlash)
    } else {
        Ok(())
    }
}

/// An entry with this agent's own bookkeeping (not replicated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub entry: Arc<KvEntry>,
    /// Local index when the key was created (after its last delete).
    pub create_index: u64,
    /// Local index of the last change: what `?cas=` compares.
    pub modify_index: u64,
    /// When this store applied the entry, on its own clock (NTP64); 0 when
    /// unknown. A tombstone is collected only once both this and its write
    /// time are older than the grace period.
    pub received: u64,
}

impl Stored {
    /// What the entry counts against a store's quota: key and value bytes.
    pub fn bytes(&self) -> u64 {
        entry_bytes(&self.entry)
    }
}

/// Key and value bytes of an entry (a tombstone: its key).
pub fn entry_bytes(entry: &KvEntry) -> u64 {
    (entry.key.len() + entry.value.len()) as u64
}

/// The whole map, tombstones included. Cloning is O(1) (a persistent map),
/// so snapshots can hold a copy.
#[derive(Clone, Debug)]
pub struct KvStore {
    entries: imbl::OrdMap<String, Stored>,
    buckets: Arc<[u64; BUCKETS]>,
    /// Local change counter: bumped by every applied change.
    index: u64,
    /// Key and value bytes over every entry, tombstones included.
    bytes: u64,
    /// The deletes whose tombstones were collected here (see the module
    /// docs).
    deletes: RememberedDeletes,
}

impl Default for KvStore {
    fn default() -> Self {
        Self {
            entries: imbl::OrdMap::new(),
            buckets: Arc::new([0; BUCKETS]),
            index: 0,
            bytes: 0,
            deletes: RememberedDeletes::default(),
        }
    }
}

impl KvStore {
    /// Applies `entry` if it is new or wins over what we have. Returns the
    /// stored form when it was applied. The time it was received is
    /// unknown (0); see [`KvStore::apply_at`].
    pub fn apply(&mut self, entry: Arc<KvEntry>) -> Option<Stored> {
        self.apply_at(entry, 0)
    }

    /// Applies `entry` as [`KvStore::apply`] does, noting that it was
    /// received at `received` (NTP64, this store's clock).
    pub fn apply_at(&mut self, entry: Arc<KvEntry>, received: u64) -> Option<Stored> {
        let previous = self.entries.get(&entry.key);
        if let Some(previous) = previous
            && !entry.supersedes(&previous.entry)
        {
            return None;
        }
        let bucket = bucket_of(&entry.key);
        let buckets = Arc::make_mut(&mut self.buckets);
        self.bytes = self.bytes + entry_bytes(&entry) - previous.map_or(0, Stored::bytes);
        let create_index = match previous {
            Some(previous) => {
                buckets[bucket] ^= previous.entry.hash();
                if previous.entry.deleted {
                    self.index + 1
                } else {
                    previous.create_index
                }
            }
            None => self.index + 1,
        };
        buckets[bucket] ^= entry.hash();
        self.index += 1;
        let stored = Stored {
            entry,
            create_index,
            modify_index: self.index,
            received,
        };
        self.entries
            .insert(stored.entry.key.clone(), stored.clone());
        Some(stored)
    }

    /// Restores an entry read back from disk, with its local indexes.
    pub fn restore(&mut self, stored: Stored) {
        let bucket = bucket_of(&stored.entry.key);
        let buckets = Arc::make_mut(&mut self.buckets);
        if let Some(previous) = self.entries.get(&stored.entry.key) {
            buckets[bucket] ^= previous.entry.hash();
            self.bytes -= previous.bytes();
        }
        buckets[bucket] ^= stored.entry.hash();
        self.bytes += stored.bytes();
        self.index = self.index.max(stored.modify_index);
        self.entries.insert(stored.entry.key.clone(), stored);
    }

    /// Sets the local index (restored from disk) so it never goes back.
    pub fn raise_index(&mut self, index: u64) {
        self.index = self.index.max(index);
    }

    /// The stored entry for `key`, tombstones included.
    pub fn get(&self, key: &str) -> Option<&Stored> {
        self.entries.get(key)
    }

    /// Live entries whose key starts with `prefix`, in key order.
    pub fn prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Stored> + 'a {
        self.entries
            .range(prefix.to_string()..)
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(_, stored)| stored)
            .filter(|stored| !stored.entry.deleted)
    }

    /// Entries (tombstones included) with keys within the bounds, in key
    /// order: what anti-entropy pages walk.
    pub fn range<'a>(
        &'a self,
        from: Bound<&'a str>,
        to: Bound<&'a str>,
    ) -> impl Iterator<Item = &'a Stored> + 'a {
        self.entries
            .range::<_, str>((from, to))
            .map(|(_, stored)| stored)
    }

    /// The `n`th key in key order (O(n)).
    pub fn nth_key(&self, n: usize) -> Option<&str> {
        self.entries.keys().nth(n).map(String::as_str)
    }

    /// Every entry, tombstones included.
    pub fn iter(&self) -> impl Iterator<Item = &Stored> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The local change counter.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Key and value bytes held, tombstones included: what `kv.max_bytes`
    /// caps.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// What [`KvStore::bytes`] would be once `entry` is applied (if it
    /// wins; unchanged otherwise).
    pub fn bytes_with(&self, entry: &KvEntry) -> u64 {
        match self.entries.get(&entry.key) {
            Some(previous) if !entry.supersedes(&previous.entry) => self.bytes,
            previous => self.bytes - previous.map_or(0, Stored::bytes) + entry_bytes(entry),
        }
    }

    /// The deletes remembered after their tombstones were collected.
    pub fn remembered_deletes(&self) -> &RememberedDeletes {
        &self.deletes
    }

    /// Mutable access, for restoring them from disk and forgetting old ones.
    pub fn remembered_deletes_mut(&mut self) -> &mut RememberedDeletes {
        &mut self.deletes
    }

    /// The newest time anything this store knows of `key` carries: its
    /// entry, or a remembered delete. A local write must be stamped later.
    pub fn latest_time(&self, key: &str) -> u64 {
        let held = self.entries.get(key).map_or(0, |stored| stored.entry.time);
        held.max(self.deletes.deleted_at(key).unwrap_or(0))
    }

    /// Hash of each bucket (0 for an empty one).
    pub fn bucket_hashes(&self) -> &[u64; BUCKETS] {
        &self.buckets
    }

    /// One hash over everything: equal roots, equal maps (but for hash
    /// collisions, which anti-entropy repairs in a later round anyway).
    pub fn root(&self) -> u64 {
        let mut bytes = Vec::with_capacity(BUCKETS * 8);
        for hash in self.buckets.iter() {
            bytes.extend_from_slice(&hash.to_le_bytes());
        }
        xxh3_64(&bytes)
    }

    /// Buckets whose hash differs from `theirs` (all of them when `theirs`
    /// has the wrong length).
    pub fn differing_buckets(&self, theirs: &[u64]) -> Vec<u16> {
        (0..BUCKETS)
            .filter(|&i| theirs.get(i) != Some(&self.buckets[i]))
            .map(|i| i as u16)
            .collect()
    }

    /// Every entry (tombstones included) in the given buckets.
    pub fn entries_in(&self, buckets: &[u16]) -> Vec<KvEntry> {
        if buckets.is_empty() {
            return Vec::new();
        }
        let mut wanted = [false; BUCKETS];
        for &bucket in buckets {
            if let Some(slot) = wanted.get_mut(bucket as usize) {
                *slot = true;
            }
        }
        self.entries
            .values()
            .filter(|stored| wanted[bucket_of(&stored.entry.key)])
            .map(|stored| (*stored.entry).clone())
            .collect()
    }

    /// Collects the tombstones written *and* received before `cutoff`
    /// (NTP64) and remembers their deletes; returns their keys, the deletes
    /// remembered and those forgotten to make room, so the caller can
    /// update the disk too.
    pub fn collect_tombstones(&mut self, cutoff: u64) -> Collected {
        let keys: Vec<String> = self
            .entries
            .values()
            .filter(|stored| {
                stored.entry.deleted && stored.entry.time < cutoff && stored.received < cutoff
            })
            .map(|stored| stored.entry.key.clone())
            .collect();
        let mut collected = Collected::default();
        for stored in self.remove(&keys) {
            let hash = key_hash(&stored.entry.key);
            collected.remembered.push((hash, stored.entry.time));
            collected
                .forgotten
                .extend(self.deletes.remember(hash, stored.entry.time));
        }
        collected.keys = keys;
        collected
    }

    /// Removes these keys (unknown ones are skipped) and returns what was
    /// stored under them.
    pub fn remove(&mut self, keys: &[String]) -> Vec<Stored> {
        let buckets = Arc::make_mut(&mut self.buckets);
        let mut removed = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(stored) = self.entries.remove(key) {
                buckets[bucket_of(key)] ^= stored.entry.hash();
                self.bytes -= stored.bytes();
                removed.push(stored);
            }
        }
        removed
    }
}

/// What [`KvStore::collect_tombstones`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// The keys whose tombstones were collected.
    pub keys: Vec<String>,
    /// The deletes now remembered: key hash and delete time.
    pub remembered: Vec<(u64, u64)>,
    /// Key hashes of remembered deletes forgotten to make room.
    pub forgotten: Vec<u64>,
}

/// The hash a remembered delete is kept under (64-bit xxh3 of the key: a
/// collision between a live key and a deleted one, about 10^-10 at the
/// bound with a million live keys, would refuse an old write of that key).
pub fn key_hash(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

/// Deletes whose tombstones were collected: per key hash, the newest
/// delete's time (see the module docs). Bounded by
/// [`MAX_REMEMBERED_DELETES`]; the oldest deletes are forgotten first.
/// Cloning is O(1), as for the store.
#[derive(Clone, Debug, Default)]
pub struct RememberedDeletes {
    by_key: imbl::OrdMap<u64, u64>,
    /// `(time, key hash)`: the oldest first, for forgetting.
    by_age: imbl::OrdSet<(u64, u64)>,
    /// Forgotten to stay within the bound (not by age), since start.
    forgotten: u64,
}

impl RememberedDeletes {
    /// The time of the delete of `key` remembered, if any.
    pub fn deleted_at(&self, key: &str) -> Option<u64> {
        self.by_key.get(&key_hash(key)).copied()
    }

    /// Remembers a delete (keeping the newest per key); returns the key
    /// hashes forgotten to stay within [`MAX_REMEMBERED_DELETES`].
    pub fn remember(&mut self, hash: u64, time: u64) -> Vec<u64> {
        match self.by_key.get(&hash) {
            Some(&known) if known >= time => return Vec::new(),
            Some(&known) => {
                self.by_age.remove(&(known, hash));
            }
            None => {}
        }
        self.by_key.insert(hash, time);
        self.by_age.insert((time, hash));
        let mut forgotten = Vec::new();
        while self.by_key.len() > MAX_REMEMBERED_DELETES {
            let Some((_, oldest)) = self.by_age.remove_min() else {
                break;
            };
            self.by_key.remove(&oldest);
            self.forgotten += 1;
            forgotten.push(oldest);
        }
        forgotten
    }

    /// Forgets the deletes older than `time` (NTP64); returns their key
    /// hashes.
    pub fn forget_before(&mut self, time: u64) -> Vec<u64> {
        let mut forgotten = Vec::new();
        while let Some(&(oldest, hash)) = self.by_age.get_min() {
            if oldest >= time {
                break;
            }
            self.by_age.remove(&(oldest, hash));
            self.by_key.remove(&hash);
            forgotten.push(hash);
        }
        forgotten
    }

    /// Every remembered delete: key hash and time.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.by_key.iter().map(|(&hash, &time)| (hash, time))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// How many were forgotten to stay within the count bound.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(key: &str, value: &str, time: u64, writer: &str, deleted: bool) -> Arc<KvEntry> {
        Arc::new(KvEntry {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            flags: 0,
            time,
            writer: writer.into(),
            deleted,
        })
    }

    fn arbitrary_entry() -> impl Strategy<Value = Arc<KvEntry>> {
        (0usize..4, 0usize..3, 0u64..5, 0usize..3, any::<bool>()).prop_map(
            |(k, v, time, w, deleted)| {
                entry(
                    ["a", "b", "c/d", "c/e"][k],
                    ["x", "y", ""][v],
                    time,
                    ["n1", "n2", "n3"][w],
                    deleted,
                )
            },
        )
    }

    fn contents(store: &KvStore) -> Vec<KvEntry> {
        store.iter().map(|s| (*s.entry).clone()).collect()
    }

    fn merged(entries: &[Arc<KvEntry>]) -> KvStore {
        let mut store = KvStore::default();
        for entry in entries {
            store.apply(entry.clone());
        }
        store
    }

    #[test]
    fn last_writer_wins_and_ties_break_by_writer() {
        let mut store = KvStore::default();
        assert!(store.apply(entry("k", "old", 1, "n1", false)).is_some());
        assert!(store.apply(entry("k", "new", 2, "n1", false)).is_some());
        assert!(store.apply(entry("k", "stale", 1, "n9", false)).is_none());
        assert!(store.apply(entry("k", "tie", 2, "n2", false)).is_some());
        assert_eq!(store.get("k").unwrap().entry.value, b"tie");
        assert!(store.apply(entry("k", "", 3, "n1", true)).is_some());
        assert_eq!(store.prefix("").count(), 0, "tombstones are not listed");
    }

    #[test]
    fn indexes_follow_local_changes() {
        let mut store = KvStore::default();
        let first = store.apply(entry("k", "1", 1, "n", false)).unwrap();
        assert_eq!((first.create_index, first.modify_index), (1, 1));
        let second = store.apply(entry("k", "2", 2, "n", false)).unwrap();
        assert_eq!((second.create_index, second.modify_index), (1, 2));
        store.apply(entry("k", "", 3, "n", true));
        let recreated = store.apply(entry("k", "3", 4, "n", false)).unwrap();
        assert_eq!((recreated.create_index, recreated.modify_index), (4, 4));
    }

    #[test]
    fn prefix_lists_in_order_and_tombstones_are_collected() {
        let store = merged(&[
            entry("c/e", "1", 1, "n", false),
            entry("c/d", "2", 1, "n", false),
            entry("b", "3", 1, "n", false),
        ]);
        let keys: Vec<&str> = store.prefix("c/").map(|s| s.entry.key.as_str()).collect();
        assert_eq!(keys, ["c/d", "c/e"]);
        let mut store = merged(&[
            entry("old", "", 10, "n", true),
            entry("new", "", 50, "n", true),
            entry("live", "v", 1, "n", false),
        ]);
        assert_eq!(store.collect_tombstones(20).keys, ["old"]);
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.remembered_deletes().deleted_at("old"),
            Some(10),
            "the collected tombstone's time"
        );
        assert_eq!(store.remembered_deletes().deleted_at("new"), None);
        assert_eq!(store.latest_time("old"), 10);
        assert_eq!(store.remove(&["live".into()]).len(), 1);
        assert_eq!(
            store.bucket_hashes(),
            merged(&[entry("new", "", 50, "n", true)]).bucket_hashes()
        );
        assert_eq!(store.bytes(), 3, "the tombstone's key");
    }

    #[test]
    fn a_tombstone_waits_for_the_grace_on_our_clock_too() {
        // Written long ago by a node with a slow clock, received just now.
        let mut store = KvStore::default();
        store.apply_at(entry("k", "", 10, "slow", true), 100);
        assert!(store.collect_tombstones(50).keys.is_empty());
        assert!(store.remembered_deletes().is_empty());
        let collected = store.collect_tombstones(101);
        assert_eq!(collected.keys, ["k"]);
        assert_eq!(collected.remembered, [(key_hash("k"), 10)]);
        store.remembered_deletes_mut().remember(key_hash("k"), 5);
        assert_eq!(
            store.remembered_deletes().deleted_at("k"),
            Some(10),
            "the newest delete is kept"
        );
    }

    #[test]
    fn remembered_deletes_are_bounded_and_forget_the_oldest_first() {
        let mut deletes = RememberedDeletes::default();
        for i in 0..MAX_REMEMBERED_DELETES as u64 {
            assert!(deletes.remember(i, 1000 + i).is_empty());
        }
        // Renewing a key's delete moves it to the young end.
        deletes.remember(0, 10_000_000);
        assert_eq!(deletes.remember(u64::MAX, 5_000_000), [1]);
        assert_eq!(deletes.len(), MAX_REMEMBERED_DELETES);
        assert_eq!(deletes.forgotten(), 1);
        assert_eq!(deletes.forget_before(1003), [2]);
        assert_eq!(deletes.len(), MAX_REMEMBERED_DELETES - 1);
        assert!(
            deletes
                .iter()
                .any(|(hash, time)| (hash, time) == (0, 10_000_000))
        );
    }

    #[test]
    fn bytes_count_keys_and_values() {
        let mut store = KvStore::default();
        store.apply(entry("ab", "xyz", 1, "n", false));
        assert_eq!(store.bytes(), 5);
        let bigger = entry("ab", "wxyz", 2, "n", false);
        assert_eq!(store.bytes_with(&bigger), 6);
        assert_eq!(
            store.bytes_with(&entry("ab", "long-lost", 0, "n", false)),
            5
        );
        store.apply(bigger);
        store.apply(entry("ab", "", 3, "n", true));
        assert_eq!(store.bytes(), 2);
    }

    #[test]
    fn key_limits() {
        assert_eq!(validate_key(""), Err(KvError::EmptyKey));
        assert_eq!(validate_key("/x"), Err(KvError::LeadingSlash));
        assert_eq!(
            validate_key(&"k".repeat(513)),
            Err(KvError::KeyTooLong(513))
        );
        assert!(validate_key("db/pool_size").is_ok());
    }

    proptest! {
        #[test]
        fn any_delivery_order_ends_in_the_same_map(entries in proptest::collection::vec(arbitrary_entry(), 0..16), seed in any::<u64>()) {
            let mut shuffled = entries.clone();
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let a = merged(&entries);
            let b = merged(&shuffled);
            prop_assert_eq!(contents(&a), contents(&b));
            prop_assert_eq!(a.root(), b.root());
        }

        #[test]
        fn merge_is_idempotent(entries in proptest::collection::vec(arbitrary_entry(), 0..16)) {
            let twice: Vec<_> = entries.iter().chain(entries.iter()).cloned().collect();
            prop_assert_eq!(contents(&merged(&entries)), contents(&merged(&twice)));
        }

        #[test]
        fn merging_stores_is_associative_and_commutative(
            a in proptest::collection::vec(arbitrary_entry(), 0..8),
            b in proptest::collection::vec(arbitrary_entry(), 0..8),
            c in proptest::collection::vec(arbitrary_entry(), 0..8),
        ) {
            let union = |x: &KvStore, y: &KvStore| {
                let mut out = x.clone();
                for stored in y.iter() { out.apply(stored.entry.clone()); }
                out
            };
            let (a, b, c) = (merged(&a), merged(&b), merged(&c));
            prop_assert_eq!(contents(&union(&union(&a, &b), &c)), contents(&union(&a, &union(&b, &c))));
            prop_assert_eq!(contents(&union(&a, &b)), contents(&union(&b, &a)));
        }

        #[test]
        fn bucket_exchange_repairs_any_difference(
            a in proptest::collection::vec(arbitrary_entry(), 0..12),
            b in proptest::collection::vec(arbitrary_entry(), 0..12),
        ) {
            // One anti-entropy round between two stores makes them equal.
            let (mut left, mut right) = (merged(&a), merged(&b));
            let differing = right.differing_buckets(left.bucket_hashes());
            let from_right = right.entries_in(&differing);
            let from_left = left.entries_in(&differing);
            for entry in from_right { left.apply(Arc::new(entry)); }
            for entry in from_left { right.apply(Arc::new(entry)); }
            prop_assert_eq!(contents(&left), contents(&right));
            prop_assert_eq!(left.root(), right.root());
        }
    }
}
