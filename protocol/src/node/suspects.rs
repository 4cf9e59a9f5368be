//! Which members are suspect now, cheaply. foca reports no notification
//! when it suspects a member or when the member refutes the suspicion, and
//! neither changes a record; the driver compares this fingerprint from
//! time to time to learn that the membership table it shows (and logs)
//! moved.

use std::hash::{Hash, Hasher};

use super::Node;

impl Node {
    /// A fingerprint of the set of suspect members (0 when there is none):
    /// it changes when a member becomes suspect or stops being suspect.
    /// One pass over the members, no allocation.
    pub fn suspects_fingerprint(&self) -> u64 {
        self.swim
            .iter_membership_state()
            .filter(|member| member.state() == foca::State::Suspect)
            .map(|member| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                member.id().hash(&mut hasher);
                hasher.finish()
            })
            .fold(0, |fingerprint, hash| fingerprint ^ hash.rotate_left(1) ^ 1)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use crate::envelope::Envelope;
    use crate::identity::NodeId;
    use crate::node::GossipConfig;
    use crate::record::NodeRecord;

    use super::*;

    #[test]
    fn the_fingerprint_is_zero_without_suspects() {
        let id = NodeId {
            addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
            generation: 1,
        };
        let mut node = Node::new(
            NodeRecord::new(id, "a"),
            GossipConfig::default(),
            Envelope::new(1),
            7,
        );
        node.set_clock(Duration::from_secs(1_000));
        node.start();
        node.assume_members([NodeId {
            addr: SocketAddr::from(([127, 0, 0, 2], 7946)),
            generation: 1,
        }]);
        assert_eq!(node.suspects_fingerprint(), 0);
    }
}
