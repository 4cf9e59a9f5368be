//! Our node name: nobody else may hold it.
//!
//! Records are keyed by node name, so two agents with one name would hide
//! each other's services. A newcomer (a node with seeds to join) therefore
//! holds its record back until it has checked its name: it leaves its
//! name out of its anti-entropy digests and asks for any other record of
//! it, so the first exchange it completes brings the record the cluster
//! holds for that name, if any (see `ClusterState::set_claimed`).
//!
//! - A record of our name from another identity that is alive (a member
//!   at its address, alive or suspect, at least as new) means the name is
//!   taken: [`NameEvent::Taken`]; the node never offers its record, and the
//!   driver refuses to join (Consul refuses such a join too).
//! - Our own earlier identities do not count: the same address with a
//!   lower generation (a restart), or the generation our data dir used
//!   last (a restart at another address; see
//!   [`Node::set_previous_generation`]). Nor does a holder that is down or
//!   unknown: an agent that moved keeps its name.
//! - Otherwise the node claims the name: it offers and gossips its record.
//!
//! A rival that turns up after the name was claimed (two sides of a
//! partition each started an agent of that name) is reported as
//! [`NameEvent::Conflict`] and named by [`Node::name_rival`] until it is
//! gone: refusing is no longer possible, the operator must act.

use foca::State;

use super::Node;
use crate::identity::NodeId;
use crate::rumor::Rumor;

/// What happened to our node name; the driver reads these with
/// [`Node::take_name_events`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameEvent {
    /// Another live agent holds our name: we have not offered our record
    /// to anyone, and must not join.
    Taken { holder: NodeId },
    /// Another live agent claims the name we hold.
    Conflict { rival: NodeId },
    /// The rival reported by `Conflict` is gone.
    Resolved { rival: NodeId },
}

impl Node {
    /// Tells which generation this agent's data dir used before this
    /// start: a record with it is our own earlier identity, not a rival.
    pub fn set_previous_generation(&mut self, generation: u64) {
        self.lock_state().set_previous_generation(generation);
    }

    /// Whether our name is checked and our record offered to peers.
    pub fn name_claimed(&self) -> bool {
        self.lock_state().claimed()
    }

    /// The live agent that also claims our name, once we hold it.
    pub fn name_rival(&self) -> Option<NodeId> {
        self.name_rival
    }

    /// What happened to our name since the last call.
    pub fn take_name_events(&mut self) -> Vec<NameEvent> {
        std::mem::take(&mut self.name_events)
    }

    /// Looks at the identities that claimed our name since the last call.
    /// `exchange_over`: an anti-entropy exchange just completed, so a
    /// newcomer has seen the cluster's record of its name, if any.
    pub(super) fn check_name(&mut self, exchange_over: bool) {
        let rivals = self.lock_state().take_rivals();
        let live = rivals.into_iter().find(|id| self.is_live(*id));
        if self.name_taken {
            return;
        }
        if !self.name_claimed() {
            match live {
                Some(holder) => {
                    self.name_taken = true;
                    self.name_events.push(NameEvent::Taken { holder });
                }
                None if exchange_over => self.claim_name(),
                None => {}
            }
            return;
        }
        match (live, self.name_rival) {
            (Some(rival), current) if current != Some(rival) => {
                self.name_rival = Some(rival);
                self.name_events.push(NameEvent::Conflict { rival });
                self.changed = true;
            }
            (None, Some(rival)) if !self.is_live(rival) => {
                self.name_rival = None;
                self.name_events.push(NameEvent::Resolved { rival });
                self.changed = true;
            }
            _ => {}
        }
    }

    /// Whether a member at `id`'s address, at least as new, is alive or
    /// suspect in our table.
    fn is_live(&self, id: NodeId) -> bool {
        self.swim.iter_membership_state().any(|member| {
            let member_id = member.id();
            member_id.addr == id.addr
                && member_id.generation >= id.generation
                && matches!(member.state(), State::Alive | State::Suspect)
        })
    }

