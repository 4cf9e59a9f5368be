//! The KV store on disk: an embedded redb database in the data dir.
//!
//! One task writes, in order, off the core loop. A local write is
//! acknowledged to its client only after the transaction holding it has
//! committed (redb commits are durable: fsync'd), so an acknowledged write
//! survives SIGKILL and power loss. Entries learned from peers are written
//! the same way, without anyone waiting; if the agent dies first,
//! anti-entropy brings them back.
//!
//! Besides the entries (table `kv`), the database keeps the deletes
//! remembered after their tombstones were collected (table `kv_deletes`:
//! key hash to delete time, see `shoal_protocol::kv`), the quarantine
//! (table `kv_quarantine`, see [`super::quarantine`]), and in the `meta`
//! table whether the quota ever refused a peer's entry and up to which
//! sequence the quarantine was cleared. Rows without their received time
//! (written before it existed) load with 0 (collected on their write time
//! alone).
//!
//! Version 1 of this database (before the remembered deletes) kept a
//! collection horizon in `meta`; it is removed at open: this version
//! ignores it, and a version-1 agent started on this data dir again then
//! vouches for nothing (it drops nothing because of a horizon). Version 1
//! ignores the two new tables.
//!
//! The core loop hands jobs over a bounded channel ([`QUEUE`] jobs) and
//! never waits for room: when the channel is full, jobs pile up in a
//! [`Backlog`] where the last operation on each key wins, so a slow disk
//! costs at most one pending operation per key (peers' entries are shared
//! with the in-memory store, not copied). Local writes wait for room before
//! they reach the loop (see `AgentHandle::kv_write`), so clients feel a slow disk
//! instead of the agent's memory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bincode::{Decode, Encode};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use shoal_protocol::codec;
use shoal_protocol::kv::{KvEntry, Stored};

use super::quarantine::Quarantined;
use tokio::sync::{mpsc, oneshot};

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Remembered deletes: key hash to delete time (NTP64).
const DELETES: TableDefinition<u64, u64> = TableDefinition::new("kv_deletes");
/// Quarantined values by sequence (see [`super::quarantine`]).
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("kv_quarantine");
/// Version 1's collection horizon: removed at open.
const LEGACY_HORIZON: &str = "horizon";
/// 1 once the quota refused a peer's entry (see `Node::kv_incomplete`).
const QUOTA_REFUSED: &str = "quota_refused";
/// Every quarantined value up to this sequence is gone (cleared or
/// evicted).
const QUARANTINE_GONE_THROUGH: &str = "quarantine_gone_through";
/// Written by earlier versions (when the agent was last in touch); no
/// longer used, removed at open.
const LEGACY_LAST_SEEN: &str = "last_seen";

/// File name in the data dir.
pub const FILE: &str = "kv.redb";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("KV database {path}: {message}")]
    Open { path: String, message: String },
    #[error("KV database: {0}")]
    Io(String),
}

fn io(error: impl std::fmt::Display) -> DiskError {
    DiskError::Io(error.to_string())
}

#[derive(Encode, Decode)]
struct Row {
    entry: KvEntry,
    create_index: u64,
    modify_index: u64,
    /// When this agent applied the entry (NTP64).
    received: u64,
}

/// A row as written before `received` existed.
#[derive(Encode, Decode)]
struct RowWithoutReceived {
    entry: KvEntry,
    create_index: u64,
    modify_index: u64,
}

fn decode_row(bytes: &[u8]) -> Result<Row, codec::DecodeError> {
    // An old row is one field short, a new one has bytes past an old one:
    // neither decodes as the other.
    codec::decode_frame::<Row>(bytes).or_else(|error| {
        codec::decode_frame::<RowWithoutReceived>(bytes)
            .map(|old| Row {
                entry: old.entry,
                create_index: old.create_index,
                modify_index: old.modify_index,
                received: 0,
            })
            .map_err(|_| error)
    })
}

/// What the database held at start.
pub struct Loaded {
    pub entries: Vec<Stored>,
    /// Remembered deletes: key hash and delete time.
    pub remembered: Vec<(u64, u64)>,
    /// Whether the quota had refused a peer's entry.
    pub quota_refused: bool,
    /// The quarantine, and the sequence up to which it is gone.
    pub quarantine: Vec<Quarantined>,
    pub quarantine_gone_through: u64,
}

