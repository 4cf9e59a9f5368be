//! The data directory: an exclusive lock, the persisted generation that
//! makes every restart rejoin with a larger identity, and the ceiling of
//! `X-Consul-Index` (see `daemon::index`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::config::DataDir;
use crate::uuid::{is_uuid, new_uuid};

pub mod format;

/// Why the data directory can't be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The reason is part of the message, not a `source`: printed as a
    /// chain it would appear twice.
    #[error("data_dir {path}: {}", explain_io(path, error))]
    Io { path: PathBuf, error: io::Error },
    #[error("data_dir {path} is in use by another shoal agent")]
    Locked { path: PathBuf },
    #[error("data_dir file {path} is corrupt ({content:?}); remove it to start over")]
    Corrupt { path: PathBuf, content: String },
    #[error(
        "data_dir {path} is in data dir format {found}, written by a newer shoal; this agent reads \
         format {supported} and older. Nothing was changed: run the newer shoal on it, or give this \
         one another data_dir"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
}

/// What an I/O error on the data directory means for the operator, with
/// what to do about it.
fn explain_io(path: &Path, error: &io::Error) -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let is_file = |path: &Path| {
        path.ancestors()
            .find(|p| p.is_file())
            .map(Path::to_path_buf)
    };
    match error.kind() {
        io::ErrorKind::PermissionDenied if path.exists() => format!(
            "permission denied: the agent runs as user id {uid}, which cannot write there \
             (give that user the directory, e.g. `chown -R {uid} {}`, or choose another --data-dir)",
            path.display()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "permission denied: the agent runs as user id {uid}, which cannot create it \
             (create it for that user, e.g. `mkdir -p {0} && chown {uid} {0}`, or choose another --data-dir)",
            path.display()
        ),
        io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory => match is_file(path) {
            Some(file) if file == path => {
                "is a file, not a directory: remove it or choose another --data-dir".to_string()
            }
            Some(file) => format!(
                "{} is a file, not a directory: remove it or choose another --data-dir",
                file.display()
            ),
            None => error.to_string(),
        },
        io::ErrorKind::ReadOnlyFilesystem => format!("{error}: choose a writable --data-dir"),
        _ => error.to_string(),
    }
}

/// An open, locked data directory. A temporary one (`--dev`) is removed
/// when dropped.
#[derive(Debug)]
pub struct DataDirGuard {
    path: PathBuf,
    temporary: bool,
    _lock: File,
}

/// The data directory's format (its files and the KV database's tables)
/// this build reads and writes. The state of 0.1.0 is format 1; a change
/// to any file or table bumps it (see CHANGELOG.md, "Upgrading").
pub const DATA_DIR_FORMAT: u32 = 1;

const GENERATION_FILE: &str = "generation";
const INDEX_FILE: &str = "index";
/// Consul's file name for the node ID.
const NODE_ID_FILE: &str = "node-id";

