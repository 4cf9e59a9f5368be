//! The KV quarantine: live values that a remembered delete overwrote (see
//! `shoal_protocol::kv`, "Remembered deletes"). A peer that collected a
//! key's tombstone remembers the delete; when it meets a node that still
//! holds an older value of that key (it missed the delete: a partition or
//! an outage longer than `kv.tombstone_grace`), it hands the delete back,
//! and that node's value is replaced by it. That is last-writer-wins doing
//! what it would have done had the tombstone not been collected, but the
//! value may have been served for a long time: it goes here first, with a
//! WARN line naming its key, so an operator can read it back
//! (`GET /v1/shoal/kv/quarantine`, `shoal kv quarantine`) and write it
//! again if the delete was a mistake.
//!
//! Bounded by [`MAX_ITEMS`] and [`MAX_BYTES`]: past them the oldest go
//! first (counted). Persisted in the KV database (`kv::disk`), so it
//! survives a restart, until an operator clears it (`DELETE`, or
//! `shoal kv quarantine --clear`).
//!
//! Items carry increasing sequence numbers, and what is gone (cleared or
//! evicted) is always the oldest: the disk keeps one watermark, "every
//! item up to this sequence is gone", so a clear and the writes of new
//! items never need to reach the disk in a particular order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bincode::{Decode, Encode};
use serde_json::{Value, json};
use shoal_protocol::kv::{KvEntry, entry_bytes};
use tokio::sync::mpsc;

use crate::metrics::{Counters, Exposition};

/// Most values held.
pub const MAX_ITEMS: usize = 1024;
/// Most key and value bytes held (a value is at most 512 KiB).
pub const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// One quarantined value.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Quarantined {
    /// Order of arrival; what the disk's watermark compares.
    pub seq: u64,
    /// The live entry that was replaced, as it was.
    pub entry: KvEntry,
    /// The time of the delete that replaced it (NTP64).
    pub deleted_at: u64,
    /// When this agent quarantined it (NTP64, its own clock).
    pub quarantined_at: u64,
}

#[derive(Default)]
struct Held {
    /// Shared with readers: a list copies pointers, not values, under the
    /// lock the core loop takes to add.
    items: VecDeque<Arc<Quarantined>>,
    bytes: u64,
    next_seq: u64,
    /// Every item with a sequence up to this one is gone.
    gone_through: u64,
}

/// The quarantine, shared by the core loop (which adds to it) and the
/// API (which reads and clears it).
pub struct Quarantine {
    held: Mutex<Held>,
    disk_tx: mpsc::Sender<super::disk::Job>,
    quarantined: AtomicU64,
    evicted: AtomicU64,
    cleared: AtomicU64,
}

impl Quarantine {
    pub fn new(disk_tx: mpsc::Sender<super::disk::Job>) -> Self {
        Self {
            held: Mutex::default(),
            disk_tx,
            quarantined: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().expect("quarantine lock poisoned")
    }

    /// Takes back what the disk held at start.
    pub fn restore(&self, mut items: Vec<Quarantined>, gone_through: u64) {
        items.retain(|item| item.seq > gone_through);
        items.sort_by_key(|item| item.seq);
        let mut held = self.lock();
        held.gone_through = held.gone_through.max(gone_through);
        held.next_seq = items
            .last()
            .map_or(held.gone_through, |item| item.seq)
            .max(held.next_seq);
        for item in items {
            held.bytes += entry_bytes(&item.entry);
            held.items.push_back(Arc::new(item));
        }
        evict(&mut held);
    }

    /// Quarantines `entries` (each with the delete time that replaced it,
    /// at `now`); returns the items to persist and, when the bounds evicted
    /// some, the new watermark.
    pub fn add(
        &self,
        entries: impl IntoIterator<Item = (KvEntry, u64)>,
        now: u64,
    ) -> (Vec<Quarantined>, Option<u64>) {
        let mut held = self.lock();
        let mut added = Vec::new();
        for (entry, deleted_at) in entries {
            held.next_seq += 1;
            let item = Quarantined {
                seq: held.next_seq,
                entry,
                deleted_at,
                quarantined_at: now,
            };
            held.bytes += entry_bytes(&item.entry);
            held.items.push_back(Arc::new(item.clone()));
            added.push(item);
        }
        self.quarantined.fetch_add(added.len() as u64, Relaxed);
        let before = held.gone_through;
        let evicted = evict(&mut held);
        self.evicted.fetch_add(evicted, Relaxed);
        let gone = (held.gone_through != before).then_some(held.gone_through);
        added.retain(|item| item.seq > held.gone_through);
        (added, gone)
    }

    /// What is held, oldest first.
    pub fn list(&self) -> Vec<Arc<Quarantined>> {
        self.lock().items.iter().cloned().collect()
    }

    /// How many values are held.
    pub fn held(&self) -> usize {
        self.lock().items.len()
    }

    /// Forgets everything held, on disk too (answers once the disk has the
    /// job in its queue); returns how many values were dropped.
    pub async fn clear(&self) -> Result<usize, String> {
        let (count, gone_through) = {
            let mut held = self.lock();
            let count = held.items.len();
            held.items.clear();
            held.bytes = 0;
            held.gone_through = held.next_seq;
            (count, held.gone_through)
        };
        self.cleared.fetch_add(count as u64, Relaxed);
        let job = super::disk::Job {
            quarantine_gone_through: Some(gone_through),
            ..super::disk::Job::default()
        };
        self.disk_tx
            .send(job)
            .await
            .map_err(|_| "the agent is shutting down".to_string())?;
        Ok(count)
    }

    /// For `/v1/agent/self` (Stats.kv).
    pub fn json(&self) -> Value {
        let held = self.lock();
        json!({
            "held": held.items.len(),
            "bytes": held.bytes,
            "quarantined": self.quarantined.load(Relaxed),
            "evicted": self.evicted.load(Relaxed),
            "cleared": self.cleared.load(Relaxed),
        })
    }
}

/// Drops the oldest items past the bounds; returns how many.
fn evict(held: &mut Held) -> u64 {
    let mut evicted = 0;
    while held.items.len() > MAX_ITEMS || held.bytes > MAX_BYTES {
        let Some(oldest) = held.items.pop_front() else {
            break;
        };
        held.bytes -= entry_bytes(&oldest.entry);
        held.gone_through = held.gone_through.max(oldest.seq);
        evicted += 1;
    }
    evicted
}

impl Counters for Quarantine {
    fn prefix(&self) -> &'static str {
        "shoal_kv_"
    }

