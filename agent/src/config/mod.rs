//! Agent configuration: built-in defaults (or the `--dev` ones), then the
//! TOML file, then `SHOAL_*` environment variables, then flags. Every error
//! names the key it is about.
//!
//! - [`file`]: the TOML file as written, one struct per table.
//! - `overrides`: flags and `SHOAL_*` variables, folded into the file.
//! - `node`: names, tags, data directory, gossip key, logging.
//! - `network`: `bind`, `advertise`, `http_addr`, `join`.
//! - `gossip`, `kv`, `acl`: the `[gossip]`, `[kv]` (with the top-level
//!   `max_clock_drift`) and `[acl]` tables.
//! - `dns`: `dns_addr` and the `[dns]` table.
//! - `events`: the `[events]` table, the user event fire budget.
//! - `definitions`: services and checks from the file and `config_dir`.
//! - `templates`: `[[templates]]`, files rendered from the catalog and KV.
//! - [`watches`]: `[[watches]]`, handlers run when the cluster changes.
//! - `wan`: the `[wan]` table, this agent's part in the WAN pool.
//!
//! Every duration is a Go duration ([`crate::duration`]).

mod acl;
mod definitions;
mod dns;
mod events;
mod file;
mod gossip;
mod kv;
mod network;
mod node;
mod overrides;
mod templates;
mod wan;
pub mod watches;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use shoal_protocol::GossipConfig;

pub use acl::{AclConfig, MAX_ACL_TOKEN};
pub use dns::{ClientNetwork, DEFAULT_DNS_ADDR, DnsConfig, FileDns, reaches_itself};
pub use events::{EventsConfig, FileEvents};
pub use file::{FileAcl, FileConfig, FileGossip, FileKv, MAX_CONFIG_FILE, ServiceFile};
pub use kv::{DEFAULT_KV_MAX_BYTES, DEFAULT_TOMBSTONE_GRACE};
pub use network::{DEFAULT_GOSSIP_PORT, DEFAULT_HTTP_ADDR, DEFAULT_JOIN_READY_TIMEOUT, parse_addr};
pub use node::{DataDir, LogFormat, MAX_TAG_KEY};
pub use overrides::Overrides;
pub use templates::{MAX_TEMPLATE_BYTES, TemplateConfig, TemplateSource};
pub use wan::{DEFAULT_WAN_PORT, FileWan, WanConfig};
pub use watches::{WatchDefinition, WatchHandler, WatchKind};

use crate::checks::CheckDefinition;
use crate::registry::service::ServiceDefinition;

/// A configuration that can't be used. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "config file {path} is larger than 4 MiB (the limit for a config file); split it or move data out of it"
    )]
    TooLarge { path: PathBuf },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

/// The validated configuration the agent runs with.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    pub datacenter: String,
    pub cluster: String,
    /// Gossip encryption key (32 bytes); `None`: packets are not sealed.
    pub encrypt: Option<shoal_protocol::keyring::Key>,
    pub data_dir: DataDir,
    pub bind: SocketAddr,
    pub advertise: SocketAddr,
    pub http_addr: SocketAddr,
    pub join: Vec<SocketAddr>,
    /// How long a start under systemd waits for a seed to answer before it
    /// reports ready alone (`join_ready_timeout`, see `daemon::systemd`).
    pub join_ready_timeout: Duration,
    pub tags: BTreeMap<String, String>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub gossip: GossipConfig,
    /// How long KV tombstones are kept (see `shoal_protocol::kv` for what
    /// happens to an agent away for longer). `max_clock_drift` and
    /// `kv.max_bytes` are in `gossip` (the protocol core enforces them).
    pub kv_tombstone_grace: Duration,
    /// Test-only: enables `PUT /v1/shoal/fault` (flag `--fault-injection`).
    pub fault_injection: bool,
    /// The DNS interface (`dns_addr`, `[dns]`).
    pub dns: DnsConfig,
    /// The HTTP API token, if any (`[acl]`).
    pub acl: AclConfig,
    /// How fast user events may be fired here (`[events]`).
    pub events: EventsConfig,
    /// Services from the file and `config_dir`.
    pub services: Vec<ServiceDefinition>,
    /// Node-level checks from the file and `config_dir`.
    pub checks: Vec<CheckDefinition>,
    /// The directory of service files in use, if any (watched for reload).
    pub config_dir: Option<PathBuf>,
    /// Exec checks may be registered through the HTTP API (and come from
    /// anywhere). Default false, as Consul: they run any command as the
    /// agent's user, and anything that reaches the API could register one.
    pub enable_script_checks: bool,
    /// Exec checks may come from the config files. Default true: whoever
    /// writes those files already chooses what the agent runs.
    pub enable_local_script_checks: bool,
    /// `[[templates]]`, reloaded with the rest.
    pub templates: Vec<TemplateConfig>,
    /// `[[watches]]`: handlers run when part of the cluster changes
    /// (reloaded live).
    pub watches: Vec<WatchDefinition>,
    /// Addresses given without a port and the default port they got, as
    /// lines the agent logs at start.
    pub port_defaults: Vec<String>,
    /// `[wan]`: set when this agent is also a WAN member.
    pub wan: Option<WanConfig>,
}