    /// Our name is free: offer our record and gossip it.
    fn claim_name(&mut self) {
        let record = {
            let mut state = self.lock_state();
            state.set_claimed(true);
            state.local().clone()
        };
        self.changed = true;
        if let Err(error) = self.swim.add_broadcast(&Rumor::encode_for(&record)) {
            debug_assert!(false, "our own rumor was refused: {error}");
        }
        if self.swim.num_members() > 0 {
            let _ = self.swim.gossip(&mut self.effects);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::anti_entropy::SyncMessage;
    use crate::envelope::{Envelope, cluster_id};
    use crate::node::GossipConfig;
    use crate::record::NodeRecord;

    fn id(last: u8, generation: u64) -> NodeId {
        NodeId {
            addr: SocketAddr::from(([127, 0, 0, last], 7946)),
            generation,
        }
    }

    /// A node named `name` at `id`, joining through `seeds`.
    fn node(name: &str, id: NodeId, seeds: &[NodeId]) -> Node {
        let config = GossipConfig {
            seeds: seeds.iter().map(|seed| seed.addr).collect(),
            ..GossipConfig::default()
        };
        let envelope = Envelope::new(cluster_id("test"));
        let mut node = Node::new(NodeRecord::new(id, name), config, envelope, 7);
        node.update_local(|record| {
            record.tags.insert("at".into(), id.to_string());
        });
        node
    }

    /// One whole anti-entropy exchange opened by `initiator`.
    fn exchange(initiator: &mut Node, responder: &mut Node) {
        let mut delta = responder.on_sync(initiator.sync_open()).expect("delta");
        if let SyncMessage::Delta(d) = &delta
            && d.resend
        {
            let full = initiator.on_sync(delta).expect("the full digest");
            delta = responder.on_sync(full).expect("delta");
        }
        let records = initiator.on_sync(delta).expect("records");
        assert!(responder.on_sync(records).is_none());
    }

    fn holder_of(node: &Node, name: &str) -> Option<NodeId> {
        node.records()
            .into_iter()
            .find(|record| record.name == name)
            .map(|record| record.id)
    }

    #[test]
    fn a_newcomer_whose_name_a_live_agent_holds_never_offers_its_record() {
        let mut holder = node("dup", id(1, 10), &[]);
        let mut witness = node("witness", id(2, 10), &[id(1, 10)]);
        witness.assume_members([id(1, 10)]);
        exchange(&mut witness, &mut holder);
        assert!(holder.name_claimed() && witness.name_claimed());

        // The newcomer is newer: offered, its record would win everywhere.
        let mut newcomer = node("dup", id(3, 20), &[id(2, 10)]);
        newcomer.assume_members([id(1, 10), id(2, 10)]);
        assert!(!newcomer.name_claimed());
        exchange(&mut newcomer, &mut witness);
        assert_eq!(
            newcomer.take_name_events(),
            [NameEvent::Taken { holder: id(1, 10) }]
        );
        assert!(!newcomer.name_claimed());
        // Nothing it says carries its record, whoever asks.
        exchange(&mut witness, &mut newcomer);
        exchange(&mut newcomer, &mut holder);
        assert_eq!(holder_of(&witness, "dup"), Some(id(1, 10)));
        assert_eq!(holder_of(&holder, "dup"), Some(id(1, 10)));
        assert!(!newcomer.name_claimed());
        assert!(newcomer.take_name_events().is_empty(), "reported once");
    }

    #[test]
    fn a_restart_at_the_same_address_or_from_the_same_data_dir_keeps_its_name() {
        let mut old = node("web", id(1, 10), &[]);
        let mut witness = node("witness", id(2, 10), &[]);
        witness.assume_members([id(1, 10)]);
        exchange(&mut witness, &mut old);
        assert_eq!(holder_of(&witness, "web"), Some(id(1, 10)));

        // Restarted at its address before anyone noticed the old one died.
        let mut restarted = node("web", id(1, 11), &[id(2, 10)]);
        restarted.assume_members([id(2, 10)]);
        exchange(&mut restarted, &mut witness);
        assert!(restarted.name_claimed());
        assert!(restarted.take_name_events().is_empty());
        exchange(&mut witness, &mut restarted);
        assert_eq!(holder_of(&witness, "web"), Some(id(1, 11)));

        // Moved to another address with its data dir, the old identity
        // still alive in everyone's eyes.
        let mut moved = node("web", id(3, 12), &[id(2, 10)]);
        moved.set_previous_generation(11);
        moved.assume_members([id(1, 11), id(2, 10)]);
        exchange(&mut moved, &mut witness);
        assert!(moved.name_claimed());
        assert!(moved.take_name_events().is_empty());
        exchange(&mut witness, &mut moved);
        assert_eq!(holder_of(&witness, "web"), Some(id(3, 12)));
    }

    #[test]
    fn a_holder_that_is_down_or_unknown_does_not_keep_the_name() {
        let mut old = node("web", id(1, 10), &[]);
        let mut witness = node("witness", id(2, 10), &[]);
        witness.assume_members([id(1, 10)]);
        exchange(&mut witness, &mut old);
        // A new agent (wiped data dir) elsewhere: the old one is unknown
        // to it, and its peer no longer lists it alive.
        let mut witness = {
            let mut fresh = node("witness", id(2, 11), &[]);
            fresh.on_sync(crate::anti_entropy::SyncMessage::Records(
                crate::anti_entropy::Records {
                    records: old.records(),
                    kv: crate::anti_entropy::KvPage::default(),
                },
            ));
            fresh
        };
        let mut replacement = node("web", id(3, 20), &[id(2, 11)]);
        replacement.assume_members([id(2, 11)]);
        exchange(&mut replacement, &mut witness);
        assert!(replacement.name_claimed());
        assert!(replacement.take_name_events().is_empty());
    }

    #[test]
    fn a_rival_after_the_name_is_claimed_is_reported_once() {
        let mut first = node("dup", id(1, 10), &[]);
        let mut second = node("dup", id(2, 20), &[]);
        first.assume_members([id(2, 20)]);
        exchange(&mut first, &mut second);
        assert_eq!(
            first.take_name_events(),
            [NameEvent::Conflict { rival: id(2, 20) }]
        );
        assert_eq!(first.name_rival(), Some(id(2, 20)));
        // Seen again: not news.
        exchange(&mut first, &mut second);
        assert!(first.take_name_events().is_empty());
        assert_eq!(first.local_record().id, id(1, 10));
    }
}
