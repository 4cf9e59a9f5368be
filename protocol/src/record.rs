//! The node record: the one piece of cluster state each agent writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bincode::{Decode, Encode};

use crate::envelope::WireRange;
use crate::identity::NodeId;

/// Everything the cluster knows about one node, written only by that node.
///
/// Every local change bumps `version`; a restart bumps the identity's
/// generation (and `version` starts over). Merge rule: the record with the
/// larger [`NodeRecord::order`] wins.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct NodeRecord {
    /// Identity of the agent that wrote this record.
    pub id: NodeId,
    /// Bumped by the owner on every change it makes.
    pub version: u64,
    /// Node name, unique in the cluster (default: the host name).
    pub name: String,
    /// Datacenter label, informational.
    pub datacenter: String,
    /// Operator-defined tags (`--tag k=v`).
    pub tags: BTreeMap<String, String>,
    /// Set when the node leaves on purpose: peers then report it as left
    /// rather than failed once the membership declares it down.
    pub left: bool,
    /// Services registered on this node, with their checks.
    pub services: Vec<ServiceRecord>,
    /// Checks of the node itself (system checks, node maintenance).
    pub checks: Vec<CheckRecord>,
}

/// Status of one check, in Consul's terms. Ordered from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum CheckStatus {
    Passing,
    Warning,
    Critical,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "passing" => Some(CheckStatus::Passing),
            "warning" => Some(CheckStatus::Warning),
            "critical" => Some(CheckStatus::Critical),
            _ => None,
        }
    }
}

/// Longest check output that is gossiped; the full output (up to 4 KiB)
/// stays on the node that ran the check.
pub const GOSSIPED_OUTPUT: usize = 128;

/// A check as the cluster sees it.
///
/// Only `status` changes bump the owner's record version. `output` rides
/// along with whatever change is gossiped next, so chatty check output never
/// causes gossip by itself.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct CheckRecord {
    pub id: String,
    pub name: String,
    /// What kind of check: "http", "tcp", "exec", "ttl", "system",
    /// "dependency", "maintenance".
    pub kind: String,
    pub status: CheckStatus,
    /// Whether failing makes the service unhealthy (true) or only degraded.
    pub critical: bool,
    pub notes: String,
    /// The start of the last output (at most [`GOSSIPED_OUTPUT`] bytes).
    pub output: String,
}

impl CheckRecord {
    /// The status shown in Consul's API: a non-critical check that fails
    /// only ever reports `warning`, so the instance counts as degraded, not
    /// down.
    pub fn consul_status(&self) -> CheckStatus {
        if self.critical {
            self.status
        } else {
            self.status.min(CheckStatus::Warning)
        }
    }
}

/// A service instance registered on a node.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ServiceRecord {
    pub id: String,
    pub name: String,
    /// Empty: the node's address.
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub checks: Vec<CheckRecord>,
}

/// The node record tag that carries the node's ID: a UUID generated once
/// and kept in the data dir (Consul's `node-id`). A tag, not a field of its
/// own, so that agents of earlier versions still decode the record (bincode
/// has no optional fields); they show it as one more tag, as Consul's own
/// member tags do (`id`).
pub const NODE_ID_TAG: &str = "id";

/// The node record tag that advertises the wire versions the node's agent
/// speaks, `MIN-MAX` (`1-2`), as Serf's member tags carry `vsn_min` and
/// `vsn_max`: a tag, so that 0.1.0 agents still decode the record. A record
/// without it is 0.1.0's, which speaks version 1 only.
pub const WIRE_TAG: &str = "wire";

/// The node record tag of an agent that is also a member of the WAN pool
/// (`wan = true`): its WAN gossip address, where the agents of its
/// datacenter send what they forward to other datacenters. Consul's
/// servers carry theirs in the same way (`wan_join_port`).
pub const WAN_TAG: &str = "wan";

/// Tags the agent sets itself; an operator's `--tag` can't use them.
pub const RESERVED_TAGS: [&str; 3] = [NODE_ID_TAG, WIRE_TAG, WAN_TAG];

/// The value of [`WIRE_TAG`] for `range`.
pub fn wire_tag(range: WireRange) -> String {
    format!("{}-{}", range.min, range.max)
}

/// Prefix of the service meta keys that carry the service's tagged
/// addresses (`:tagged:lan` = `10.0.0.1:8080`). User meta keys can't
/// contain `:`, so the two never collide; like [`NODE_ID_TAG`], this keeps
/// the record readable by earlier agents.
pub const TAGGED_ADDRESS_PREFIX: &str = ":tagged:";

impl ServiceRecord {
    /// The meta the service was registered with, without the tagged
    /// addresses riding in it.
    pub fn user_meta(&self) -> BTreeMap<&str, &str> {
        self.meta
            .iter()
            .filter(|(key, _)| !key.starts_with(TAGGED_ADDRESS_PREFIX))
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect()
    }

    /// The service's tagged addresses: name → (address, port).
    pub fn tagged_addresses(&self) -> BTreeMap<&str, (&str, u16)> {
        self.meta
            .iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix(TAGGED_ADDRESS_PREFIX)?;
                let (address, port) = value.rsplit_once(':')?;
                Some((name, (address, port.parse().ok()?)))
            })
            .collect()
    }
}

