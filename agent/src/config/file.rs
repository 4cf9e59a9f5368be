//! The TOML file as written: one serde struct per table, every key
//! optional, unknown keys refused by name. Nothing here is validated; that
//! is [`super::AgentConfig::from_parts`]'s job.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The TOML file, as written. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_name: Option<String>,
    pub datacenter: Option<String>,
    pub cluster: Option<String>,
    pub encrypt: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub bind: Option<String>,
    pub advertise: Option<String>,
    pub http_addr: Option<String>,
    pub join: Option<Vec<String>>,
    /// How long readiness (systemd `READY=1`) waits for a seed (a Go duration).
    pub join_ready_timeout: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    /// Directory of extra service files (`*.toml`), loaded in name order.
    pub config_dir: Option<PathBuf>,
    pub gossip: Option<FileGossip>,
    pub kv: Option<FileKv>,
    pub acl: Option<FileAcl>,
    /// DNS address (`IP:PORT`, or `off`).
    pub dns_addr: Option<String>,
    /// `[dns]`: the DNS interface.
    pub dns: Option<super::dns::FileDns>,
    /// `[events]`: the user event fire budget.
    pub events: Option<super::events::FileEvents>,
    /// `[[services]]`: services registered from configuration.
    pub services: Option<Vec<toml::Value>>,
    /// `[[checks]]`: node-level checks (system checks, ...).
    pub checks: Option<Vec<toml::Value>>,
    /// Exec checks (`Args`) may be registered through the HTTP API.
    pub enable_script_checks: Option<bool>,
    /// Exec checks may come from the config files.
    pub enable_local_script_checks: Option<bool>,
    /// How far ahead of our clock peers' times may be (a Go duration).
    pub max_clock_drift: Option<String>,
    /// `[[templates]]`: files rendered from the catalog and the KV.
    pub templates: Option<Vec<toml::Value>>,
    /// `[[watches]]`: handlers run when part of the cluster changes.
    pub watches: Option<Vec<toml::Value>>,
    /// `[wan]`: this agent's part in the WAN pool.
    pub wan: Option<super::wan::FileWan>,
}

/// The `[kv]` table. The duration is a Go duration such as "72h".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKv {
    pub tombstone_grace: Option<String>,
    /// Bytes, as an integer or a string with a unit ("256MiB").
    pub max_bytes: Option<toml::Value>,
}

/// The `[acl]` table: the HTTP API token.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAcl {
    pub token: Option<String>,
    pub protect_reads: Option<bool>,
    pub allow_unauthenticated_keyring: Option<bool>,
}

/// A file in `config_dir`: one `[service]`, several `[[services]]`, and/or
/// `[[checks]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    pub service: Option<toml::Value>,
    pub services: Option<Vec<toml::Value>>,
    pub checks: Option<Vec<toml::Value>>,
}

/// The `[gossip]` table. Durations are Go durations such as "500ms",
/// "1.5s" or "15s" (see [`crate::duration`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGossip {
    pub probe_interval: Option<String>,
    pub probe_timeout: Option<String>,
    pub gossip_interval: Option<String>,
    pub gossip_nodes: Option<usize>,
    pub suspicion_mult: Option<f64>,
    pub push_pull_interval: Option<String>,
    pub leave_propagate_delay: Option<String>,
    pub reannounce_interval: Option<String>,
    pub reconnect_timeout: Option<String>,
    pub tombstone_timeout: Option<String>,
}

/// Largest config file (`--config`, and each file of `config_dir`) read,
/// in bytes. A real one is a few KiB; the file is read whole into memory.
pub const MAX_CONFIG_FILE: usize = 4 * 1024 * 1024;

/// Reads and parses a TOML file into `T`; errors name the file (and, from
/// the TOML parser, the line and key).
pub(super) fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Read at most one byte past the cap: a file (or a device such as
    // /dev/zero) of any size costs no more than that.
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| {
            file.take(MAX_CONFIG_FILE as u64 + 1)
                .read_to_string(&mut text)
        })
        .map_err(read_error)?;
    if text.len() > MAX_CONFIG_FILE {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.to_path_buf(),
        message: error.to_string().trim_end().to_string(),
    })
}
