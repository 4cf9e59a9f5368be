//! The `[dns]` table and the top-level `dns_addr`: the DNS interface
//! (served by `crate::dns`). Every key is optional; the defaults are
//! Consul's where Consul has the same key.

use std::net::{IpAddr, SocketAddr};
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
/// Most TCP connections from one client address at once.
pub const DEFAULT_DNS_MAX_TCP_PER_CLIENT: usize = 16;
/// UDP answers a second to one client prefix when `dns_addr` is not a
/// loopback address (off on loopback: nothing off-host can be reflected
/// at through it).
pub const DEFAULT_DNS_RATE_LIMIT: u32 = 100;
/// Who may ask when `dns_addr` is a loopback address: this host only.
pub const LOOPBACK_CLIENTS: [&str; 2] = ["127.0.0.0/8", "::1/128"];
/// Who may ask when `dns_addr` is not loopback: this host and the private
/// networks (RFC 1918, shared address space, link-local, unique local);
/// never the public internet, where a spoofed source turns the agent into
/// a reflector. Public networks are added to `dns.allow_clients` by name.
pub const PRIVATE_CLIENTS: [&str; 9] = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

/// The `[dns]` table, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDns {
    pub domain: Option<String>,
    pub alt_domain: Option<String>,
    pub only_passing: Option<bool>,
    pub near_first: Option<bool>,
    pub service_ttl: Option<String>,
    pub node_ttl: Option<String>,
    pub udp_answer_limit: Option<usize>,
    pub recursors: Option<Vec<String>>,
    pub recursor_timeout: Option<String>,
    pub failover: Option<Vec<String>>,
    pub max_tcp_connections: Option<usize>,
    pub tcp_idle_timeout: Option<String>,
    pub max_tcp_connections_per_client: Option<usize>,
    pub allow_clients: Option<Vec<String>>,
    pub rate_limit: Option<u32>,
    pub serve_with_protect_reads: Option<bool>,
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
    /// A service's instances nearest this agent first, by network
    /// coordinates (instances without one last); by default (false, as
    /// Consul) in random order.
    pub near_first: bool,
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
    /// Datacenters asked, in this order, for a service our datacenter has
    /// no instance of to answer (a name without a datacenter, such as
    /// `web.service.consul`), lower case; the first with one answers.
    /// Empty (default): none is asked.
    pub failover: Vec<String>,
    /// TCP connections served at once (default 128).
    pub max_tcp_connections: usize,
    /// A TCP connection whose client sends no query, or does not read a
    /// reply, for this long is closed (default 10s).
    pub tcp_idle_timeout: Duration,
    /// TCP connections from one client address at once (default 16).
    pub max_tcp_connections_per_client: usize,
    /// Client networks answered; others get REFUSED (and nothing is
    /// forwarded for them). Default: `LOOPBACK_CLIENTS` on a loopback
    /// `dns_addr`, `PRIVATE_CLIENTS` on any other.
    pub allow_clients: Vec<ClientNetwork>,
    /// UDP answers a second to one client prefix (/24 for IPv4, /56 for
    /// IPv6), as BIND's response rate limiting; past it every second
    /// answer is dropped and the other sent empty with TC set. 0: off.
    /// Default: off on a loopback `dns_addr`, `DEFAULT_DNS_RATE_LIMIT`
    /// on any other.
    pub rate_limit: u32,
    /// `acl.protect_reads`, copied: DNS carries no token.
    pub protect_reads: bool,
    /// Whether names in our domains are answered while `protect_reads`
    /// is on (default false: they are REFUSED).
    pub serve_with_protect_reads: bool,
}

impl DnsConfig {
    /// Whether names in our domains (the catalog) are answered.
    pub fn serves_catalog(&self) -> bool {
        !self.protect_reads || self.serve_with_protect_reads
    }

    /// Whether `client` is in `allow_clients`.
    pub fn allows(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.allow_clients
            .iter()
            .any(|network| network.contains(client))
    }
}