/// Shoal's three-way health of a service instance or node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Every check passes.
    Healthy,
    /// Some check is not passing, but no critical one is critical.
    Degraded,
    /// A critical check is critical (or the node is down).
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }

    /// Aggregates checks: critical checks decide "unhealthy", the rest can
    /// only make it "degraded".
    pub fn of<'a>(checks: impl IntoIterator<Item = &'a CheckRecord>) -> Health {
        let mut health = Health::Healthy;
        for check in checks {
            let this = match check.status {
                CheckStatus::Passing => Health::Healthy,
                CheckStatus::Critical if check.critical => Health::Unhealthy,
                _ => Health::Degraded,
            };
            health = health.max(this);
        }
        health
    }
}

/// Consul's aggregate: the worst status among the checks (passing if none).
pub fn worst_status<'a>(checks: impl IntoIterator<Item = &'a CheckRecord>) -> CheckStatus {
    checks
        .into_iter()
        .map(CheckRecord::consul_status)
        .max()
        .unwrap_or(CheckStatus::Passing)
}

impl NodeRecord {
    /// A fresh record for an agent that just started.
    pub fn new(id: NodeId, name: impl Into<String>) -> Self {
        Self {
            id,
            version: 1,
            name: name.into(),
            datacenter: String::new(),
            tags: BTreeMap::new(),
            left: false,
            services: Vec::new(),
            checks: Vec::new(),
        }
    }

    /// Total order used by the merge rule: newer generation, then newer
    /// version. The address only breaks ties between two agents that
    /// wrongly share a name, so that every node still picks the same one.
    pub fn order(&self) -> (u64, u64, SocketAddr) {
        (self.id.generation, self.version, self.id.addr)
    }

    /// The node's ID (a UUID), if its agent sent one.
    pub fn node_id(&self) -> Option<&str> {
        self.tags.get(NODE_ID_TAG).map(String::as_str)
    }

    /// The wire versions the node's agent advertises ([`WIRE_TAG`]);
    /// [`WireRange::UNADVERTISED`] when it advertises none (0.1.0) or
    /// something unreadable.
    pub fn wire_range(&self) -> WireRange {
        self.tags
            .get(WIRE_TAG)
            .and_then(|value| {
                let (min, max) = value.split_once('-')?;
                let range = WireRange {
                    min: min.parse().ok()?,
                    max: max.parse().ok()?,
                };
                (range.min >= 1 && range.min <= range.max).then_some(range)
            })
            .unwrap_or(WireRange::UNADVERTISED)
    }

    /// The operator's tags (Consul's node meta), without the node ID and
    /// the wire versions.
    pub fn user_tags(&self) -> BTreeMap<&str, &str> {
        self.tags
            .iter()
            .filter(|(key, _)| !RESERVED_TAGS.contains(&key.as_str()))
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect()
    }

    /// Whether this record replaces `other` under the merge rule.
    pub fn supersedes(&self, other: &NodeRecord) -> bool {
        self.order() > other.order()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: CheckStatus, critical: bool) -> CheckRecord {
        CheckRecord {
            id: "c".into(),
            name: "c".into(),
            kind: "http".into(),
            status,
            critical,
            notes: String::new(),
            output: String::new(),
        }
    }

    #[test]
    fn reserved_tags_and_meta_are_kept_apart_from_the_users() {
        let mut record = NodeRecord::new(NodeId::seed("127.0.0.1:1".parse().unwrap()), "n");
        record.tags.insert("role".into(), "web".into());
        assert_eq!(record.node_id(), None);
        record.tags.insert(NODE_ID_TAG.into(), "uuid".into());
        assert_eq!(record.node_id(), Some("uuid"));
        assert_eq!(record.user_tags(), BTreeMap::from([("role", "web")]));
        let service = ServiceRecord {
            id: "w".into(),
            name: "w".into(),
            address: String::new(),
            port: 1,
            tags: Vec::new(),
            meta: BTreeMap::from([
                ("v".into(), "1".into()),
                (format!("{TAGGED_ADDRESS_PREFIX}lan"), "::1:80".into()),
                (format!("{TAGGED_ADDRESS_PREFIX}bad"), "no-port".into()),
            ]),
            checks: Vec::new(),
        };
        assert_eq!(service.user_meta(), BTreeMap::from([("v", "1")]));
        assert_eq!(
            service.tagged_addresses(),
            BTreeMap::from([("lan", ("::1", 80))])
        );
    }

    #[test]
    fn critical_checks_decide_unhealthy_others_only_degrade() {
        use CheckStatus::*;
        assert_eq!(Health::of([]), Health::Healthy);
        assert_eq!(
            Health::of(&[check(Passing, true), check(Passing, false)]),
            Health::Healthy
        );
        assert_eq!(
            Health::of(&[check(Passing, true), check(Critical, false)]),
            Health::Degraded
        );
        assert_eq!(Health::of(&[check(Warning, true)]), Health::Degraded);
        assert_eq!(
            Health::of(&[check(Critical, true), check(Passing, false)]),
            Health::Unhealthy
        );
        assert_eq!(worst_status(&[check(Critical, false)]), Warning);
        assert_eq!(
            worst_status(&[check(Critical, true), check(Warning, true)]),
            Critical
        );
        assert_eq!(worst_status(&[]), Passing);
    }
}
