//! Agent configuration: built-in defaults (or the `--dev` ones), then the
//! TOML file, then `SHOAL_*` environment variables, then flags. Every error
//! names the key it is about.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shoal_protocol::GossipConfig;

use crate::checks::{CheckDefinition, FieldError};
use crate::local::keys::normalize;
use crate::local::service::ServiceDefinition;

/// Default gossip port (UDP for SWIM, TCP for anti-entropy), as memberlist.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;
/// Default time KV tombstones are kept: three days, as Consul reaps nodes.
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(72 * 3600);
/// Default HTTP API address: Consul's, so Consul clients work unchanged.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8500";

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
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

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
    pub tags: Option<BTreeMap<String, String>>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    /// Directory of extra service files (`*.toml`), loaded in name order.
    pub config_dir: Option<PathBuf>,
    pub gossip: Option<FileGossip>,
    pub kv: Option<FileKv>,
    pub acl: Option<FileAcl>,
    /// `[[services]]`: services registered from configuration.
    pub services: Option<Vec<toml::Value>>,
    /// `[[checks]]`: node-level checks (system checks, ...).
    pub checks: Option<Vec<toml::Value>>,
    /// Exec checks (`Args`) may be registered through the HTTP API.
    pub enable_script_checks: Option<bool>,
    /// Exec checks may come from the config files.
    pub enable_local_script_checks: Option<bool>,
}

/// The `[kv]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKv {
    pub tombstone_grace: Option<String>,
}

/// The `[acl]` table: the HTTP API token.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAcl {
    pub token: Option<String>,
    pub protect_reads: Option<bool>,
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

/// The `[gossip]` table. Durations are strings such as "500ms" or "15s".
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
}

/// Settings given on the command line or through `SHOAL_*` variables.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub dev: bool,
    pub node_name: Option<String>,
    pub datacenter: Option<String>,
    pub cluster: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub bind: Option<String>,
    pub advertise: Option<String>,
    pub http_addr: Option<String>,
    pub join: Vec<String>,
    pub tags: Vec<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub config_dir: Option<PathBuf>,
    pub fault_injection: bool,
    /// `--acl-token` / `SHOAL_ACL_TOKEN`.
    pub acl_token: Option<String>,
    /// `--acl-protect-reads`.
    pub acl_protect_reads: bool,
    /// `--encrypt` / `SHOAL_ENCRYPT`.
    pub encrypt: Option<String>,
    /// `--enable-script-checks` / `SHOAL_ENABLE_SCRIPT_CHECKS`.
    pub enable_script_checks: bool,
    /// `--enable-local-script-checks BOOL` / `SHOAL_ENABLE_LOCAL_SCRIPT_CHECKS`.
    pub enable_local_script_checks: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where the agent keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataDir {
    /// A directory the operator chose; kept across restarts.
    Path(PathBuf),
    /// `--dev`: a fresh temporary directory, removed at exit.
    Temporary,
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
    pub tags: BTreeMap<String, String>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub gossip: GossipConfig,
    /// How long KV tombstones are kept; an agent away for longer drops its
    /// old entries and resyncs them from its peers.
    pub kv_tombstone_grace: Duration,
    /// Test-only: enables `PUT /v1/shoal/fault` (flag `--fault-injection`).
    pub fault_injection: bool,
    /// The HTTP API token, if any (`[acl]`).
    pub acl: AclConfig,
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
}

impl AgentConfig {
    /// Loads the file named in `overrides` (if any) and applies the
    /// overrides on top of the defaults.
    pub fn load(overrides: &Overrides) -> Result<Self, ConfigError> {
        let file = match &overrides.config_file {
            Some(path) => read_file(path)?,
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
            let (services, checks) = read_config_dir(&dir)?;
            config.services.extend(services);
            config.checks.extend(checks);
            config.config_dir = Some(dir);
        }
        check_unique_ids(&config.services, &config.checks)?;
        check_local_scripts(&config)?;
        Ok(config)
    }