/// Opens (or creates) the database and reads everything back.
pub fn open(dir: &Path) -> Result<(Arc<Database>, Loaded), DiskError> {
    let path = dir.join(FILE);
    let database = Database::create(&path).map_err(|error| DiskError::Open {
        path: path.display().to_string(),
        message: error.to_string(),
    })?;
    {
        // Create the tables so that reads of a fresh database succeed.
        let txn = database.begin_write().map_err(io)?;
        txn.open_table(ENTRIES).map_err(io)?;
        txn.open_table(DELETES).map_err(io)?;
        txn.open_table(QUARANTINE).map_err(io)?;
        let mut meta = txn.open_table(META).map_err(io)?;
        meta.remove(LEGACY_LAST_SEEN).map_err(io)?;
        meta.remove(LEGACY_HORIZON).map_err(io)?;
        drop(meta);
        txn.commit().map_err(io)?;
    }
    let txn = database.begin_read().map_err(io)?;
    let table = txn.open_table(ENTRIES).map_err(io)?;
    let mut entries = Vec::new();
    for item in table.iter().map_err(io)? {
        let (key, bytes) = item.map_err(io)?;
        match decode_row(bytes.value()) {
            Ok(row) => entries.push(Stored {
                entry: Arc::new(row.entry),
                create_index: row.create_index,
                modify_index: row.modify_index,
                received: row.received,
            }),
            Err(error) => {
                tracing::error!(key = key.value(), %error, "skipping an unreadable KV entry on disk");
            }
        }
    }
    let meta = txn.open_table(META).map_err(io)?;
    let value = |key: &str| -> Result<u64, DiskError> {
        Ok(meta.get(key).map_err(io)?.map_or(0, |guard| guard.value()))
    };
    let mut remembered = Vec::new();
    for item in txn.open_table(DELETES).map_err(io)?.iter().map_err(io)? {
        let (hash, time) = item.map_err(io)?;
        remembered.push((hash.value(), time.value()));
    }
    let gone_through = value(QUARANTINE_GONE_THROUGH)?;
    let mut quarantine = Vec::new();
    for item in txn.open_table(QUARANTINE).map_err(io)?.iter().map_err(io)? {
        let (seq, bytes) = item.map_err(io)?;
        match codec::decode_frame::<Quarantined>(bytes.value()) {
            Ok(item) if item.seq > gone_through => quarantine.push(item),
            Ok(_) => {}
            Err(error) => {
                tracing::error!(seq = seq.value(), %error, "skipping an unreadable quarantined KV value");
            }
        }
    }
    let loaded = Loaded {
        entries,
        remembered,
        quota_refused: value(QUOTA_REFUSED)? != 0,
        quarantine,
        quarantine_gone_through: gone_through,
    };
    Ok((Arc::new(database), loaded))
}

/// Jobs the channel to the writer holds.
pub const QUEUE: usize = 64;

/// One batch for the writer task.
#[derive(Default)]
pub struct Job {
    pub upserts: Vec<Stored>,
    pub removals: Vec<String>,
    /// Deletes remembered (key hash, time), saved with the removals of the
    /// tombstones they come from.
    pub remembered: Vec<(u64, u64)>,
    /// Key hashes of remembered deletes forgotten.
    pub forgotten: Vec<u64>,
    pub quota_refused: Option<bool>,
    /// Values newly quarantined.
    pub quarantine: Vec<Quarantined>,
    /// Every quarantined value up to this sequence is gone.
    pub quarantine_gone_through: Option<u64>,
    /// Answered once the batch is durable.
    pub replies: Vec<oneshot::Sender<Result<(), String>>>,
}

