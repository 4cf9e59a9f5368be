//! What peers can make the node hold and do, bounded: pulls of what digest
//! rumors announce (see [`crate::pull`]), members learned from an exchange,
//! and records of members long gone.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{Node, NodeTimer};
use crate::identity::NodeId;
use crate::pull::{PULL_TICK, PullSource};

/// Most members one anti-entropy exchange may teach a node that holds
/// `known` members (down ones included): twice as many plus 64. A real
/// peer's list differs from ours by the members that joined since the last
/// exchange, far fewer; a forged list of a million members adds at most
/// this many (which foca then probes, finds dead and forgets after
/// `reconnect_timeout`).
pub fn max_learned(known: usize) -> usize {
    2 * (known + 1) + 64
}

impl Node {
    /// Starts the pulls that are due, each from a member we hold active:
    /// the payload's address only if it is one, else the member that
    /// gossiped the digest, else (and for later attempts) any member.
    pub(super) fn start_pulls(&mut self, due: Vec<PullSource>) {
        for source in due {
            let active = |addr: SocketAddr| self.swim.iter_members().any(|m| m.id().addr == addr);
            let target = match source.attempt {
                0 if active(source.hint) => Some(source.hint),
                0 | 1 if active(source.sender) => Some(source.sender),
                _ => self.random_member(),
            };
            self.effects.syncs.extend(target);
        }
        if !self.pull_timer && !self.lock_state().pulls_mut().is_empty() {
            self.pull_timer = true;
            self.effects.timers.push((PULL_TICK, NodeTimer::Pulls));
        }
    }

    /// The `Pulls` timer: retries what is due, drops what arrived.
    pub(super) fn tick_pulls(&mut self) {
        self.pull_timer = false;
        let due = self.lock_state().tick_pulls();
        self.start_pulls(due);
    }

    /// foca handled `RemoveDown(id)`: if it forgot the member, its record
    /// goes too.
    pub(super) fn forget_if_removed(&mut self, id: NodeId) {
        if self
            .member_state(id.addr)
            .is_some_and(|(known, _)| known == id)
        {
            return;
        }
        if !self.lock_state().forget_member(id).is_empty() {
            self.changed = true;
        }
    }

    /// Drops records that no member foca knows backs (see
    /// [`crate::state::ClusterState::sweep_orphans`]).
    pub(super) fn sweep_orphans(&mut self) {
        let mut known: HashMap<SocketAddr, u64> = HashMap::new();
        for member in self.swim.iter_membership_state() {
            let generation = known.entry(member.id().addr).or_default();
            *generation = (*generation).max(member.id().generation);
        }
        if !self.lock_state().sweep_orphans(&known).is_empty() {
            self.changed = true;
        }
    }
}