    /// Merges defaults, a parsed file and the overrides, and validates.
    pub fn from_parts(file: FileConfig, overrides: &Overrides) -> Result<Self, ConfigError> {
        let dev = overrides.dev;
        let pick = |flag: &Option<String>, file: Option<String>| flag.clone().or(file);

        let node_name =
            pick(&overrides.node_name, file.node_name).unwrap_or_else(default_node_name);
        validate_name("node_name", &node_name)?;
        let datacenter =
            pick(&overrides.datacenter, file.datacenter).unwrap_or_else(|| "dc1".into());
        validate_name("datacenter", &datacenter)?;
        let cluster = pick(&overrides.cluster, file.cluster).unwrap_or_else(|| "shoal".into());
        if cluster.is_empty() {
            return Err(invalid("cluster", "must not be empty"));
        }

        let encrypt = pick(&overrides.encrypt, file.encrypt)
            .map(|text| {
                shoal_protocol::keyring::parse_key(&text)
                    .map_err(|error| invalid("encrypt", error.to_string()))
            })
            .transpose()?;
        let data_dir = match overrides.data_dir.clone().or(file.data_dir) {
            Some(path) if path.as_os_str().is_empty() => {
                return Err(invalid("data_dir", "must not be empty"));
            }
            Some(path) => DataDir::Path(path),
            None if dev => DataDir::Temporary,
            None => {
                return Err(invalid(
                    "data_dir",
                    "is required (set it in the config file, with --data-dir or SHOAL_DATA_DIR, or run with --dev)",
                ));
            }
        };

        let default_bind = if dev {
            SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_GOSSIP_PORT))
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_GOSSIP_PORT))
        };
        let bind = match pick(&overrides.bind, file.bind) {
            Some(text) => parse_addr("bind", &text, DEFAULT_GOSSIP_PORT)?,
            None => default_bind,
        };
        let advertise = match pick(&overrides.advertise, file.advertise) {
            Some(text) => {
                let addr = parse_addr("advertise", &text, bind.port())?;
                if addr.ip().is_unspecified() || addr.port() == 0 {
                    return Err(invalid(
                        "advertise",
                        format!("`{text}` is not an address peers can reach"),
                    ));
                }
                addr
            }
            None => default_advertise(bind)?,
        };
        let http_addr = parse_addr(
            "http_addr",
            &pick(&overrides.http_addr, file.http_addr).unwrap_or_else(|| DEFAULT_HTTP_ADDR.into()),
            8500,
        )?;

        let join_texts = if overrides.join.is_empty() {
            file.join.unwrap_or_default()
        } else {
            overrides.join.clone()
        };
        let join = join_texts
            .iter()
            .map(|text| parse_addr("join", text, DEFAULT_GOSSIP_PORT))
            .collect::<Result<Vec<_>, _>>()?;

        let mut tags = file.tags.unwrap_or_default();
        for text in &overrides.tags {
            let (key, value) = text
                .split_once('=')
                .ok_or_else(|| invalid("tags", format!("`{text}` is not of the form key=value")))?;
            tags.insert(key.trim().to_string(), value.trim().to_string());
        }
        if tags.len() > shoal_protocol::state::MAX_RECORD_TAGS {
            return Err(invalid(
                "tags",
                format!(
                    "{} tags; at most {} are allowed",
                    tags.len(),
                    shoal_protocol::state::MAX_RECORD_TAGS
                ),
            ));
        }
        for key in tags.keys() {
            if key.is_empty() || key.len() > 128 {
                return Err(invalid(
                    "tags",
                    format!("tag key `{key}` must be 1 to 128 characters"),
                ));
            }
        }

        let log_level = pick(&overrides.log_level, file.log_level).unwrap_or_else(|| "info".into());
        if !["trace", "debug", "info", "warn", "error"].contains(&log_level.as_str()) {
            return Err(invalid(
                "log_level",
                format!("`{log_level}` is not one of trace, debug, info, warn, error"),
            ));
        }
        let log_format = match pick(&overrides.log_format, file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log_format",
                    format!("`{other}` is not one of text, json"),
                ));
            }
        };

        let gossip = gossip_config(file.gossip.unwrap_or_default(), join.clone())?;
        let acl = acl_config(file.acl.unwrap_or_default(), overrides)?;
        let kv_tombstone_grace = match file.kv.and_then(|kv| kv.tombstone_grace) {
            Some(text) => parse_duration("kv.tombstone_grace", &text)?,
            None => DEFAULT_TOMBSTONE_GRACE,
        };
        let services = parse_services(
            file.services
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("services[{i}]"), v)),
        )
        .map_err(|e| invalid(&e.field, e.message))?;
        let checks = parse_checks(
            file.checks
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("checks[{i}]"), v)),
        )
        .map_err(|e| invalid(&e.field, e.message))?;

        Ok(Self {
            node_name,
            datacenter,
            cluster,
            encrypt,
            data_dir,
            bind,
            advertise,
            http_addr,
            join,
            tags,
            log_level,
            log_format,
            gossip,
            kv_tombstone_grace,
            fault_injection: overrides.fault_injection,
            acl,
            services,
            checks,
            config_dir: None,
            enable_script_checks: overrides.enable_script_checks
                || file.enable_script_checks.unwrap_or(false),
            enable_local_script_checks: overrides
                .enable_local_script_checks
                .or(file.enable_local_script_checks)
                .unwrap_or(true),
        })
    }
}

