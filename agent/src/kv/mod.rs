//! The replicated KV store, the agent's side: timestamps from a hybrid
//! logical clock, durable writes, tombstone collection, and the resync of an
//! agent that was away longer than the tombstone grace period. The merge
//! rules live in `shoal_protocol::kv`.
//!
//! - [`disk`]: the redb database and its writer task.

pub mod disk;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::Node;
use shoal_protocol::keyring::{Key, Keyring, format_key, parse_key};
use shoal_protocol::kv::{KvEntry, KvError, validate_key};
use shoal_protocol::kv::{KvStore, Stored};
use tokio::sync::{mpsc, oneshot};

/// Seconds in NTP64 time (the high 32 bits).
fn ntp64(duration: Duration) -> u64 {
    uhlc::NTP64::from(duration).as_u64()
}

/// A KV write, validated by the caller and handed to the gossip loop with
/// `daemon::handle::AgentHandle::kv_write`.
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

/// The gossip loop's KV state.
pub struct KvState {
    hlc: uhlc::HLC,
    writer: String,
    disk_tx: mpsc::UnboundedSender<disk::Job>,
    grace: Duration,
    /// Set at start when the agent was away longer than the grace period:
    /// entries older than this are dropped before the first exchange.
    stale_before: Option<u64>,
    /// The gossip keyring, kept in step with the `_shoal/keyring` entry.
    keyring: Keyring,
    /// Keys with a write on its way to disk: a `?cas=` on them fails, so two
    /// CAS writes on this agent can't both succeed.
    pending: HashMap<String, usize>,
}