/// An IP network, `10.0.0.0/8` or `fd00::/8`; a bare address is one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientNetwork {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl ClientNetwork {
    pub fn parse(key: &str, text: &str) -> Result<Self, ConfigError> {
        let text = text.trim();
        let bad = || {
            invalid(
                key,
                format!(
                    "`{text}` is not a network such as `10.0.0.0/8`, `fd00::/8` or `192.0.2.7`"
                ),
            )
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for ClientNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether a query sent to `recursor` reaches a DNS server listening on
/// `listen`: the same port, and the same address, or any local address
/// when either is a wildcard (`0.0.0.0`, `::`). Such a recursor would get
/// our own forwarded questions back, in a loop until the packet's hops
/// ran out.
pub fn reaches_itself(recursor: SocketAddr, listen: SocketAddr) -> bool {
    if recursor.port() != listen.port() || listen.port() == 0 {
        return false;
    }
    let (to, at) = (recursor.ip().to_canonical(), listen.ip().to_canonical());
    if to == at {
        return true;
    }
    let local = |ip: IpAddr| {
        ip.is_loopback()
            || ip.is_unspecified()
            || if_addrs::get_if_addrs()
                .map(|interfaces| interfaces.iter().any(|interface| interface.ip() == ip))
                .unwrap_or(false)
    };
    // A wildcard listener answers on every local address; a query sent to
    // a wildcard address goes to this host.
    (at.is_unspecified() && local(to)) || (to.is_unspecified() && local(at))
}

impl Default for DnsConfig {
    fn default() -> Self {
        dns_config(None, None, false).expect("the defaults are valid")
    }
}

/// Validates `dns_addr` and the `[dns]` table (overrides already applied).
pub(super) fn dns_config(
    dns_addr: Option<&str>,
    file: Option<&FileDns>,
    protect_reads: bool,
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
    if let Some(listen) = addr
        && let Some(recursor) = recursors.iter().find(|r| reaches_itself(**r, listen))
    {
        return Err(invalid(
            "dns.recursors",
            format!(
                "{recursor} is this agent itself (dns_addr {listen}): it would forward its own questions to itself in a loop"
            ),
        ));
    }
    let mut failover: Vec<String> = Vec::new();
    for name in file.failover.iter().flatten() {
        super::node::validate_name("dns.failover", name)?;
        let name = name.to_ascii_lowercase();
        if failover.contains(&name) {
            return Err(invalid("dns.failover", format!("`{name}` is listed twice")));
        }
        failover.push(name);
    }
    let duration = |key: &str, text: &Option<String>, default: Duration| match text {
        Some(text) => parse_duration(key, text),
        None => Ok(default),
    };
    let max_tcp_connections = file.max_tcp_connections.unwrap_or(DEFAULT_DNS_MAX_TCP);
    if max_tcp_connections == 0 {
        return Err(invalid("dns.max_tcp_connections", "must be at least 1"));
    }
    let max_tcp_connections_per_client = file
        .max_tcp_connections_per_client
        .unwrap_or(DEFAULT_DNS_MAX_TCP_PER_CLIENT);
    if max_tcp_connections_per_client == 0 {
        return Err(invalid(
            "dns.max_tcp_connections_per_client",
            "must be at least 1",
        ));
    }
    let loopback = addr.is_none_or(|addr| addr.ip().is_loopback());
    let allow_clients = match &file.allow_clients {
        Some(list) if list.is_empty() => {
            return Err(invalid(
                "dns.allow_clients",
                "an empty list answers nobody; use dns_addr = \"off\" to turn DNS off",
            ));
        }
        Some(list) => list
            .iter()
            .map(|text| ClientNetwork::parse("dns.allow_clients", text))
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let defaults: &[&str] = if loopback {
                &LOOPBACK_CLIENTS
            } else {
                &PRIVATE_CLIENTS
            };
            defaults
                .iter()
                .map(|text| ClientNetwork::parse("dns.allow_clients", text))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    let rate_limit = file
        .rate_limit
        .unwrap_or(if loopback { 0 } else { DEFAULT_DNS_RATE_LIMIT });
    Ok(DnsConfig {
        addr,
        addr_configured: dns_addr.is_some(),
        domain: main_domain,
        alt_domain,
        only_passing: file.only_passing.unwrap_or(false),
        near_first: file.near_first.unwrap_or(false),
        service_ttl: ttl("dns.service_ttl", &file.service_ttl)?,
        node_ttl: ttl("dns.node_ttl", &file.node_ttl)?,
        udp_answer_limit: file.udp_answer_limit.unwrap_or(0),
        recursors,
        recursor_timeout: duration(
            "dns.recursor_timeout",
            &file.recursor_timeout,
            DEFAULT_RECURSOR_TIMEOUT,
        )?,
        failover,
        max_tcp_connections,
        tcp_idle_timeout: duration(
            "dns.tcp_idle_timeout",
            &file.tcp_idle_timeout,
            DEFAULT_DNS_TCP_IDLE,
        )?,
        max_tcp_connections_per_client,
        allow_clients,
        rate_limit,
        protect_reads,
        serve_with_protect_reads: file.serve_with_protect_reads.unwrap_or(false),
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
#[path = "dns_tests.rs"]
mod tests;
