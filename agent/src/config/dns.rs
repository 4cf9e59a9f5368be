//! The `[dns]` table and the top-level `dns_addr`: the DNS interface
//! (served by `crate::dns`). Every key is optional; the defaults are
//! Consul's where Consul has the same key.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid, parse_addr, parse_duration};

/// Default DNS address: Consul's port, on loopback only.
pub const DEFAULT_DNS_ADDR: &str = "127.0.0.1:8600";
/// Port of a `dns_addr` given without one.
const DEFAULT_DNS_PORT: u16 = 8600;
/// Most TCP connections served at once; more are closed on accept.
pub const DEFAULT_DNS_MAX_TCP: usize = 128;
/// A TCP connection with no query for this long is closed.
pub const DEFAULT_DNS_TCP_IDLE: Duration = Duration::from_secs(10);
/// How long one recursor gets to answer before the next is tried.
pub const DEFAULT_RECURSOR_TIMEOUT: Duration = Duration::from_secs(2);

/// The `[dns]` table, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDns {
    pub domain: Option<String>,
    pub alt_domain: Option<String>,
    pub only_passing: Option<bool>,
    pub service_ttl: Option<String>,
    pub node_ttl: Option<String>,
    pub udp_answer_limit: Option<usize>,
    pub recursors: Option<Vec<String>>,
    pub recursor_timeout: Option<String>,
    pub max_tcp_connections: Option<usize>,
    pub tcp_idle_timeout: Option<String>,
}

/// The validated DNS settings. Changing any of them needs a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// UDP and TCP address; `None` when `dns_addr = "off"`.
    pub addr: Option<SocketAddr>,
    /// Whether `dns_addr` was set (file, `SHOAL_DNS_ADDR`, `--dns-addr`).
    /// When it was not and the default port is taken (several agents on
    /// one host), the agent runs without DNS and logs why; a configured
    /// address that can't be bound stops the agent.
    pub addr_configured: bool,
    /// The domain answered, lower case, without the trailing dot
    /// (default `consul`).
    pub domain: String,
    /// A second domain answered the same way (default `shoal`; `""` for none).
    pub alt_domain: Option<String>,
    /// Only instances whose every check passes; by default (false, as
    /// Consul) warning ones are answered too. Critical ones never are.
    pub only_passing: bool,
    /// TTL of service answers (default 0: clients ask again every time).
    pub service_ttl: Duration,
    /// TTL of node answers (default 0).
    pub node_ttl: Duration,
    /// Most records in one UDP answer, a random subset of the instances
    /// (Consul's `a_record_limit`); 0 (default): as many as fit the size.
    pub udp_answer_limit: usize,
    /// Where names outside the domains are forwarded, tried in order;
    /// empty (default): they are REFUSED.
    pub recursors: Vec<SocketAddr>,
    /// How long one recursor gets before the next is tried (default 2s).
    pub recursor_timeout: Duration,
    /// TCP connections served at once (default 128).
    pub max_tcp_connections: usize,
    /// Idle TCP connections are closed after this (default 10s).
    pub tcp_idle_timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        dns_config(None, None).expect("the defaults are valid")
    }
}