/// Writes batches in order; consecutive batches are committed together.
/// After a failed commit (a full or failing disk) redb must be reopened:
/// the writer does so before the next batch, so the agent recovers on its
/// own once the disk does.
pub async fn writer_loop(
    database: Arc<Database>,
    path: std::path::PathBuf,
    mut jobs_rx: mpsc::Receiver<Job>,
    metrics: Arc<crate::kv::counters::KvCounters>,
) {
    let mut database = Some(database);
    while let Some(first) = jobs_rx.recv().await {
        let mut jobs = vec![first];
        while let Ok(next) = jobs_rx.try_recv() {
            jobs.push(next);
        }
        let current = database.take();
        let reopen_path = path.clone();
        let metrics = metrics.clone();
        let (result, jobs, kept) = tokio::task::spawn_blocking(move || {
            let current = match current {
                Some(current) => Ok(current),
                None => Database::create(&reopen_path)
                    .map(Arc::new)
                    .map_err(|e| e.to_string()),
            };
            match current {
                Ok(db) => {
                    let started = std::time::Instant::now();
                    let result = write(&db, &jobs);
                    metrics.commit(result.is_ok(), started.elapsed());
                    // A failed commit poisons the handle: drop it, reopen next time.
                    let kept = result.is_ok().then_some(db);
                    (result, jobs, kept)
                }
                Err(error) => (Err(error), jobs, None),
            }
        })
        .await
        .expect("KV writer panicked");
        database = kept;
        if let Err(error) = &result {
            tracing::error!(%error, "KV write failed");
        }
        for job in jobs {
            for reply in job.replies {
                let _ = reply.send(result.clone());
            }
        }
    }
}

/// Jobs that found the channel full, merged: per key, the last upsert or
/// removal wins (jobs come from the core loop alone, in the order of the
/// changes they record, so the last one is the state to write).
#[derive(Default)]
pub struct Backlog {
    ops: HashMap<String, Option<Stored>>,
    /// Per key hash, the delete time remembered, or `None`: forgotten.
    deletes: HashMap<u64, Option<u64>>,
    quota_refused: Option<bool>,
    quarantine: Vec<Quarantined>,
    quarantine_gone_through: Option<u64>,
    replies: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Job {
    /// Whether the job asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.removals.is_empty()
            && self.remembered.is_empty()
            && self.forgotten.is_empty()
            && self.quota_refused.is_none()
            && self.quarantine.is_empty()
            && self.quarantine_gone_through.is_none()
            && self.replies.is_empty()
    }
}

impl Backlog {
    /// Adds a job after those already held.
    pub fn push(&mut self, job: Job) {
        for stored in job.upserts {
            self.ops.insert(stored.entry.key.clone(), Some(stored));
        }
        for key in job.removals {
            self.ops.insert(key, None);
        }
        for (hash, time) in job.remembered {
            self.deletes.insert(hash, Some(time));
        }
        for hash in job.forgotten {
            self.deletes.insert(hash, None);
        }
        self.quota_refused = job.quota_refused.or(self.quota_refused);
        self.quarantine.extend(job.quarantine);
        self.quarantine_gone_through = self
            .quarantine_gone_through
            .max(job.quarantine_gone_through);
        self.replies.extend(job.replies);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
            && self.deletes.is_empty()
            && self.quota_refused.is_none()
            && self.quarantine.is_empty()
            && self.quarantine_gone_through.is_none()
            && self.replies.is_empty()
    }

    /// Keys with an operation held.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Everything held, as one job.
    pub fn take(&mut self) -> Job {
        let mut job = Job {
            quota_refused: self.quota_refused.take(),
            quarantine: std::mem::take(&mut self.quarantine),
            quarantine_gone_through: self.quarantine_gone_through.take(),
            replies: std::mem::take(&mut self.replies),
            ..Job::default()
        };
        for (key, op) in self.ops.drain() {
            match op {
                Some(stored) => job.upserts.push(stored),
                None => job.removals.push(key),
            }
        }
        for (hash, op) in self.deletes.drain() {
            match op {
                Some(time) => job.remembered.push((hash, time)),
                None => job.forgotten.push(hash),
            }
        }
        job
    }
}