/// Exec checks in the config files need `enable_local_script_checks` (or
/// `enable_script_checks`, which allows them from anywhere, as in Consul).
fn check_local_scripts(config: &AgentConfig) -> Result<(), ConfigError> {
    if config.enable_local_script_checks || config.enable_script_checks {
        return Ok(());
    }
    let configured = config.services.iter().flat_map(|s| &s.checks);
    match configured
        .chain(&config.checks)
        .find(|c| c.runs_a_program())
    {
        Some(check) => Err(invalid(
            "enable_local_script_checks",
            format!(
                "is false, but check `{}` in the configuration runs a program (args); remove the check or set enable_local_script_checks = true",
                check.id
            ),
        )),
        None => Ok(()),
    }
}

/// Who may use the HTTP API (see `api::guard`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AclConfig {
    /// When set, every write (and every read with `protect_reads`) must
    /// present it (`X-Consul-Token`, `Authorization: Bearer` or `?token=`).
    pub token: Option<String>,
    /// Reads need the token too. Default false: the local service reads
    /// without one, as with Consul's default `anonymous` read policy.
    pub protect_reads: bool,
}

impl std::fmt::Debug for AclConfig {
    // The token is a secret: never in a log line or a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("protect_reads", &self.protect_reads)
            .finish()
    }
}

/// Longest accepted API token.
pub const MAX_ACL_TOKEN: usize = 256;

fn acl_config(file: FileAcl, overrides: &Overrides) -> Result<AclConfig, ConfigError> {
    let token = overrides.acl_token.clone().or(file.token);
    if let Some(token) = &token {
        let printable = token.bytes().all(|b| b.is_ascii_graphic());
        if token.is_empty() || token.len() > MAX_ACL_TOKEN || !printable {
            return Err(invalid(
                "acl.token",
                format!(
                    "must be 1 to {MAX_ACL_TOKEN} printable ASCII characters without spaces (try `openssl rand -hex 32`)"
                ),
            ));
        }
    }
    let protect_reads = overrides.acl_protect_reads || file.protect_reads.unwrap_or(false);
    if protect_reads && token.is_none() {
        return Err(invalid(
            "acl.protect_reads",
            "needs a token (set acl.token, --acl-token or SHOAL_ACL_TOKEN)",
        ));
    }
    Ok(AclConfig {
        token,
        protect_reads,
    })
}

fn parse_services<'a>(
    items: impl Iterator<Item = (String, &'a toml::Value)>,
) -> Result<Vec<ServiceDefinition>, FieldError> {
    items
        .map(|(field, value)| ServiceDefinition::parse(&to_json(value), &field))
        .collect()
}

