//! The `[kv]` table: the replicated KV store.

use std::time::Duration;

use super::file::FileKv;
use super::{ConfigError, parse_duration};

/// Default time KV tombstones are kept: three days, as Consul reaps nodes.
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(72 * 3600);

/// `kv.tombstone_grace`: how long a delete is remembered.
pub(super) fn tombstone_grace(file: Option<FileKv>) -> Result<Duration, ConfigError> {
    match file.and_then(|kv| kv.tombstone_grace) {
        Some(text) => parse_duration("kv.tombstone_grace", &text),
        None => Ok(DEFAULT_TOMBSTONE_GRACE),
    }
}
