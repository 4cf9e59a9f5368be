//! Suspects: which members are suspect now, cheaply, and the accusations
//! that make a suspicion shorter (Lifeguard's dynamic suspicion, see
//! [`crate::suspicion`]).
//!
//! foca reports no notification when it suspects a member or when the
//! member refutes the suspicion, and neither changes a record; the driver
//! compares [`Node::suspects_fingerprint`] from time to time to learn that
//! the membership table it shows (and logs) moved.

use std::hash::{Hash, Hasher};

use super::{Node, NodeTimer};
use crate::rumor::Rumor;

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

    /// What dynamic suspicion has done so far.
    pub fn suspicion_stats(&self) -> &crate::suspicion::SuspicionStats {
        self.effects.suspicions.stats()
    }

    /// Whether no active member's record says it is a 0.1.0 agent (one
    /// that advertises no wire versions). 0.2.0 and later skip a rumor
    /// kind they don't know and read on, while a 0.1.0 agent drops the
    /// rest of the datagram after it, which could be records and KV
    /// writes. While one is a member (during a rolling upgrade from 0.1.0)
    /// no accusation is gossiped and suspicions keep foca's fixed timeout:
    /// without confirmations, every one would last `Max`. A member whose
    /// record has not arrived yet counts as a reader (records arrive
    /// within seconds, and a dropped rumor is retransmitted and repaired by
    /// anti-entropy). Looked at once per probe period.
    pub(super) fn all_read_accusations(&self) -> bool {
        let state = self.lock_state();
        let local = state.local().id;
        state
            .records()
            .filter(|record| {
                record.id != local && !record.tags.contains_key(crate::record::WIRE_TAG)
            })
            .all(|old| {
                self.swim
                    .iter_members()
                    .all(|member| member.id() != &old.id)
            })
    }

    /// Gossips an accusation for each member our own probes failed to
    /// reach (and foca now holds suspect), then counts every accusation
    /// offered since the last step, ours and peers': one that shortens a
    /// suspicion delivers foca's timer earlier.
    pub(super) fn accuse_and_confirm(&mut self) {
        let us = self.identity();
        for target in std::mem::take(&mut self.effects.failed_probes) {
            let Some(incarnation) = self
                .swim
                .iter_membership_state()
                .find(|member| member.id() == &target && member.state() == foca::State::Suspect)
                .map(|member| member.incarnation())
            else {
                continue;
            };
            // Counted here either way; gossiped only while it can still
            // shorten the suspicion (peers count the same accusers), and
            // only once every member reads it (see `all_read_accusations`).
            let wanted = self.effects.suspicion.dynamic
                && self.effects.suspicions.wants_accusers(&target, incarnation);
            if self.lock_state().offer_accusation(target, incarnation, us) && wanted {
                let rumor = Rumor::Accuse {
                    target,
                    incarnation,
                    accuser: us,
                };
                // Refused only when our own rumor fails to encode.
                let _ = self.swim.add_broadcast(&crate::codec::encode(&rumor));
            }
        }
        let accusations = self.lock_state().take_accusations();
        let Some(now) = self.effects.now else {
            return;
        };
        for accusation in accusations {
            if accusation.target == us {
                continue;
            }
            if let Some((delay, timer)) = self.effects.suspicions.accuse(
                accusation.target,
                accusation.incarnation,
                accusation.accuser,
                now,
            ) {
                self.effects.timers.push((delay, NodeTimer::Swim(timer)));
            }
        }
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
