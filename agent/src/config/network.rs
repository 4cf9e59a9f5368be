//! Where the agent listens and whom it joins: `bind`, `advertise`,
//! `http_addr`, `join`, `join_ready_timeout`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{ConfigError, invalid, parse_duration};

/// Default gossip port (UDP for SWIM, TCP for anti-entropy), as memberlist.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;
/// Default HTTP API address: Consul's, so Consul clients work unchanged.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8500";
/// Port of an `http_addr` given without one.
const DEFAULT_HTTP_PORT: u16 = 8500;

/// The validated addresses.
pub(super) struct Addresses {
    pub bind: SocketAddr,
    pub advertise: SocketAddr,
    pub http_addr: SocketAddr,
    pub join: Vec<SocketAddr>,
    /// The addresses given without a port, as log lines (see
    /// [`port_default_note`]).
    pub port_defaults: Vec<String>,
}

/// A documented default, not a silent one: an address given as a bare IP
/// (`--bind 10.0.0.5`, `--join 10.0.0.5`, as Consul users write them) gets
/// the key's default port, and the agent says so at start.
fn port_default_note(key: &str, text: &str, used: SocketAddr) -> Option<String> {
    text.trim()
        .parse::<IpAddr>()
        .ok()
        .map(|_| format!("{key} `{}` has no port: using {used}", text.trim()))
}

impl Addresses {
    /// Parses the address keys; `dev` binds gossip to loopback by default.
    pub(super) fn parse(
        bind: Option<String>,
        advertise: Option<String>,
        http_addr: Option<String>,
        join: Option<Vec<String>>,
        dev: bool,
    ) -> Result<Self, ConfigError> {
        let default_ip = if dev {
            Ipv4Addr::LOCALHOST
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let bind_text = bind.clone();
        let http_text = http_addr.clone();
        let join_texts = join.clone().unwrap_or_default();
        let bind = match bind {
            Some(text) => parse_addr("bind", &text, DEFAULT_GOSSIP_PORT)?,
            None => SocketAddr::from((default_ip, DEFAULT_GOSSIP_PORT)),
        };
        let advertise = match advertise {
            Some(text) => parse_advertise(&text, bind)?,
            None => default_advertise(bind)?,
        };
        let http_addr = parse_addr(
            "http_addr",
            http_addr.as_deref().unwrap_or(DEFAULT_HTTP_ADDR),
            DEFAULT_HTTP_PORT,
        )?;
        let join = join
            .unwrap_or_default()
            .iter()
            .map(|text| parse_addr("join", text, DEFAULT_GOSSIP_PORT))
            .collect::<Result<Vec<_>, _>>()?;
        let mut port_defaults = Vec::new();
        if let Some(text) = &bind_text {
            port_defaults.extend(port_default_note("bind", text, bind));
        }
        if let Some(text) = &http_text {
            port_defaults.extend(port_default_note("http_addr", text, http_addr));
        }
        for (text, used) in join_texts.iter().zip(&join) {
            port_defaults.extend(port_default_note("join", text, *used));
        }
        Ok(Self {
            bind,
            advertise,
            http_addr,
            join,
            port_defaults,
        })
    }
}

/// Default `join_ready_timeout`: well inside systemd's start timeout (90 s
/// by default), long enough for a seed that is merely slow to answer.
pub const DEFAULT_JOIN_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `join_ready_timeout`: past it, a start that can't reach a seed
/// would look hung to whoever waits for readiness.
const MAX_JOIN_READY_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a start under systemd waits for a seed to answer before it
/// reports ready anyway (alone, still retrying the seeds).
pub(super) fn join_ready_timeout(text: Option<&str>) -> Result<Duration, ConfigError> {
    let Some(text) = text else {
        return Ok(DEFAULT_JOIN_READY_TIMEOUT);
    };
    let timeout = parse_duration("join_ready_timeout", text)?;
    if timeout > MAX_JOIN_READY_TIMEOUT {
        return Err(invalid(
            "join_ready_timeout",
            format!(
                "`{text}` is longer than {}: readiness would wait that long for an unreachable seed",
                crate::duration::format(MAX_JOIN_READY_TIMEOUT)
            ),
        ));
    }
    Ok(timeout)
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

/// An `advertise` address must be one peers can reach.
fn parse_advertise(text: &str, bind: SocketAddr) -> Result<SocketAddr, ConfigError> {
    let addr = parse_addr("advertise", text, bind.port())?;
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(invalid(
            "advertise",
            format!("`{text}` is not an address peers can reach"),
        ));
    }
    Ok(addr)
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