    fn visit(&self, out: &mut Exposition) {
        let held = self.lock().items.len();
        out.counter(
            "shoal_kv_quarantined_total",
            "Live KV values a remembered delete replaced, kept in the quarantine.",
            self.quarantined.load(Relaxed),
        );
        out.counter(
            "shoal_kv_quarantine_evicted_total",
            "Quarantined KV values dropped to stay within the quarantine's bounds.",
            self.evicted.load(Relaxed),
        );
        out.gauge(
            "shoal_kv_quarantine_values",
            "KV values held in the quarantine now.",
            held as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, bytes: usize) -> KvEntry {
        KvEntry {
            key: key.into(),
            value: vec![b'v'; bytes],
            flags: 0,
            time: 1,
            writer: "w".into(),
            deleted: false,
        }
    }

    #[test]
    fn the_oldest_go_first_past_the_bounds_and_the_watermark_follows() {
        let (disk_tx, _disk_rx) = mpsc::channel(4);
        let quarantine = Quarantine::new(disk_tx);
        let (added, gone) = quarantine.add([(entry("a", 1), 5)], 9);
        assert_eq!((added.len(), gone), (1, None));
        let many = (0..MAX_ITEMS).map(|i| (entry(&format!("k{i}"), 1), 5));
        let (added, gone) = quarantine.add(many, 9);
        assert_eq!(added.len(), MAX_ITEMS);
        assert_eq!(gone, Some(1), "`a` was evicted");
        let held = quarantine.list();
        assert_eq!(held.len(), MAX_ITEMS);
        assert_eq!(held[0].entry.key, "k0");
        // Big values: the byte bound.
        let big = (0..40).map(|i| (entry(&format!("big{i}"), 500_000), 5));
        quarantine.add(big, 9);
        let bytes: u64 = quarantine
            .list()
            .iter()
            .map(|q| entry_bytes(&q.entry))
            .sum();
        assert!(bytes <= MAX_BYTES, "{bytes}");
        assert_eq!(quarantine.json()["quarantined"], json!(MAX_ITEMS + 41));
    }

    #[test]
    fn a_restore_keeps_only_what_is_past_the_watermark() {
        let (disk_tx, _disk_rx) = mpsc::channel(4);
        let quarantine = Quarantine::new(disk_tx);
        let item = |seq| Quarantined {
            seq,
            entry: entry(&format!("k{seq}"), 1),
            deleted_at: 2,
            quarantined_at: 3,
        };
        quarantine.restore(vec![item(3), item(1), item(2)], 1);
        let keys: Vec<String> = quarantine
            .list()
            .iter()
            .map(|q| q.entry.key.clone())
            .collect();
        assert_eq!(keys, ["k2", "k3"]);
        let (added, _) = quarantine.add([(entry("new", 1), 5)], 9);
        assert_eq!(
            added[0].seq, 4,
            "sequences continue after the restored ones"
        );
    }
}
