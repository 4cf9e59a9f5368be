//! The KV store on disk: an embedded redb database in the data dir.
//!
//! One task writes, in order, off the gossip loop. A local write is
//! acknowledged to its client only after the transaction holding it has
//! committed (redb commits are durable: fsync'd), so an acknowledged write
//! survives SIGKILL and power loss. Entries learned from peers are written
//! the same way, without anyone waiting; if the agent dies first,
//! anti-entropy brings them back.

use std::path::Path;
use std::sync::Arc;

use bincode::{Decode, Encode};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use shoal_protocol::codec;
use shoal_protocol::kv::{KvEntry, Stored};
use tokio::sync::{mpsc, oneshot};

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// HLC time of the last moment this agent was in touch with the cluster.
const LAST_SEEN: &str = "last_seen";

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
}

/// What the database held at start.
pub struct Loaded {
    pub entries: Vec<Stored>,
    pub last_seen: Option<u64>,
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
        txn.open_table(META).map_err(io)?;
        txn.commit().map_err(io)?;
    }
    let txn = database.begin_read().map_err(io)?;
    let table = txn.open_table(ENTRIES).map_err(io)?;
    let mut entries = Vec::new();
    for item in table.iter().map_err(io)? {
        let (key, bytes) = item.map_err(io)?;
        match codec::decode_frame::<Row>(bytes.value()) {
            Ok(row) => entries.push(Stored {
                entry: Arc::new(row.entry),
                create_index: row.create_index,
                modify_index: row.modify_index,
            }),
            Err(error) => {
                tracing::error!(key = key.value(), %error, "skipping an unreadable KV entry on disk");
            }
        }
    }
    let meta = txn.open_table(META).map_err(io)?;
    let last_seen = meta.get(LAST_SEEN).map_err(io)?.map(|guard| guard.value());
    Ok((Arc::new(database), Loaded { entries, last_seen }))
}

/// One batch for the writer task.
#[derive(Default)]
pub struct Job {
    pub upserts: Vec<Stored>,
    pub removals: Vec<String>,
    pub last_seen: Option<u64>,
    /// Answered once the batch is durable.
    pub reply: Option<oneshot::Sender<Result<(), String>>>,
}

/// Writes batches in order; consecutive batches are committed together.
/// After a failed commit (a full or failing disk) redb must be reopened:
/// the writer does so before the next batch, so the agent recovers on its
/// own once the disk does.
pub async fn writer_loop(
    database: Arc<Database>,
    path: std::path::PathBuf,
    mut jobs_rx: mpsc::UnboundedReceiver<Job>,
) {
    let mut database = Some(database);
    while let Some(first) = jobs_rx.recv().await {
        let mut jobs = vec![first];
        while let Ok(next) = jobs_rx.try_recv() {
            jobs.push(next);
        }
        let current = database.take();
        let reopen_path = path.clone();
        let (result, jobs, kept) = tokio::task::spawn_blocking(move || {
            let current = match current {
                Some(current) => Ok(current),
                None => Database::create(&reopen_path)
                    .map(Arc::new)
                    .map_err(|e| e.to_string()),
            };
            match current {
                Ok(db) => {
                    let result = write(&db, &jobs);
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
            if let Some(reply) = job.reply {
                let _ = reply.send(result.clone());
            }
        }
    }
}

fn write(database: &Database, jobs: &[Job]) -> Result<(), String> {
    let txn = database.begin_write().map_err(|e| e.to_string())?;
    {
        let mut entries = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        for job in jobs {
            for stored in &job.upserts {
                let row = Row {
                    entry: (*stored.entry).clone(),
                    create_index: stored.create_index,
                    modify_index: stored.modify_index,
                };
                entries
                    .insert(stored.entry.key.as_str(), codec::encode(&row).as_slice())
                    .map_err(|e| e.to_string())?;
            }
            for key in &job.removals {
                entries.remove(key.as_str()).map_err(|e| e.to_string())?;
            }
            if let Some(time) = job.last_seen {
                meta.insert(LAST_SEEN, time).map_err(|e| e.to_string())?;
            }
        }
    }
    txn.commit().map_err(|e| e.to_string())
}
