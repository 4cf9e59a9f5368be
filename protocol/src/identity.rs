//! The identity foca gossips about: where a node listens, and which
//! incarnation of the agent process is there.

use std::fmt;
use std::net::SocketAddr;

use bincode::{Decode, Encode};

/// A node's identity in the SWIM membership.
///
/// Small and fixed-size on purpose: foca copies it into every message.
/// The human-readable node name travels in the node record instead
/// (see [`crate::record::NodeRecord`]).
///
/// `generation` grows every time the agent starts (it is persisted in the
/// data directory, and never lower than the wall clock in milliseconds), so a
/// restarted agent at the same address always wins the address conflict
/// against its previous incarnation, which the cluster may still remember as
/// down.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct NodeId {
    /// The gossip address peers send datagrams to (the advertise address).
    pub addr: SocketAddr,
    /// Incarnation of the agent process at that address.
    pub generation: u64,
}

impl NodeId {
    /// An identity for an address whose generation we don't know yet,
    /// e.g. a seed we announce to. foca accepts an `Announce` sent to any
    /// identity that shares the receiver's address.
    pub fn seed(addr: SocketAddr) -> Self {
        Self {
            addr,
            generation: 0,
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.addr, self.generation)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            addr: self.addr,
            generation: self.generation.checked_add(1)?,
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn renewed_identity_wins_the_address_conflict() {
        let old = NodeId {
            addr: "127.0.0.1:7946".parse().unwrap(),
            generation: 7,
        };
        let new = old.renew().unwrap();
        assert_eq!(new.addr, old.addr);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }
}
