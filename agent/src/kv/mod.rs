//! The replicated KV store, the agent's side: timestamps from a hybrid
//! logical clock bounded by `max_clock_drift`, durable writes, and the
//! persistence of tombstone collection and of the deletes remembered
//! after it, and the quarantine of values a remembered delete replaced.
//! The merge rules, the remembered-delete rule and the checks on peers'
//! entries live in `shoal_protocol::kv` and `shoal_protocol::state`.
//!
//! - [`disk`]: the redb database and its writer task.
//! - [`quarantine`]: values a remembered delete replaced, kept for the
//!   operator.

pub mod counters;
pub mod disk;
pub mod quarantine;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_protocol::Node;
use shoal_protocol::clock::ntp64;
use shoal_protocol::keyring::{Key, Keyring, format_key, parse_key};
use shoal_protocol::kv::{KvEntry, KvError, validate_key};
use shoal_protocol::kv::{KvStore, Stored};
use tokio::sync::{mpsc, oneshot};

/// The wall clock as the protocol core takes it: time since the Unix epoch.
pub fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A KV write, validated by the caller and handed to the core loop with
/// `handle::AgentHandle::kv_write`.
#[derive(Debug)]
pub enum KvRequest {
    Put {
        key: String,
        value: Vec<u8>,
        flags: u64,
        /// Consul's `?cas=`: write only if the key's ModifyIndex is this
        /// (0: only if the key does not exist).
        cas: Option<u64>,
    },
    Delete {
        key: String,
        recurse: bool,
        cas: Option<u64>,
    },
}

/// The loop's answer to a write: whether it happened, and a receiver that
/// completes once it is durable on disk.
pub struct KvAck {
    pub written: bool,
    pub durable: Option<oneshot::Receiver<Result<(), String>>>,
    /// The entries written ahead to disk: the agent's handle gives them back
    /// to the loop ([`KvState::settle`]) once the disk answered, and only
    /// then are they applied and gossiped. A write that could not be made
    /// durable is never seen by anyone.
    pub entries: Vec<KvEntry>,
}

/// The core loop's KV state.
pub struct KvState {
    hlc: uhlc::HLC,
    writer: String,
    disk_tx: mpsc::Sender<disk::Job>,
    /// Jobs that found the channel full (see [`disk::Backlog`]).
    backlog: disk::Backlog,
    grace: Duration,
    /// How far ahead of the wall clock a write may be stamped.
    max_clock_drift: Duration,
    /// The quota flag as last saved (see `Node::kv_incomplete`).
    saved_quota_refused: bool,
    /// The gossip keyring, kept in step with the `_shoal/keyring` entry.
    keyring: Keyring,
    /// Keys with a write on its way to disk: a `?cas=` on them fails, so two
    /// CAS writes on this agent can't both succeed.
    pending: HashMap<String, usize>,
    /// Local writes by result, and the disk writer's commits.
    pub counters: Arc<crate::kv::counters::KvCounters>,
    /// Values a remembered delete replaced (shared with the API).
    pub quarantine: Arc<quarantine::Quarantine>,
}

/// The KV key holding the cluster's gossip keyring. Reserved: the `/v1/kv`
/// API refuses it; `/v1/operator/keyring` manages it.
pub const KEYRING_KEY: &str = "_shoal/keyring";

/// Whether `key` is reserved, hence never shown, read, written nor deleted
/// through `/v1/kv`, templates, watches or the quarantine list: every key
/// under [`KEYRING_KEY`] (the one rule; only `/v1/operator/keyring` reaches
/// the keyring).
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(KEYRING_KEY)
}

/// Where the keyring in force comes from, for `/v1/agent/self` and the
/// start-up log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyringOrigin {
    /// `"kv"`: the replicated `_shoal/keyring` entry (written by a keyring
    /// operation, kept across restarts); `"config"`: `encrypt` alone;
    /// `"none"`: gossip is not encrypted.
    pub source: &'static str,
    /// The stored keyring's primary key is not the configured `encrypt`
    /// key (or none is configured): `encrypt` does not decide the key in use.
    pub overrides_configured_key: bool,
}

/// Where `in_force` comes from, given the configured key and the KV store.
pub fn keyring_origin(configured: Option<&Key>, in_force: &Keyring, kv: &KvStore) -> KeyringOrigin {
    let stored = kv
        .get(KEYRING_KEY)
        .is_some_and(|stored| !stored.entry.deleted);
    let (_, primary) = in_force.list();
    let source = match (stored, configured) {
        (true, _) => "kv",
        (false, Some(_)) => "config",
        (false, None) => "none",
    };
    KeyringOrigin {
        source,
        overrides_configured_key: stored && primary.as_ref() != configured,
    }
}