/// Validates `dns_addr` and the `[dns]` table (overrides already applied).
pub(super) fn dns_config(
    dns_addr: Option<&str>,
    file: Option<&FileDns>,
) -> Result<DnsConfig, ConfigError> {
    let addr = match dns_addr.map(str::trim) {
        Some(text) if text.eq_ignore_ascii_case("off") => None,
        Some(text) => Some(parse_addr("dns_addr", text, DEFAULT_DNS_PORT)?),
        None => Some(parse_addr("dns_addr", DEFAULT_DNS_ADDR, DEFAULT_DNS_PORT)?),
    };
    let empty = FileDns::default();
    let file = file.unwrap_or(&empty);
    let main_domain = parse_domain("dns.domain", file.domain.as_deref().unwrap_or("consul"))?
        .ok_or_else(|| invalid("dns.domain", "must not be empty"))?;
    let alt_domain = parse_domain(
        "dns.alt_domain",
        file.alt_domain.as_deref().unwrap_or("shoal"),
    )?;
    if alt_domain.as_ref() == Some(&main_domain) {
        return Err(invalid("dns.alt_domain", "must differ from dns.domain"));
    }
    let ttl = |key: &str, text: &Option<String>| match text.as_deref().map(str::trim) {
        None | Some("0") | Some("0s") => Ok(Duration::ZERO),
        Some(text) => parse_duration(key, text),
    };
    let recursors = file
        .recursors
        .iter()
        .flatten()
        .map(|text| parse_addr("dns.recursors", text, 53))
        .collect::<Result<Vec<_>, _>>()?;
    let duration = |key: &str, text: &Option<String>, default: Duration| match text {
        Some(text) => parse_duration(key, text),
        None => Ok(default),
    };
    let max_tcp_connections = file.max_tcp_connections.unwrap_or(DEFAULT_DNS_MAX_TCP);
    if max_tcp_connections == 0 {
        return Err(invalid("dns.max_tcp_connections", "must be at least 1"));
    }
    Ok(DnsConfig {
        addr,
        addr_configured: dns_addr.is_some(),
        domain: main_domain,
        alt_domain,
        only_passing: file.only_passing.unwrap_or(false),
        service_ttl: ttl("dns.service_ttl", &file.service_ttl)?,
        node_ttl: ttl("dns.node_ttl", &file.node_ttl)?,
        udp_answer_limit: file.udp_answer_limit.unwrap_or(0),
        recursors,
        recursor_timeout: duration(
            "dns.recursor_timeout",
            &file.recursor_timeout,
            DEFAULT_RECURSOR_TIMEOUT,
        )?,
        max_tcp_connections,
        tcp_idle_timeout: duration(
            "dns.tcp_idle_timeout",
            &file.tcp_idle_timeout,
            DEFAULT_DNS_TCP_IDLE,
        )?,
    })
}

/// A domain as DNS labels (letters, digits, `-`, `_`), lower-cased and
/// without the trailing dot; `None` for `""`.
fn parse_domain(key: &str, text: &str) -> Result<Option<String>, ConfigError> {
    let text = text.trim().trim_end_matches('.').to_ascii_lowercase();
    if text.is_empty() {
        return Ok(None);
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if text.len() > 200 || !text.split('.').all(label_ok) {
        return Err(invalid(
            key,
            format!("`{text}` is not a domain such as `consul` or `service.example.`"),
        ));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_consuls() {
        let config = DnsConfig::default();
        assert_eq!(config.addr, Some("127.0.0.1:8600".parse().unwrap()));
        assert!(!config.addr_configured);
        assert_eq!(config.domain, "consul");
        assert_eq!(config.alt_domain.as_deref(), Some("shoal"));
        assert_eq!(config.service_ttl, Duration::ZERO);
        assert!(config.recursors.is_empty());
    }

    #[test]
    fn off_disables_and_bad_values_name_their_key() {
        let off = dns_config(Some("off"), None).unwrap();
        assert_eq!(off.addr, None);
        let file = FileDns {
            domain: Some("Example.COM.".into()),
            alt_domain: Some(String::new()),
            service_ttl: Some("30s".into()),
            recursors: Some(vec!["127.0.0.1".into()]),
            ..FileDns::default()
        };
        let config = dns_config(Some("127.0.0.2:53"), Some(&file)).unwrap();
        assert_eq!(config.domain, "example.com");
        assert_eq!(config.alt_domain, None);
        assert_eq!(config.service_ttl, Duration::from_secs(30));
        assert_eq!(config.recursors, vec!["127.0.0.1:53".parse().unwrap()]);
        for (addr, file, key) in [
            (Some("nowhere:x"), FileDns::default(), "dns_addr"),
            (
                None,
                FileDns {
                    domain: Some("bad domain".into()),
                    ..FileDns::default()
                },
                "dns.domain",
            ),
            (
                None,
                FileDns {
                    node_ttl: Some("soon".into()),
                    ..FileDns::default()
                },
                "dns.node_ttl",
            ),
            (
                None,
                FileDns {
                    alt_domain: Some("consul".into()),
                    ..FileDns::default()
                },
                "dns.alt_domain",
            ),
        ] {
            let error = dns_config(addr, Some(&file)).unwrap_err();
            assert!(error.to_string().contains(key), "{error}");
        }
    }
}
