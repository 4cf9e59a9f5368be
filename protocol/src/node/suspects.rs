//! Suspects: which members are suspect now, cheaply, and the accusations
//! that make a suspicion shorter (Lifeguard's dynamic suspicion, see
//! [`crate::suspicion`]).
//!
//! foca reports no notification when it suspects a member or when the
//! member refutes the suspicion, and neither changes a record; the driver
//! compares [`Node::suspects_fingerprint`] from time to time to learn that
//! the membership table it shows (and logs) moved.

use std::hash::{Hash, Hasher};

use bytes::{Buf, BufMut};
use foca::{Codec, Runtime};

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
    pub fn suspicion_stats(&self) -> &crate::suspicion::SuspicionCounters {
        self.effects.suspicions.stats()
    }

    /// Whether no active member is a 0.1.0 agent (see
    /// [`Node::member_without_wire_versions`]). 0.2.0 and later skip a
    /// rumor kind they don't know and read on, while a 0.1.0 agent drops
    /// the rest of the datagram after it, which could be records and KV
    /// writes. While one is a member (during a rolling upgrade from 0.1.0)
    /// no accusation is gossiped and suspicions keep foca's fixed timeout:
    /// without confirmations, every one would last `Max`. Looked at once
    /// per probe period.
    pub(super) fn all_read_accusations(&self) -> bool {
        self.member_without_wire_versions().is_none()
    }

    /// The name of an active member whose record advertises no wire
    /// versions: a 0.1.0 agent. A member whose record has not arrived yet
    /// is not one (records arrive within seconds, and a dropped rumor is
    /// retransmitted and repaired by anti-entropy).
    pub(super) fn member_without_wire_versions(&self) -> Option<String> {
        let state = self.lock_state();
        let local = state.local().id;
        state
            .records()
            .filter(|record| {
                record.id != local && !record.tags.contains_key(crate::record::WIRE_TAG)
            })
            .find(|old| {
                self.swim
                    .iter_members()
                    .any(|member| member.id() == &old.id)
            })
            .map(|old| old.name.clone())
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

    /// Lifeguard's buddy system: tells each suspect we just sent something
    /// to (at most once a probe period, see
    /// [`crate::suspicion::Suspicions::remind`]) that we suspect it, in a
    /// datagram of its own: a foca gossip message whose one update is the
    /// suspicion. Any agent's foca refutes a suspicion about itself at
    /// once, so this needs no new wire format, and a member that already
    /// refuted (a higher incarnation) ignores it.
    pub(super) fn remind_suspects(&mut self) {
        if self.effects.reminders.is_empty() {
            return;
        }
        let us = self.identity();
        for (suspect, incarnation) in std::mem::take(&mut self.effects.reminders) {
            // foca may hold it alive (refuted), down or suspect at
            // another incarnation by now.
            let still = self.swim.iter_membership_state().any(|member| {
                member.id() == &suspect
                    && member.state() == foca::State::Suspect
                    && member.incarnation() == incarnation
            });
            if !still {
                self.effects.suspicions.settled(&suspect, incarnation);
                continue;
            }
            let header = foca::Header {
                src: us,
                src_incarnation: self.effects.incarnation,
                dst: suspect,
                message: foca::Message::Gossip,
            };
            let update = foca::Member::new(suspect, incarnation, foca::State::Suspect);
            let mut packet = Vec::with_capacity(96);
            let mut codec = crate::codec::SwimCodec;
            let encoded = codec.encode_header(&header, &mut packet).and_then(|()| {
                packet.put_u16(1);
                codec.encode_member(&update, &mut packet)
            });
            // Our own identities always encode.
            if encoded.is_ok() {
                self.effects.send_to(suspect, &packet);
                self.effects.suspicions.count_reminder();
            }
        }
    }

    /// The other half of [`Node::remind_suspects`]: a reminder (a gossip
    /// message whose one update is a suspicion of us) at an incarnation
    /// below ours means that the sender missed our refutation, while
    /// foca ignores it as old news. Gossip has stopped carrying the
    /// refutation by then, and the sender may go on to declare us down at
    /// that old incarnation (if a probe of its own fails), which the whole
    /// cluster would take. So we announce ourselves to it (at most once a
    /// second): the header carries our incarnation, and it takes it.
    pub(super) fn answer_stale_suspicion(
        &mut self,
        header: &foca::Header<crate::identity::NodeId>,
        mut rest: &[u8],
    ) {
        if header.message != foca::Message::Gossip || rest.len() < 2 || rest.get_u16() != 1 {
            return;
        }
        let Ok(update) = crate::codec::SwimCodec.decode_member(&mut rest) else {
            return;
        };
        let us = self.identity();
        if update.id() == &us
            && update.state() == foca::State::Suspect
            && update.incarnation() < self.effects.incarnation
        {
            self.announce_to_stale(header.src);
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

    #[test]
    fn accusations_wait_for_the_last_0_1_0_member_to_go() {
        let id = |last: u8| NodeId {
            addr: SocketAddr::from(([127, 0, 0, last], 7946)),
            generation: 1,
        };
        let mut node = Node::new(
            NodeRecord::new(id(1), "a"),
            GossipConfig::default(),
            Envelope::new(1),
            7,
        );
        node.set_clock(Duration::from_secs(1_000));
        node.start();
        node.assume_members([id(2)]);
        assert!(
            node.all_read_accusations(),
            "a member whose record has not arrived counts as a reader"
        );
        // A 0.1.0 agent's record advertises no wire versions.
        let old = NodeRecord::new(id(2), "old");
        node.lock_state().merge(old.clone());
        assert!(!node.all_read_accusations());
        // A prune would make it drop gossip too: refused, nothing changed.
        assert_eq!(
            node.force_leave("old", true),
            Err(crate::node::ForceLeaveError::PruneNeedsUpgrade { old: "old".into() })
        );
        // It upgraded: same identity, a newer record with the tag.
        let mut upgraded = old;
        upgraded.version += 1;
        upgraded.tags.insert(
            crate::record::WIRE_TAG.into(),
            crate::record::wire_tag(node.envelope.range()),
        );
        node.lock_state().merge(upgraded);
        assert!(node.all_read_accusations());
    }
}