/// The KV key holding the cluster's gossip keyring. Reserved: the `/v1/kv`
/// API refuses it; `/v1/operator/keyring` manages it.
pub const KEYRING_KEY: &str = "_shoal/keyring";

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
        disk_tx: mpsc::UnboundedSender<disk::Job>,
        grace: Duration,
    ) -> Self {
        let id =
            uhlc::ID::try_from(&shoal_protocol::envelope::cluster_id(&writer).to_le_bytes()[..])
                .unwrap_or_else(|_| uhlc::ID::rand());
        Self {
            hlc: uhlc::HLCBuilder::new().with_id(id).build(),
            writer,
            disk_tx,
            grace,
            stale_before: None,
            keyring,
            pending: HashMap::new(),
        }
    }

    /// Applies the cluster's keyring when its KV entry changed: keyring
    /// operations spread as a KV write, sealed with the current keys.
    fn watch_keyring<'a>(&self, changed: impl IntoIterator<Item = &'a Stored>) {
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

    /// Loads what was on disk into the node. If the agent was last in touch
    /// with the cluster longer than the grace period ago, its old entries
    /// are dropped when it next meets a peer (not before: an agent that
    /// stays alone keeps serving what it has).
    pub fn restore(&mut self, node: &mut Node, loaded: disk::Loaded) {
        let count = loaded.entries.len();
        // Entries written ahead but not yet re-saved with their indexes
        // (the agent died in between) get fresh ones, after all the others.
        let (indexed, ahead): (Vec<Stored>, Vec<Stored>) = loaded
            .entries
            .into_iter()
            .partition(|stored| stored.modify_index > 0);
        node.with_kv(|kv| {
            for stored in indexed {
                kv.restore(stored);
            }
            for stored in ahead {
                kv.apply(stored.entry);
            }
        });
        let kv = node.kv();
        for stored in kv.iter() {
            self.observe(stored.entry.time);
        }
        self.watch_keyring(kv.get(KEYRING_KEY));
        if let Some(last_seen) = loaded.last_seen {
            let cutoff = self.now().saturating_sub(ntp64(self.grace));
            if last_seen < cutoff {
                tracing::warn!(
                    "this agent was out of touch longer than the tombstone grace period; \
                     its KV entries older than that are dropped when it rejoins"
                );
                self.stale_before = Some(cutoff);
            }
        }
        tracing::info!(keys = count, "KV store loaded");
    }

    /// Drops stale entries before the first exchange with a peer.
    pub fn before_contact(&mut self, node: &mut Node) {
        if let Some(cutoff) = self.stale_before.take() {
            let removals = node.with_kv(|kv| kv.forget_older_than(cutoff));
            tracing::info!(
                keys = removals.len(),
                "dropped KV entries older than the grace period"
            );
            self.send(disk::Job {
                removals,
                ..disk::Job::default()
            });
        }
    }

    fn observe(&self, time: u64) {
        // A time too far ahead of our clock is refused by uhlc; the entry
        // is still merged, we just don't drag our clock along.
        let _ = self
            .hlc
            .update_with_timestamp(&uhlc::Timestamp::new(uhlc::NTP64(time), *self.hlc.get_id()));
    }

    /// Applies a write from the API.
    pub fn handle(&mut self, node: &mut Node, request: KvRequest) -> Result<KvAck, KvError> {
        self.before_contact_if_connected(node);
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
                .filter(|s| s.entry.key != KEYRING_KEY)
                .map(|s| s.entry.key.clone())
                .collect(),
            KvRequest::Delete { key, .. } => {
                validate_key(key)?;
                kv.get(key)
                    .filter(|s| !s.entry.deleted)
                    .map(|s| vec![s.entry.key.clone()])
                    .unwrap_or_default()
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
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            let previous = kv.get(&key).map(|s| s.entry.time).unwrap_or(0);
            let time = self.now().max(previous + 1);
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
            *self.pending.entry(entry.key.clone()).or_default() += 1;
            entries.push(entry);
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let ahead = entries
            .iter()
            .map(|entry| Stored {
                entry: Arc::new(entry.clone()),
                create_index: 0,
                modify_index: 0,
            })
            .collect();
        self.send(disk::Job {
            upserts: ahead,
            reply: Some(reply_tx),
            ..disk::Job::default()
        });
        Ok(KvAck {
            written: true,
            durable: Some(reply_rx),
            entries,
        })
    }

    /// Finishes a write once the disk answered: applies and gossips it when
    /// it is durable, forgets it otherwise.
    pub fn settle(&mut self, node: &mut Node, entries: Vec<KvEntry>, durable: bool) {
        for entry in entries {
            if let Some(count) = self.pending.get_mut(&entry.key) {
                *count -= 1;
                if *count == 0 {
                    self.pending.remove(&entry.key);
                }
            }
            if durable {
                node.write_kv(entry);
            }
        }
        // `flush` persists the applied entries with their local indexes.
        self.flush(node);
    }

    fn before_contact_if_connected(&mut self, node: &mut Node) {
        if node.active_members() > 0 {
            self.before_contact(node);
        }
    }

    /// Persists what peers' writes changed since the last call.
    pub fn flush(&mut self, node: &mut Node) {
        self.before_contact_if_connected(node);
        let applied = node.take_kv_applied();
        if applied.is_empty() {
            return;
        }
        for stored in &applied {
            self.observe(stored.entry.time);
        }
        self.watch_keyring(&applied);
        self.send(disk::Job {
            upserts: applied,
            ..disk::Job::default()
        });
    }

    /// Collects old tombstones and notes that we are in touch.
    pub fn housekeeping(&mut self, node: &mut Node) {
        let now = self.now();
        let cutoff = now.saturating_sub(ntp64(self.grace));
        let removals = node.with_kv(|kv| kv.collect_tombstones(cutoff));
        let last_seen = (node.active_members() > 0 && self.stale_before.is_none()).then_some(now);
        if !removals.is_empty() || last_seen.is_some() {
            self.send(disk::Job {
                removals,
                last_seen,
                ..disk::Job::default()
            });
        }
    }

    fn send(&self, job: disk::Job) {
        if let Err(error) = self.disk_tx.send(job)
            && let Some(reply) = error.0.reply
        {
            let _ = reply.send(Err("the agent is shutting down".into()));
        }
    }
}