fn write(database: &Database, jobs: &[Job]) -> Result<(), String> {
    let txn = database.begin_write().map_err(|e| e.to_string())?;
    {
        let mut entries = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let mut deletes = txn.open_table(DELETES).map_err(|e| e.to_string())?;
        let mut quarantine = txn.open_table(QUARANTINE).map_err(|e| e.to_string())?;
        let mut gone_through = meta
            .get(QUARANTINE_GONE_THROUGH)
            .map_err(|e| e.to_string())?
            .map_or(0, |guard| guard.value());
        for job in jobs {
            for stored in &job.upserts {
                let row = Row {
                    entry: (*stored.entry).clone(),
                    create_index: stored.create_index,
                    modify_index: stored.modify_index,
                    received: stored.received,
                };
                entries
                    .insert(stored.entry.key.as_str(), codec::encode(&row).as_slice())
                    .map_err(|e| e.to_string())?;
            }
            for key in &job.removals {
                entries.remove(key.as_str()).map_err(|e| e.to_string())?;
            }
            for &(hash, time) in &job.remembered {
                deletes.insert(hash, time).map_err(|e| e.to_string())?;
            }
            for hash in &job.forgotten {
                deletes.remove(hash).map_err(|e| e.to_string())?;
            }
            if let Some(through) = job.quarantine_gone_through
                && through > gone_through
            {
                gone_through = through;
                meta.insert(QUARANTINE_GONE_THROUGH, through)
                    .map_err(|e| e.to_string())?;
                let gone: Vec<u64> = quarantine
                    .range(..=through)
                    .map_err(|e| e.to_string())?
                    .map(|item| item.map(|(seq, _)| seq.value()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?;
                for seq in gone {
                    quarantine.remove(seq).map_err(|e| e.to_string())?;
                }
            }
            // An item cleared before it reached the disk stays gone.
            for item in job.quarantine.iter().filter(|item| item.seq > gone_through) {
                quarantine
                    .insert(item.seq, codec::encode(item).as_slice())
                    .map_err(|e| e.to_string())?;
            }
            if let Some(refused) = job.quota_refused {
                meta.insert(QUOTA_REFUSED, u64::from(refused))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> KvEntry {
        KvEntry {
            key: key.into(),
            value: b"v".to_vec(),
            flags: 0,
            time: 42,
            writer: "w".into(),
            deleted: false,
        }
    }

    #[test]
    fn a_version_1_database_loads_and_loses_its_horizon() {
        let dir = tempfile::tempdir().unwrap();
        {
            // As an earlier version wrote it: rows without their received
            // time, and `last_seen` in the meta table.
            let database = Database::create(dir.path().join(FILE)).unwrap();
            let txn = database.begin_write().unwrap();
            {
                let mut entries = txn.open_table(ENTRIES).unwrap();
                let old = RowWithoutReceived {
                    entry: entry("old"),
                    create_index: 3,
                    modify_index: 4,
                };
                entries
                    .insert("old", codec::encode(&old).as_slice())
                    .unwrap();
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(LEGACY_LAST_SEEN, 7).unwrap();
                meta.insert(LEGACY_HORIZON, 1234).unwrap();
            }
            txn.commit().unwrap();
        }
        let (database, loaded) = open(dir.path()).unwrap();
        assert!(!loaded.quota_refused);
        assert!(loaded.remembered.is_empty() && loaded.quarantine.is_empty());
        {
            let txn = database.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            assert!(meta.get(LEGACY_HORIZON).unwrap().is_none(), "removed");
        }
        assert_eq!(loaded.entries.len(), 1);
        let stored = &loaded.entries[0];
        assert_eq!(
            (stored.create_index, stored.modify_index, stored.received),
            (3, 4, 0)
        );
        assert_eq!(*stored.entry, entry("old"));

        // New rows, remembered deletes, the quota flag and the quarantine
        // come back as written; a clear removes what it covers, even an
        // item whose write comes after it.
        let item = |seq| Quarantined {
            seq,
            entry: entry(&format!("q{seq}")),
            deleted_at: 50,
            quarantined_at: 60,
        };
        let job = Job {
            upserts: vec![Stored {
                entry: Arc::new(entry("new")),
                create_index: 5,
                modify_index: 5,
                received: 99,
            }],
            remembered: vec![(7, 70), (8, 80)],
            quota_refused: Some(true),
            quarantine: vec![item(1), item(2)],
            ..Job::default()
        };
        let clear = Job {
            quarantine_gone_through: Some(3),
            forgotten: vec![8],
            ..Job::default()
        };
        let late = Job {
            quarantine: vec![item(3), item(4)],
            ..Job::default()
        };
        write(&database, &[job]).unwrap();
        write(&database, &[clear, late]).unwrap();
        drop(database);
        let (_, loaded) = open(dir.path()).unwrap();
        assert!(loaded.quota_refused);
        assert_eq!(loaded.remembered, [(7, 70)]);
        assert_eq!(loaded.quarantine, [item(4)]);
        assert_eq!(loaded.quarantine_gone_through, 3);
        let new = loaded
            .entries
            .iter()
            .find(|s| s.entry.key == "new")
            .unwrap();
        assert_eq!(new.received, 99);
    }
}
