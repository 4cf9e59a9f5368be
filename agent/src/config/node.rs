//! Who this node is and how it runs: its names, tags, data directory,
//! gossip key and logging. Each function validates one key of the merged
//! file (see [`super::Overrides::apply_to`]) and fills in its default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use shoal_protocol::state::{MAX_NAME, MAX_RECORD_TAGS};

use super::{ConfigError, invalid};

/// Longest node tag key, as Consul's node meta keys.
pub const MAX_TAG_KEY: usize = 128;

/// How log lines are written.
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

/// `node_name`: unique in the cluster; default the host name.
pub(super) fn node_name(text: Option<String>) -> Result<String, ConfigError> {
    let name = text.unwrap_or_else(default_node_name);
    validate_name("node_name", &name)?;
    Ok(name)
}

/// `datacenter`: default `dc1`.
pub(super) fn datacenter(text: Option<String>) -> Result<String, ConfigError> {
    let name = text.unwrap_or_else(|| "dc1".into());
    validate_name("datacenter", &name)?;
    Ok(name)
}

/// `cluster`: any non-empty name; default `shoal`.
pub(super) fn cluster(text: Option<String>) -> Result<String, ConfigError> {
    let name = text.unwrap_or_else(|| "shoal".into());
    if name.is_empty() {
        return Err(invalid("cluster", "must not be empty"));
    }
    Ok(name)
}

/// `encrypt`: the base64 gossip key, if any.
pub(super) fn encrypt(
    text: Option<String>,
) -> Result<Option<shoal_protocol::keyring::Key>, ConfigError> {
    text.map(|text| {
        shoal_protocol::keyring::parse_key(&text)
            .map_err(|error| invalid("encrypt", error.to_string()))
    })
    .transpose()
}

/// `data_dir`: required, unless `--dev` (a temporary directory).
pub(super) fn data_dir(path: Option<PathBuf>, dev: bool) -> Result<DataDir, ConfigError> {
    match path {
        Some(path) if path.as_os_str().is_empty() => Err(invalid("data_dir", "must not be empty")),
        Some(path) => Ok(DataDir::Path(path)),
        None if dev => Ok(DataDir::Temporary),
        None => Err(invalid(
            "data_dir",
            "is required (set it in the config file, with --data-dir or SHOAL_DATA_DIR, or run with --dev)",
        )),
    }
}

/// `tags`: at most as many as peers accept in a record, keys of 1 to
/// [`MAX_TAG_KEY`] characters.
pub(super) fn tags(
    tags: Option<BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let tags = tags.unwrap_or_default();
    // Places in the record are the node ID's (`id`), the wire versions'
    // (`wire`) and a WAN member's WAN address (`wan`).
    let max = MAX_RECORD_TAGS - shoal_protocol::record::RESERVED_TAGS.len();
    if tags.len() > max {
        return Err(invalid(
            "tags",
            format!("{} tags; at most {max} are allowed", tags.len()),
        ));
    }
    if tags.contains_key(shoal_protocol::record::WIRE_TAG) {
        return Err(invalid(
            "tags",
            "tag key `wire` is reserved: it carries the wire versions this agent speaks (see docs/upgrading.md)",
        ));
    }
    if tags.contains_key(shoal_protocol::record::NODE_ID_TAG) {
        return Err(invalid(
            "tags",
            "tag key `id` is reserved: it carries the node ID (kept in the data dir, shown as Config.NodeID in /v1/agent/self)",
        ));
    }
    if tags.contains_key(shoal_protocol::record::WAN_TAG) {
        return Err(invalid(
            "tags",
            "tag key `wan` is reserved: a WAN member (`wan.enabled`) carries its WAN address in it, for the agents of its datacenter",
        ));
    }
    if let Some(key) = tags
        .keys()
        .find(|key| key.is_empty() || key.len() > MAX_TAG_KEY)
    {
        return Err(invalid(
            "tags",
            format!("tag key `{key}` must be 1 to {MAX_TAG_KEY} characters"),
        ));
    }
    Ok(tags)
}

/// `log_level`: default `info`.
pub(super) fn log_level(text: Option<String>) -> Result<String, ConfigError> {
    let level = text.unwrap_or_else(|| "info".into());
    if !["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
        return Err(invalid(
            "log_level",
            format!("`{level}` is not one of trace, debug, info, warn, error"),
        ));
    }
    Ok(level)
}

/// `log_format`: `text` (default) or `json`.
pub(super) fn log_format(text: Option<String>) -> Result<LogFormat, ConfigError> {
    match text.as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(invalid(
            "log_format",
            format!("`{other}` is not one of text, json"),
        )),
    }
}

/// Node names and datacenters: what peers accept in a record
/// ([`MAX_NAME`]), in characters that need no quoting anywhere.
pub(super) fn validate_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!(
                "`{name}` must be 1 to {MAX_NAME} characters of letters, digits, '-', '_' and '.'"
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tags_the_agent_sets_itself_are_refused() {
        for reserved in shoal_protocol::record::RESERVED_TAGS {
            let error = tags_checked(BTreeMap::from([(reserved.to_string(), "x".to_string())]));
            assert!(
                error.contains(&format!("tag key `{reserved}` is reserved")),
                "{error}"
            );
        }
        let most = MAX_RECORD_TAGS - shoal_protocol::record::RESERVED_TAGS.len();
        let many: BTreeMap<String, String> = (0..=most)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(tags_checked(many).contains(&format!("at most {most}")));
    }

    fn tags_checked(given: BTreeMap<String, String>) -> String {
        super::tags(Some(given)).unwrap_err().to_string()
    }
}