fn parse_checks<'a>(
    items: impl Iterator<Item = (String, &'a toml::Value)>,
) -> Result<Vec<CheckDefinition>, FieldError> {
    items
        .map(|(field, value)| {
            let json = to_json(value);
            let name = json
                .get("name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(&field)
                .to_string();
            CheckDefinition::parse(&json, &field, None, &name)
        })
        .collect()
}

fn to_json(value: &toml::Value) -> serde_json::Value {
    normalize(serde_json::to_value(value).unwrap_or_default())
}

/// Reads every `*.toml` file of `dir`, in name order.
fn read_config_dir(
    dir: &Path,
) -> Result<(Vec<ServiceDefinition>, Vec<CheckDefinition>), ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    let mut services = Vec::new();
    let mut checks = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let file: ServiceFile = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.clone(),
            message: error.to_string().trim_end().to_string(),
        })?;
        let in_file = |error: FieldError| ConfigError::Parse {
            path: path.clone(),
            message: error.to_string(),
        };
        let mut items: Vec<(String, &toml::Value)> = file
            .service
            .iter()
            .map(|v| ("service".to_string(), v))
            .collect();
        items.extend(
            file.services
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, v)| (format!("services[{i}]"), v)),
        );
        services.extend(parse_services(items.into_iter()).map_err(in_file)?);
        checks.extend(
            parse_checks(
                file.checks
                    .iter()
                    .flatten()
                    .enumerate()
                    .map(|(i, v)| (format!("checks[{i}]"), v)),
            )
            .map_err(in_file)?,
        );
    }
    Ok((services, checks))
}

/// Service and check ids must be unique across the file and `config_dir`.
fn check_unique_ids(
    services: &[ServiceDefinition],
    checks: &[CheckDefinition],
) -> Result<(), ConfigError> {
    let mut service_ids = std::collections::BTreeSet::new();
    for service in services {
        if !service_ids.insert(service.id.as_str()) {
            return Err(invalid(
                "services",
                format!("service id `{}` is defined twice", service.id),
            ));
        }
    }
    let mut check_ids = std::collections::BTreeSet::new();
    for check in services.iter().flat_map(|s| &s.checks).chain(checks) {
        if !check_ids.insert(check.id.as_str()) {
            return Err(invalid(
                "checks",
                format!("check id `{}` is defined twice", check.id),
            ));
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|error| ConfigError::Parse {
        path: path.to_path_buf(),
        message: error.to_string().trim_end().to_string(),
    })
}

fn gossip_config(file: FileGossip, seeds: Vec<SocketAddr>) -> Result<GossipConfig, ConfigError> {
    let mut gossip = GossipConfig {
        seeds,
        ..GossipConfig::default()
    };
    let duration = |key: &str, value: &Option<String>, target: &mut Duration| {
        if let Some(text) = value {
            *target = parse_duration(&format!("gossip.{key}"), text)?;
        }
        Ok::<(), ConfigError>(())
    };
    duration(
        "probe_interval",
        &file.probe_interval,
        &mut gossip.probe_period,
    )?;
    duration("probe_timeout", &file.probe_timeout, &mut gossip.probe_rtt)?;
    duration(
        "gossip_interval",
        &file.gossip_interval,
        &mut gossip.gossip_interval,
    )?;
    duration(
        "push_pull_interval",
        &file.push_pull_interval,
        &mut gossip.anti_entropy_interval,
    )?;
    duration(
        "leave_propagate_delay",
        &file.leave_propagate_delay,
        &mut gossip.leave_spread,
    )?;
    duration(
        "reannounce_interval",
        &file.reannounce_interval,
        &mut gossip.seed_reannounce,
    )?;
    if let Some(nodes) = file.gossip_nodes {
        gossip.gossip_fanout = NonZeroUsize::new(nodes)
            .filter(|n| n.get() <= 32)
            .ok_or_else(|| invalid("gossip.gossip_nodes", "must be between 1 and 32"))?;
    }
    if let Some(mult) = file.suspicion_mult {
        if !(1.0..=100.0).contains(&mult) {
            return Err(invalid(
                "gossip.suspicion_mult",
                "must be between 1 and 100",
            ));
        }
        gossip.suspicion_mult = mult;
    }
    if gossip.probe_rtt >= gossip.probe_period {
        return Err(invalid(
            "gossip.probe_timeout",
            format!(
                "({}) must be shorter than gossip.probe_interval ({})",
                humantime::format_duration(gossip.probe_rtt),
                humantime::format_duration(gossip.probe_period)
            ),
        ));
    }
    Ok(gossip)
}

/// Parses a Go-style duration such as `500ms`, `15s` or `2m`. Zero is refused.
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let duration = humantime::parse_duration(text.trim()).map_err(|error| {
        invalid(
            key,
            format!("`{text}` is not a duration like \"500ms\" or \"15s\": {error}"),
        )
    })?;
    if duration.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    Ok(duration)
}