impl DataDirGuard {
    pub fn open(dir: &DataDir) -> Result<Self, DataDirError> {
        let (path, temporary) = match dir {
            DataDir::Path(path) => (path.clone(), false),
            DataDir::Temporary => (
                std::env::temp_dir().join(format!("shoal-dev-{}", std::process::id())),
                true,
            ),
        };
        let io_error = |error| DataDirError::Io {
            path: path.clone(),
            error,
        };
        fs::create_dir_all(&path).map_err(io_error)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("LOCK"))
            .map_err(io_error)?;
        // SAFETY: flock on a descriptor we own; no memory is shared.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(DataDirError::Locked { path });
        }
        // Before anything reads or writes the data (see `format`).
        match format::prepare(&path, format::current())? {
            format::Outcome::Current => {}
            outcome => tracing::info!(data_dir = %path.display(), ?outcome, "data dir format"),
        }
        Ok(Self {
            path,
            temporary,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The generation for this start: one more than the last one persisted,
    /// and never less than `now_millis` so that even an agent whose data dir
    /// was wiped comes back newer than its previous incarnation.
    pub fn next_generation(&self, now_millis: u64) -> Result<u64, DataDirError> {
        let previous = self.last_generation()?.unwrap_or(0);
        let generation = previous.saturating_add(1).max(now_millis);
        self.store_generation(generation)?;
        Ok(generation)
    }

    /// The generation this data dir used last, if any: the agent's own
    /// earlier identity, whatever address it had.
    pub fn last_generation(&self) -> Result<Option<u64>, DataDirError> {
        self.read_number(GENERATION_FILE)
    }

    /// This node's ID: a UUID generated the first time the data dir is used
    /// and kept in `node-id` (as Consul keeps its own), so it survives
    /// restarts, renames and address changes.
    pub fn node_id(&self) -> Result<String, DataDirError> {
        let file = self.path.join(NODE_ID_FILE);
        match fs::read_to_string(&file) {
            Ok(text) if is_uuid(text.trim()) => Ok(text.trim().to_ascii_lowercase()),
            Ok(text) => Err(DataDirError::Corrupt {
                path: file,
                content: text.chars().take(40).collect(),
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let id = new_uuid(rand::random());
                write_atomic(&self.path, NODE_ID_FILE, format!("{id}\n").as_bytes()).map_err(
                    |source| DataDirError::Io {
                        path: file,
                        error: source,
                    },
                )?;
                Ok(id)
            }
            Err(source) => Err(DataDirError::Io {
                path: file,
                error: source,
            }),
        }
    }

    /// The persisted ceiling of `X-Consul-Index` (0 when there is none).
    pub fn index_ceiling(&self) -> Result<u64, DataDirError> {
        Ok(self.read_number(INDEX_FILE)?.unwrap_or(0))
    }

    /// Durably records the ceiling of `X-Consul-Index`.
    pub fn store_index_ceiling(&self, ceiling: u64) -> Result<(), DataDirError> {
        write_atomic(&self.path, INDEX_FILE, format!("{ceiling}\n").as_bytes()).map_err(|source| {
            DataDirError::Io {
                path: self.path.join(INDEX_FILE),
                error: source,
            }
        })
    }

    /// A file holding one decimal number; `None` when it does not exist.
    fn read_number(&self, name: &str) -> Result<Option<u64>, DataDirError> {
        let file = self.path.join(name);
        match fs::read_to_string(&file) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map(Some)
                .map_err(|_| DataDirError::Corrupt {
                    path: file.clone(),
                    content: text.chars().take(40).collect(),
                }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DataDirError::Io {
                path: file,
                error: source,
            }),
        }
    }

    /// Durably records `generation` (write, fsync, rename, fsync the dir).
    pub fn store_generation(&self, generation: u64) -> Result<(), DataDirError> {
        write_atomic(
            &self.path,
            GENERATION_FILE,
            format!("{generation}\n").as_bytes(),
        )
        .map_err(|source| DataDirError::Io {
            path: self.path.join(GENERATION_FILE),
            error: source,
        })
    }
}

impl Drop for DataDirGuard {
    fn drop(&mut self) {
        if self.temporary {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old
/// or the new content, never a torn file.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_always_grows_and_the_dir_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let config = DataDir::Path(dir.path().to_path_buf());
        let first = {
            let guard = DataDirGuard::open(&config).unwrap();
            assert!(matches!(
                DataDirGuard::open(&config),
                Err(DataDirError::Locked { .. })
            ));
            guard.next_generation(1000).unwrap()
        };
        assert_eq!(first, 1000);
        let guard = DataDirGuard::open(&config).unwrap();
        // The clock went backwards: the persisted value still wins.
        assert_eq!(guard.last_generation().unwrap(), Some(1000));
        assert_eq!(guard.next_generation(5).unwrap(), 1001);
    }

    #[test]
    fn the_node_id_is_a_uuid_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = DataDir::Path(dir.path().to_path_buf());
        let first = DataDirGuard::open(&config).unwrap().node_id().unwrap();
        assert!(is_uuid(&first) && first.as_bytes()[14] == b'4', "{first}");
        let again = DataDirGuard::open(&config).unwrap().node_id().unwrap();
        assert_eq!(first, again);
        let other = tempfile::tempdir().unwrap();
        let guard = DataDirGuard::open(&DataDir::Path(other.path().to_path_buf())).unwrap();
        assert_ne!(guard.node_id().unwrap(), first);
        fs::write(other.path().join(NODE_ID_FILE), "not-a-uuid").unwrap();
        let error = guard.node_id().unwrap_err().to_string();
        assert!(
            error.contains("node-id") && error.contains("not-a-uuid"),
            "{error}"
        );
        assert!(!is_uuid("0123456789abcdef0123456789abcdef"));
    }

    #[test]
    fn the_index_ceiling_survives_and_a_corrupt_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DataDirGuard::open(&DataDir::Path(dir.path().to_path_buf())).unwrap();
        assert_eq!(guard.index_ceiling().unwrap(), 0);
        guard.store_index_ceiling(7 << 40).unwrap();
        assert_eq!(guard.index_ceiling().unwrap(), 7 << 40);
        fs::write(dir.path().join(INDEX_FILE), "seven").unwrap();
        let error = guard.index_ceiling().unwrap_err().to_string();
        assert!(
            error.contains("index") && error.contains("seven"),
            "{error}"
        );
    }
}
