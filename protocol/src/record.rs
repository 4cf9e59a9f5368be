//! The node record: the one piece of cluster state each agent writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bincode::{Decode, Encode};

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
        }
    }

    /// Total order used by the merge rule: newer generation, then newer
    /// version. The address only breaks ties between two agents that
    /// wrongly share a name, so that every node still picks the same one.
    pub fn order(&self) -> (u64, u64, SocketAddr) {
        (self.id.generation, self.version, self.id.addr)
    }

    /// Whether this record replaces `other` under the merge rule.
    pub fn supersedes(&self, other: &NodeRecord) -> bool {
        self.order() > other.order()
    }
}