/// The keyring as stored under [`KEYRING_KEY`].
#[derive(Debug, PartialEq, Eq)]
pub struct KeyringState {
    pub primary: Key,
    /// Every installed key, the primary included.
    pub keys: Vec<Key>,
}

impl KeyringState {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::json!({
            "primary": format_key(&self.primary),
            "keys": self.keys.iter().map(format_key).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let key = |v: &serde_json::Value| {
            v.as_str()
                .ok_or_else(|| "keys must be strings".to_string())
                .and_then(|t| parse_key(t).map_err(|e| e.to_string()))
        };
        let primary = key(&value["primary"])?;
        let keys = value["keys"]
            .as_array()
            .ok_or("`keys` must be a list")?
            .iter()
            .map(key)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { primary, keys })
    }
}

impl KvState {
    pub fn new(
        keyring: Keyring,
        writer: String,
        disk_tx: mpsc::Sender<disk::Job>,
        grace: Duration,
        max_clock_drift: Duration,
    ) -> Self {
        let id =
            uhlc::ID::try_from(&shoal_protocol::envelope::cluster_id(&writer).to_le_bytes()[..])
                .unwrap_or_else(|_| uhlc::ID::rand());
        // uhlc follows a peer's time only up to this far ahead of ours:
        // the same bound peers' entries are held to.
        let hlc = uhlc::HLCBuilder::new()
            .with_id(id)
            .with_max_delta(max_clock_drift)
            .build();
        Self {
            hlc,
            writer,
            quarantine: Arc::new(quarantine::Quarantine::new(disk_tx.clone())),
            disk_tx,
            backlog: disk::Backlog::default(),
            grace,
            max_clock_drift,
            saved_quota_refused: false,
            counters: Arc::default(),
            keyring,
            pending: HashMap::new(),
        }
    }