impl AgentConfig {
    /// Loads the file named in `overrides` (if any) and applies the
    /// overrides on top of the defaults.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let file: FileConfig = match &overrides.config_file {
            Some(path) => file::read_toml(path)?,
            None => FileConfig::default(),
        };
        let config_dir = overrides
            .config_dir
            .clone()
            .or(file.config_dir.clone())
            .or_else(|| {
                let beside = overrides.config_file.as_ref()?.parent()?.join("config.d");
                beside.is_dir().then_some(beside)
            });
        let mut config = Self::from_parts(file, overrides)?;
        if let Some(dir) = config_dir {
            let (services, checks) = definitions::read_config_dir(&dir)?;
            config.services.extend(services);
            config.checks.extend(checks);
            config.config_dir = Some(dir);
        }
        definitions::check_unique_ids(&config.services, &config.checks)?;
        definitions::check_counts(&config.services, &config.checks).map_err(|error| {
            // Where the definitions came from: the file, the directory.
            let sources: Vec<String> = overrides
                .config_file
                .iter()
                .chain(config.config_dir.iter())
                .map(|path| path.display().to_string())
                .collect();
            ConfigError::Parse {
                path: PathBuf::from(sources.join(" and ")),
                message: error.to_string(),
            }
        })?;
        definitions::check_local_scripts(&config)?;
        Ok(config)
    }

    /// Merges defaults, a parsed file and the overrides, and validates,
    /// key by key in the order of the file's sections.
    pub fn from_parts(mut file: FileConfig, overrides: &Overrides) -> Result<Self, ConfigError> {
        overrides.apply_to(&mut file)?;
        let node_name = node::node_name(file.node_name)?;
        let datacenter = node::datacenter(file.datacenter)?;
        let cluster = node::cluster(file.cluster)?;
        let encrypt = node::encrypt(file.encrypt)?;
        let data_dir = node::data_dir(file.data_dir, overrides.dev)?;
        let addresses = network::Addresses::parse(
            file.bind,
            file.advertise,
            file.http_addr,
            file.join,
            overrides.dev,
        )?;
        let join_ready_timeout = network::join_ready_timeout(file.join_ready_timeout.as_deref())?;
        let tags = node::tags(file.tags)?;
        let log_level = node::log_level(file.log_level)?;
        let log_format = node::log_format(file.log_format)?;
        let mut gossip = gossip::gossip_config(file.gossip, addresses.join.clone())?;
        let acl = acl::acl_config(file.acl)?;
        let dns = dns::dns_config(
            file.dns_addr.as_deref(),
            file.dns.as_ref(),
            acl.protect_reads,
        )?;
        let events = events::events_config(file.events.as_ref())?;
        let kv = kv::kv_settings(file.kv.as_ref(), file.max_clock_drift.as_deref())?;
        gossip.max_clock_drift = kv.max_clock_drift;
        gossip.kv_max_bytes = kv.max_bytes;
        let kv_tombstone_grace = kv.tombstone_grace;
        let services = definitions::file_services(file.services)?;
        let checks = definitions::file_checks(file.checks)?;
        let templates = templates::templates(file.templates)?;
        let watches = watches::watch_definitions(file.watches)?;
        let wan = wan::wan_config(file.wan, addresses.bind, addresses.advertise)?;
        if wan.is_some() {
            wan::check_wan_name(&node_name, &datacenter)?;
        }
        if dns.failover.contains(&datacenter.to_ascii_lowercase()) {
            return Err(invalid(
                "dns.failover",
                format!(
                    "`{datacenter}` is this agent's own datacenter: list the others to ask when it has no instance"
                ),
            ));
        }
        Ok(Self {
            node_name,
            datacenter,
            cluster,
            encrypt,
            data_dir,
            bind: addresses.bind,
            advertise: addresses.advertise,
            http_addr: addresses.http_addr,
            join: addresses.join,
            port_defaults: addresses.port_defaults,
            join_ready_timeout,
            tags,
            log_level,
            log_format,
            gossip,
            kv_tombstone_grace,
            fault_injection: overrides.fault_injection,
            acl,
            dns,
            events,
            services,
            checks,
            config_dir: None,
            enable_script_checks: overrides.enable_script_checks
                || file.enable_script_checks.unwrap_or(false),
            enable_local_script_checks: overrides
                .enable_local_script_checks
                .or(file.enable_local_script_checks)
                .unwrap_or(true),
            templates,
            watches,
            wan,
        })
    }
}

/// Parses a Go duration such as `500ms`, `1.5s` or `1h30m` (see
/// [`crate::duration`]). Zero is refused: every duration key is a period
/// or a grace time, and none of them works at zero.
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let duration = crate::duration::parse(text).map_err(|error| invalid(key, error.to_string()))?;
    if duration.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
