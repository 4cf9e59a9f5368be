//! The membership table as the rest of the workspace sees it
//! ([`MemberView`], [`MemberStatus`]), and members added without contact.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::{Node, Phase};
use crate::identity::NodeId;
use crate::record::NodeRecord;

/// How a member looks from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    Alive,
    /// Suspected by someone; still counted as alive.
    Suspect,
    /// Announced its departure and is still reachable.
    Leaving,
    /// Left on purpose.
    Left,
    /// Declared down without having left.
    Failed,
}

impl MemberStatus {
    /// Consul's numeric member status (1 alive, 2 leaving, 3 left, 4 failed).
    pub fn consul_code(self) -> u8 {
        match self {
            MemberStatus::Alive | MemberStatus::Suspect => 1,
            MemberStatus::Leaving => 2,
            MemberStatus::Left => 3,
            MemberStatus::Failed => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

/// One row of the membership table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub status: MemberStatus,
    /// The member's record, once we have it (anti-entropy fetches it right
    /// after the member comes up).
    pub record: Option<NodeRecord>,
}

impl MemberView {
    /// The member's name, or its address while its record is on its way.
    pub fn name(&self) -> String {
        match &self.record {
            Some(record) => record.name.clone(),
            None => self.id.addr.to_string(),
        }
    }
}

impl Node {
    /// Adds members as alive without contacting them, as if a peer had
    /// told us about them. The simulator uses it to start from a converged
    /// cluster (joining 10,000 nodes one gossip at a time would dominate its
    /// run time); the agent joins through its seeds instead.
    pub fn assume_members(&mut self, ids: impl IntoIterator<Item = NodeId>) {
        let members = ids.into_iter().map(foca::Member::alive);
        if let Err(error) = self.swim.apply_many(members, false, &mut self.effects) {
            debug_assert!(false, "foca refused assumed members: {error}");
        }
        self.after_swim();
    }

    /// foca's view of the member at `addr`: its identity and SWIM state.
    /// Cheaper than [`Node::members`] (no records, no sorting).
    pub fn member_state(&self, addr: SocketAddr) -> Option<(NodeId, foca::State)> {
        self.swim
            .iter_membership_state()
            .find(|member| member.id().addr == addr)
            .map(|member| (*member.id(), member.state()))
    }

    /// Every identity the failure detector holds down, whether
    /// [`Node::members`] lists it or not (it leaves out one that went down
    /// before we had its record).
    pub fn down_members(&self) -> Vec<NodeId> {
        self.swim
            .iter_membership_state()
            .filter(|member| member.state() == foca::State::Down)
            .map(|member| *member.id())
            .collect()
    }

    /// Records that claimed our name with another identity.
    pub fn name_conflicts(&self) -> u64 {
        self.lock_state().name_conflicts()
    }

    /// The membership table, ourselves included, sorted by name.
    pub fn members(&self) -> Vec<MemberView> {
        let state = self.lock_state();
        let mut by_addr: HashMap<SocketAddr, &NodeRecord> = HashMap::new();
        for record in state.records() {
            let entry = by_addr.entry(record.id.addr).or_insert(record);
            if record.id.generation > entry.id.generation {
                *entry = record;
            }
        }
        let local = state.local();
        let mut members = vec![MemberView {
            id: local.id,
            status: match self.phase {
                Phase::Running => MemberStatus::Alive,
                Phase::Leaving => MemberStatus::Leaving,
                Phase::Left => MemberStatus::Left,
            },
            record: Some(local.clone()),
        }];
        for member in self.swim.iter_membership_state() {
            let id = *member.id();
            let record = by_addr.get(&id.addr).copied();
            // A member that went down before anyone had its record never
            // was a cluster member with a name (a newcomer refused for a
            // name already taken): not listed at all.
            if member.state() == foca::State::Down && record.is_none() {
                continue;
            }
            let left = record.is_some_and(|r| r.id == id && r.left);
            let status = match member.state() {
                foca::State::Alive if left => MemberStatus::Leaving,
                foca::State::Alive => MemberStatus::Alive,
                foca::State::Suspect => MemberStatus::Suspect,
                foca::State::Down if left => MemberStatus::Left,
                foca::State::Down => MemberStatus::Failed,
            };
            members.push(MemberView {
                id,
                status,
                record: record.cloned(),
            });
        }
        members.sort_by_key(MemberView::name);
        members
    }
}
