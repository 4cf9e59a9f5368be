//! The `[wan]` table: whether this agent is also a member of the WAN pool,
//! the second gossip pool that joins datacenters (see `daemon::wan`), and
//! where that pool listens and whom it joins.

use std::net::SocketAddr;

use serde::Deserialize;
use shoal_protocol::GossipConfig;

use super::file::FileGossip;
use super::{ConfigError, invalid, network};

/// Default WAN gossip port (UDP for SWIM, TCP for anti-entropy and
/// forwarded lookups): Consul's WAN port.
pub const DEFAULT_WAN_PORT: u16 = 8302;

/// The `[wan]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWan {
    /// This agent is a WAN member (a handful per datacenter, not all).
    pub enabled: Option<bool>,
    /// WAN gossip address [default: the LAN `bind` IP, port 8302].
    pub bind: Option<String>,
    /// WAN gossip address other datacenters reach this agent at.
    pub advertise: Option<String>,
    /// WAN members (of any datacenter) to join through; retried, like `join`.
    pub join: Option<Vec<String>>,
    /// `[wan.gossip]`: the `[gossip]` keys, over the WAN defaults.
    pub gossip: Option<FileGossip>,
}

/// A WAN member's settings.
#[derive(Clone, Debug)]
pub struct WanConfig {
    pub bind: SocketAddr,
    pub advertise: SocketAddr,
    pub join: Vec<SocketAddr>,
    /// memberlist's WAN timings ([`GossipConfig::wan`]), with
    /// `[wan.gossip]` over them.
    pub gossip: GossipConfig,
}

/// `None` unless `wan.enabled`; the other keys need it.
pub(super) fn wan_config(
    file: Option<FileWan>,
    lan_bind: SocketAddr,
    lan_advertise: SocketAddr,
) -> Result<Option<WanConfig>, ConfigError> {
    let Some(file) = file else {
        return Ok(None);
    };
    if !file.enabled.unwrap_or(false) {
        let given = [
            ("wan.bind", file.bind.is_some()),
            ("wan.advertise", file.advertise.is_some()),
            ("wan.join", file.join.is_some()),
            ("wan.gossip", file.gossip.is_some()),
        ];
        if let Some((key, _)) = given.iter().find(|(_, given)| *given) {
            return Err(invalid(
                key,
                "is set but this agent is not a WAN member: set wan.enabled = true (or --wan)",
            ));
        }
        return Ok(None);
    }
    let bind = match &file.bind {
        Some(text) => network::parse_addr("wan.bind", text, DEFAULT_WAN_PORT)?,
        None => SocketAddr::new(lan_bind.ip(), DEFAULT_WAN_PORT),
    };
    if bind == lan_bind {
        return Err(invalid(
            "wan.bind",
            format!(
                "{bind} is also the LAN gossip address (`bind`): the two pools need a port each"
            ),
        ));
    }
    let advertise = match &file.advertise {
        Some(text) => {
            let addr = network::parse_addr("wan.advertise", text, bind.port())?;
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(invalid(
                    "wan.advertise",
                    format!("`{text}` is not an address other datacenters can reach"),
                ));
            }
            addr
        }
        None if bind.ip().is_unspecified() => SocketAddr::new(lan_advertise.ip(), bind.port()),
        None if bind.port() == 0 => {
            return Err(invalid(
                "wan.advertise",
                "is required when `wan.bind` uses port 0 (peers need a fixed port)",
            ));
        }
        None => bind,
    };
    let join = file
        .join
        .unwrap_or_default()
        .iter()
        .map(|text| network::parse_addr("wan.join", text, DEFAULT_WAN_PORT))
        .collect::<Result<Vec<_>, _>>()?;
    let gossip =
        super::gossip::tuned(file.gossip, GossipConfig::wan(), join.clone(), "wan.gossip")?;
    Ok(Some(WanConfig {
        bind,
        advertise,
        join,
        gossip,
    }))
}

/// A WAN member is named `node.dc` in the WAN pool: that must fit a name.
pub(super) fn check_wan_name(node_name: &str, datacenter: &str) -> Result<(), ConfigError> {
    let name = crate::wan::wan_name(node_name, datacenter);
    if name.len() > shoal_protocol::state::MAX_NAME {
        return Err(invalid(
            "wan.enabled",
            format!(
                "this agent's WAN name `{name}` (node_name.datacenter) is {} characters; at most {} fit: shorten node_name or datacenter",
                name.len(),
                shoal_protocol::state::MAX_NAME
            ),
        ));
    }
    Ok(())
}