/// Parses `IP:PORT`, `IP` (with the default port), `[v6]:PORT` or
/// `host:PORT` (resolved once, now).
pub fn parse_addr(key: &str, text: &str, default_port: u16) -> Result<SocketAddr, ConfigError> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && let Ok(port) = port.parse::<u16>()
        && !host.is_empty()
        && let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        && let Some(addr) = addrs.next()
    {
        return Ok(addr);
    }
    Err(invalid(
        key,
        format!("`{text}` is not an address like 127.0.0.1:{default_port}"),
    ))
}

fn validate_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{name}` must be 1 to 128 characters of letters, digits, '-', '_' and '.'"),
        ))
    }
}

fn default_node_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let cleaned: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "shoal".into()
    } else {
        cleaned
    }
}

/// The address peers should use when we bind to a wildcard: the first
/// non-loopback IPv4 address of this host, else loopback.
fn default_advertise(bind: SocketAddr) -> Result<SocketAddr, ConfigError> {
    if bind.port() == 0 {
        return Err(invalid(
            "advertise",
            "is required when `bind` uses port 0 (peers need a fixed port)",
        ));
    }
    if !bind.ip().is_unspecified() {
        return Ok(bind);
    }
    let ip = if_addrs::get_if_addrs()
        .ok()
        .and_then(|interfaces| {
            interfaces
                .into_iter()
                .filter(|interface| !interface.is_loopback())
                .map(|interface| interface.ip())
                .find(IpAddr::is_ipv4)
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    Ok(SocketAddr::new(ip, bind.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<AgentConfig, ConfigError> {
        let file: FileConfig = toml::from_str(toml_text).map_err(|e| ConfigError::Parse {
            path: "test.toml".into(),
            message: e.to_string(),
        })?;
        AgentConfig::from_parts(file, &Overrides::default())
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let error = parse("data_dir = \"/tmp/x\"\nbogus_key = 1\n").unwrap_err();
        assert!(error.to_string().contains("bogus_key"), "{error}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let error = parse("data_dir = \"/tmp/x\"\nbind = \"nonsense\"\n").unwrap_err();
        assert!(error.to_string().contains("`bind`"), "{error}");
        let error =
            parse("data_dir = \"/tmp/x\"\n[gossip]\nprobe_interval = \"soon\"\n").unwrap_err();
        assert!(
            error.to_string().contains("gossip.probe_interval"),
            "{error}"
        );
        let error = parse("bind = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(error.to_string().contains("`data_dir`"), "{error}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: FileConfig = toml::from_str(
            "data_dir = \"/tmp/x\"\nnode_name = \"from-file\"\nbind = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let overrides = Overrides {
            node_name: Some("from-flag".into()),
            tags: vec!["role=web".into()],
            ..Overrides::default()
        };
        let config = AgentConfig::from_parts(file, &overrides).unwrap();
        assert_eq!(config.node_name, "from-flag");
        assert_eq!(config.bind, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.advertise, config.bind);
        assert_eq!(config.tags["role"], "web");
    }

    #[test]
    fn the_annotated_examples_are_valid() {
        let file: FileConfig = toml::from_str(include_str!("../../config/agent.toml")).unwrap();
        let config = AgentConfig::from_parts(file, &Overrides::default()).unwrap();
        assert_eq!(config.tags["role"], "web");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("services.toml"),
            include_str!("../../config/services.toml"),
        )
        .unwrap();
        let (services, checks) = read_config_dir(dir.path()).unwrap();
        assert_eq!(services.len(), 2);
        assert_eq!(services[0].checks.len(), 3);
        assert_eq!(checks.len(), 4);
    }

    #[test]
    fn dev_mode_needs_no_file() {
        let config = AgentConfig::from_parts(
            FileConfig::default(),
            &Overrides {
                dev: true,
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(config.data_dir, DataDir::Temporary);
        assert!(config.bind.ip().is_loopback());
        assert!(config.http_addr.ip().is_loopback());
    }
}