    /// Applies the cluster's keyring when its KV entry changed: keyring
    /// operations spread as a KV write, sealed with the current keys.
    fn apply_keyring_entry<'a>(&self, changed: impl IntoIterator<Item = &'a Stored>) {
        for stored in changed {
            if stored.entry.key != KEYRING_KEY || stored.entry.deleted {
                continue;
            }
            match KeyringState::decode(&stored.entry.value) {
                Ok(state) => {
                    self.keyring.replace(state.primary, &state.keys);
                    tracing::info!(keys = state.keys.len(), "gossip keyring updated");
                }
                Err(error) => tracing::error!(%error, "ignoring an invalid keyring entry"),
            }
        }
    }

    fn now(&self) -> u64 {
        self.hlc.new_timestamp().get_time().as_u64()
    }

    /// Loads what was on disk into the node, with its remembered deletes,
    /// and the quarantine. However long the agent was away, nothing is
    /// dropped here: an entry goes only when a newer write or delete of its
    /// key arrives (see `shoal_protocol::kv`).
    pub fn restore(&mut self, node: &mut Node, loaded: disk::Loaded) {
        let count = loaded.entries.len();
        node.set_clock(wall_clock());
        let received = ntp64(wall_clock());
        // Entries written ahead but not yet re-saved with their indexes
        // (the agent died in between) get fresh ones, after all the others.
        let (indexed, ahead): (Vec<Stored>, Vec<Stored>) = loaded
            .entries
            .into_iter()
            .partition(|stored| stored.modify_index > 0);
        let mut forgotten = Vec::new();
        node.with_kv(|kv| {
            for stored in indexed {
                kv.restore(stored);
            }
            for stored in ahead {
                kv.apply_at(stored.entry, received);
            }
            for &(hash, time) in &loaded.remembered {
                forgotten.extend(kv.remembered_deletes_mut().remember(hash, time));
            }
        });
        if !forgotten.is_empty() {
            // Past the bound on disk: forget them there too, or the table
            // would grow across restarts.
            tracing::info!(
                forgotten = forgotten.len(),
                "remembered KV deletes past the bound forgotten at start-up (the oldest)"
            );
            self.send(disk::Job {
                forgotten,
                ..disk::Job::default()
            });
        }
        self.quarantine
            .restore(loaded.quarantine, loaded.quarantine_gone_through);
        node.set_kv_incomplete(loaded.quota_refused);
        self.saved_quota_refused = loaded.quota_refused;
        let kv = node.kv();
        for stored in kv.iter() {
            self.observe(stored.entry.time);
        }
        self.apply_keyring_entry(kv.get(KEYRING_KEY));
        tracing::info!(
            keys = count,
            bytes = kv.bytes(),
            deletes_remembered = kv.remembered_deletes().len(),
            quarantined = self.quarantine.held(),
            "KV store loaded"
        );
    }

    fn observe(&self, time: u64) {
        // A time too far ahead of our clock is refused by uhlc; the entry
        // is still merged, we just don't drag our clock along.
        let _ = self
            .hlc
            .update_with_timestamp(&uhlc::Timestamp::new(uhlc::NTP64(time), *self.hlc.get_id()));
    }

    /// Writes a request ahead to disk (applied by [`KvState::settle`] once
    /// durable). Refused, with nothing written: bad keys and values, a
    /// write that would take the store past `kv.max_bytes`, and one on a
    /// key whose time is too far ahead to stamp a later write.
    pub fn handle(&mut self, node: &mut Node, request: KvRequest) -> Result<KvAck, KvError> {
        use crate::kv::counters::WriteResult;
        let result = self.write_ahead(node, request);
        self.counters.write(match &result {
            Ok(ack) if ack.written => WriteResult::Accepted,
            Ok(_) => WriteResult::CasMismatch,
            Err(_) => WriteResult::Refused,
        });
        result
    }

    fn write_ahead(&mut self, node: &mut Node, request: KvRequest) -> Result<KvAck, KvError> {
        let kv = node.kv();
        let keys: Vec<String> = match &request {
            KvRequest::Put { key, value, .. } => {
                validate_key(key)?;
                if value.len() > shoal_protocol::kv::MAX_VALUE {
                    return Err(KvError::ValueTooLarge(value.len()));
                }
                vec![key.clone()]
            }
            KvRequest::Delete {
                key, recurse: true, ..
            } => kv
                .prefix(key)
                .filter(|s| !is_reserved(&s.entry.key))
                .map(|s| s.entry.key.clone())
                .collect(),
            // Always a tombstone, even for a key we don't hold live: a
            // write acknowledged elsewhere may still be on its way here, and
            // a delete issued after it must win wherever it arrives.
            KvRequest::Delete { key, .. } => {
                validate_key(key)?;
                vec![key.clone()]
            }
        };
        let (target, cas) = match &request {
            KvRequest::Put { key, cas, .. } | KvRequest::Delete { key, cas, .. } => (key, *cas),
        };
        if let Some(cas) = cas {
            let current = kv
                .get(target)
                .filter(|s| !s.entry.deleted)
                .map(|s| s.modify_index)
                .unwrap_or(0);
            if current != cas || self.pending.contains_key(target) {
                return Ok(KvAck {
                    written: false,
                    durable: None,
                    entries: Vec::new(),
                });
            }
        }
        let latest = ntp64(wall_clock().saturating_add(self.max_clock_drift));
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            // Past a remembered delete too, or a peer would hand it back
            // over this write.
            let previous = kv.latest_time(&key);
            let time = previous
                .checked_add(1)
                .map(|after| self.now().max(after))
                .filter(|&time| time <= latest)
                .ok_or(KvError::TimeFromTheFuture)?;
            let entry = match &request {
                KvRequest::Put { value, flags, .. } => KvEntry {
                    key,
                    value: value.clone(),
                    flags: *flags,
                    time,
                    writer: self.writer.clone(),
                    deleted: false,
                },
                KvRequest::Delete { .. } => KvEntry {
                    key,
                    value: Vec::new(),
                    flags: 0,
                    time,
                    writer: self.writer.clone(),
                    deleted: true,
                },
            };
            entries.push(entry);
        }
        if let [entry] = &entries[..] {
            let needed = kv.bytes_with(entry);
            let max_bytes = node.kv_max_bytes();
            if needed > max_bytes && needed > kv.bytes() {
                return Err(KvError::QuotaExceeded { needed, max_bytes });
            }
        }
        for entry in &entries {
            *self.pending.entry(entry.key.clone()).or_default() += 1;
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let received = ntp64(wall_clock());
        let ahead = entries
            .iter()
            .map(|entry| Stored {
                entry: Arc::new(entry.clone()),
                create_index: 0,
                modify_index: 0,
                received,
            })
            .collect();
        self.send(disk::Job {
            upserts: ahead,
            replies: vec![reply_tx],
            ..disk::Job::default()
        });
        Ok(KvAck {
            written: true,
            durable: Some(reply_rx),
            entries,
        })
    }

    /// Finishes a write once the disk answered: applies and gossips it when
    /// it is durable, forgets it otherwise. An entry the node does not take
    /// (a newer write to the key arrived meanwhile, or peers' entries filled
    /// the quota) is not applied: the first such refusal is returned, and
    /// the disk gets back what memory holds for the key, since the
    /// write-ahead replaced it.
    pub fn settle(
        &mut self,
        node: &mut Node,
        entries: Vec<KvEntry>,
        durable: bool,
    ) -> Result<(), KvError> {
        let mut outcome = Ok(());
        let mut rewrite = Vec::new();
        for entry in entries {
            if let Some(count) = self.pending.get_mut(&entry.key) {
                *count -= 1;
                if *count == 0 {
                    self.pending.remove(&entry.key);
                }
            }
            if !durable {
                continue;
            }
            let key = entry.key.clone();
            if let Err(error) = node.write_kv(entry) {
                rewrite.push(key);
                if outcome.is_ok() {
                    outcome = Err(error);
                }
            }
        }
        // `flush` persists the applied entries with their local indexes.
        self.flush(node);
        if !rewrite.is_empty() {
            let kv = node.kv();
            let (upserts, removals): (Vec<Stored>, Vec<String>) = (
                rewrite
                    .iter()
                    .filter_map(|key| kv.get(key).cloned())
                    .collect(),
                rewrite
                    .iter()
                    .filter(|key| kv.get(key).is_none())
                    .cloned()
                    .collect(),
            );
            self.send(disk::Job {
                upserts,
                removals,
                ..disk::Job::default()
            });
        }
        outcome
    }

    /// Persists what changed in the store since the last call: entries
    /// applied (by anyone), values a delete handed back by a peer replaced
    /// (quarantined, with a WARN line naming their keys), and the quota
    /// flag; and hands the writer what waited for room.
    pub fn flush(&mut self, node: &mut Node) {
        self.send(disk::Job::default());
        let applied = node.take_kv_applied();
        let replaced = node.take_kv_quarantined();
        let quota_refused = node.kv_incomplete();
        let quota_changed = quota_refused != self.saved_quota_refused;
        if applied.is_empty() && replaced.is_empty() && !quota_changed {
            return;
        }
        for stored in &applied {
            self.observe(stored.entry.time);
        }
        self.apply_keyring_entry(&applied);
        let (quarantined, quarantine_gone_through) = if replaced.is_empty() {
            (Vec::new(), None)
        } else {
            let keys: Vec<&str> = replaced
                .iter()
                .map(|(entry, _)| entry.key.as_str())
                .collect();
            tracing::warn!(
                keys = ?keys,
                "a peer handed back deletes of KV keys this agent still held (it missed them: \
                 a partition or outage longer than kv.tombstone_grace); the values it held are \
                 in the quarantine: GET /v1/shoal/kv/quarantine or `shoal kv quarantine`"
            );
            self.quarantine.add(replaced, ntp64(wall_clock()))
        };
        if quota_changed {
            if quota_refused {
                tracing::warn!(
                    "the KV store refused a peer's entry: it would exceed kv.max_bytes; \
                     this agent lacks some of the cluster's keys until there is room"
                );
            }
            self.saved_quota_refused = quota_refused;
        }
        self.send(disk::Job {
            upserts: applied,
            quota_refused: quota_changed.then_some(quota_refused),
            quarantine: quarantined,
            quarantine_gone_through,
            ..disk::Job::default()
        });
    }

    /// Collects the tombstones older than the grace period (when the node
    /// is in touch; see `Node::collect_tombstones`) and saves them gone
    /// together with the deletes remembered (and forgotten) for them.
    pub fn housekeeping(&mut self, node: &mut Node) {
        let removals = node.collect_tombstones(self.grace);
        let deletes = node.take_deletes_changed();
        if removals.is_empty() && deletes.remembered.is_empty() && deletes.forgotten.is_empty() {
            return;
        }
        tracing::debug!(
            keys = removals.len(),
            forgotten = deletes.forgotten.len(),
            "collected KV tombstones"
        );
        self.send(disk::Job {
            removals,
            remembered: deletes.remembered,
            forgotten: deletes.forgotten,
            ..disk::Job::default()
        });
    }

    /// Hands a job to the writer without waiting: behind the backlog if
    /// there is one (order matters), into the backlog if the channel is
    /// full.
    fn send(&mut self, job: disk::Job) {
        let job = if self.backlog.is_empty() {
            job
        } else {
            self.backlog.push(job);
            self.backlog.take()
        };
        if job.is_empty() {
            return;
        }
        match self.disk_tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                if self.backlog.is_empty() {
                    tracing::debug!("the KV disk writer is behind; coalescing its jobs");
                }
                self.backlog.push(job);
            }
            Err(mpsc::error::TrySendError::Closed(job)) => {
                for reply in job.replies {
                    let _ = reply.send(Err("the agent is shutting down".into()));
                }
            }
        }
    }

    /// Keys whose write waits for room in the writer's queue.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::envelope::cluster_id;
    use shoal_protocol::{Envelope, GossipConfig, NodeId, NodeRecord};

    #[test]
    fn every_key_under_the_keyring_key_is_reserved() {
        assert!(is_reserved(KEYRING_KEY));
        assert!(is_reserved("_shoal/keyring/old"));
        assert!(is_reserved("_shoal/keyring-backup"));
        assert!(!is_reserved("_shoal/keyrin"));
        assert!(!is_reserved("_shoal/flags/keyring"));
        assert!(!is_reserved("app/_shoal/keyring"));
    }

    fn node() -> Node {
        let id = NodeId {
            addr: "127.0.0.1:7946".parse().unwrap(),
            generation: 1,
        };
        Node::new(
            NodeRecord::new(id, "n"),
            GossipConfig::default(),
            Envelope::new(cluster_id("test")),
            1,
        )
    }

    fn kv_state(disk_tx: mpsc::Sender<disk::Job>) -> KvState {
        KvState::new(
            Keyring::default(),
            "n".into(),
            disk_tx,
            Duration::from_secs(60),
            Duration::from_secs(30),
        )
    }

    /// Deletes on disk past the bound (a database written with a larger
    /// bound, or one the writer did not trim before a crash) are forgotten
    /// on disk too at start-up, the oldest first, so the table can't grow
    /// across restarts.
    #[test]
    fn remembered_deletes_past_the_bound_at_start_up_are_removed_from_disk() {
        let (disk_tx, mut disk_rx) = mpsc::channel(8);
        let mut kv = kv_state(disk_tx);
        let mut node = node();
        let max = shoal_protocol::kv::MAX_REMEMBERED_DELETES as u64;
        let now = ntp64(wall_clock());
        // Hash i deleted at now - i: the highest hashes are the oldest.
        let remembered: Vec<(u64, u64)> = (0..max + 5).map(|i| (i, now - i)).collect();
        kv.restore(
            &mut node,
            disk::Loaded {
                entries: Vec::new(),
                remembered,
                quota_refused: false,
                quarantine: Vec::new(),
                quarantine_gone_through: 0,
            },
        );
        assert_eq!(node.kv().remembered_deletes().len(), max as usize);
        let mut forgotten: Vec<u64> = std::iter::from_fn(|| disk_rx.try_recv().ok())
            .flat_map(|job| job.forgotten)
            .collect();
        forgotten.sort_unstable();
        assert_eq!(forgotten, (max..max + 5).collect::<Vec<_>>());
    }

    #[test]
    fn a_slow_disk_never_blocks_and_costs_one_pending_write_per_key() {
        let (disk_tx, mut disk_rx) = mpsc::channel(2);
        let mut kv = kv_state(disk_tx);
        let mut node = node();
        // 10,000 changes to 10 keys while the writer takes nothing.
        for round in 0..10_000u64 {
            node.write_kv(KvEntry {
                key: format!("k{}", round % 10),
                value: round.to_string().into_bytes(),
                flags: 0,
                time: round + 1,
                writer: "n".into(),
                deleted: false,
            })
            .expect("a newer write is applied");
            kv.flush(&mut node);
        }
        assert!(kv.backlog() <= 10, "{} keys held", kv.backlog());

        // The writer catches up: what it gets, in order, ends in the state
        // the node holds.
        let mut disk: HashMap<String, Vec<u8>> = HashMap::new();
        for _ in 0..100 {
            while let Ok(job) = disk_rx.try_recv() {
                for stored in job.upserts {
                    disk.insert(stored.entry.key.clone(), stored.entry.value.clone());
                }
                for key in job.removals {
                    disk.remove(&key);
                }
            }
            kv.flush(&mut node);
            if kv.backlog() == 0 && disk_rx.is_empty() {
                break;
            }
        }
        let held: HashMap<String, Vec<u8>> = node
            .kv()
            .iter()
            .map(|s| (s.entry.key.clone(), s.entry.value.clone()))
            .collect();
        assert_eq!(disk, held);
    }
}
