//! Forgetting members that are gone, and the operator's force-leave.
//!
//! A member declared down is kept (and listed) for a while, then forgotten
//! with its record: `reconnect_timeout` (72 h) if it failed, because it
//! may come back when a partition heals and is tried now and then until
//! then; `tombstone_timeout` (24 h) once it left, counted from when this
//! node saw it leave. foca has one `remove_down_after` for both, so it is
//! off and the node delivers foca's `RemoveDown` itself, on a timer per
//! member ([`NodeTimer::Reap`]).
//!
//! `force-leave` moves a failed member to left: the node writes the
//! member's record once more with `left` set and a version one higher, and
//! gossips it. This is the one record a node writes for another: the
//! member is down, so it writes nothing itself, and when its agent comes
//! back it comes with a newer generation, whose record supersedes this
//! one. Records travel by rumor and anti-entropy, so every agent hears of
//! the leave, and each reaps the member on the left schedule.
//! `force-leave -prune` also gossips [`Rumor::Prune`](crate::rumor::Rumor):
//! every agent that holds the member as down forgets it now, and stale
//! gossip about it is not taken back (the state remembers it as reaped).
//!
//! A live member is never forced out: it would be back at its next probe
//! (Consul leaves a live member listed too). One that only looked failed
//! to the forcing agent (cut off from it) refutes: when the forced copy
//! of its record reaches it, it gossips its record with a newer version.

use std::time::Duration;

use super::members::MemberStatus;
use super::{Node, NodeTimer};
use crate::identity::NodeId;
use crate::rumor::Rumor;

/// Most prunes held for members still suspect here; past it they are
/// dropped (those members are then reaped on their schedule).
pub(super) const MAX_PRUNE_WHEN_DOWN: usize = 4096;

/// What a force-leave did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForceLeft {
    /// The failed member is now left, here and (by gossip) everywhere.
    Left,
    /// The member was already left; nothing changed.
    AlreadyLeft,
    /// The member was forgotten here, and the prune is gossiped.
    Pruned,
}

/// Why a force-leave was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForceLeaveError {
    #[error("no member named `{0}` (names as `shoal members` lists them)")]
    Unknown(String),
    #[error(
        "`{0}` is this agent itself: force-leave removes failed members; run `shoal leave` (or stop the agent) to leave"
    )]
    Local(String),
    #[error(
        "member `{name}` is {status}, not failed: force-leave only moves failed members to left, since a live member would be back at its next probe (Consul leaves it listed too); stop its agent first, or run `shoal leave` on it"
    )]
    Live { name: String, status: &'static str },
    #[error(
        "member `{old}` runs Shoal 0.1.0, which can't read the prune rumor `-prune` gossips (it would drop the gossip after it); upgrade every agent first, or force-leave without -prune (the member then goes at the end of tombstone_timeout)"
    )]
    PruneNeedsUpgrade { old: String },
}

impl Node {
    /// Moves the failed member `name` to left everywhere; with `prune`,
    /// forgets it (failed or left) on every agent now. See the module docs.
    pub fn force_leave(&mut self, name: &str, prune: bool) -> Result<ForceLeft, ForceLeaveError> {
        let member = self
            .members()
            .into_iter()
            .find(|member| member.name() == name)
            .ok_or_else(|| ForceLeaveError::Unknown(name.to_string()))?;
        if member.id == self.identity() {
            return Err(ForceLeaveError::Local(name.to_string()));
        }
        if prune && let Some(old) = self.member_without_wire_versions() {
            return Err(ForceLeaveError::PruneNeedsUpgrade { old });
        }
        let done = match member.status {
            MemberStatus::Alive | MemberStatus::Suspect | MemberStatus::Leaving => {
                return Err(ForceLeaveError::Live {
                    name: name.to_string(),
                    status: member.status.as_str(),
                });
            }
            MemberStatus::Left => ForceLeft::AlreadyLeft,
            MemberStatus::Failed => {
                // Failed members without a record are not listed, so
                // there is one.
                if let Some(mut record) = member.record {
                    record.left = true;
                    record.version += 1;
                    self.lock_state().merge(record.clone());
                    if let Err(error) = self.swim.add_broadcast(&Rumor::encode_for(&record)) {
                        debug_assert!(false, "a forced leave was refused: {error}");
                    }
                }
                ForceLeft::Left
            }
        };
        let done = if prune {
            self.lock_state().offer_prune(member.id);
            if let Err(error) = self
                .swim
                .add_broadcast(&crate::codec::encode(&Rumor::Prune(member.id)))
            {
                debug_assert!(false, "a prune was refused: {error}");
            }
            ForceLeft::Pruned
        } else {
            done
        };
        if self.swim.num_members() > 0 {
            let _ = self.swim.gossip(&mut self.effects);
        }
        self.after_swim();
        self.changed = true;
        Ok(done)
    }

    /// A member went down: it is forgotten after `reconnect_timeout`, or
    /// `tombstone_timeout` if it left; at once if it was pruned.
    pub(super) fn schedule_reap(&mut self, id: NodeId) {
        if self.prune_when_down.remove(&id) || self.lock_state().is_reaped(&id) {
            self.reap(id);
            return;
        }
        let left = self
            .lock_state()
            .records()
            .any(|record| record.id == id && record.left);
        self.reaps.insert(id, left);
        let after = self.reap_after(left);
        self.effects
            .timers
            .push((after, NodeTimer::Reap { id, left }));
    }

    fn reap_after(&self, left: bool) -> Duration {
        if left {
            self.config.tombstone_timeout
        } else {
            self.config.reconnect_timeout
        }
    }

    /// The `Reap` timer: forgets the member if this is its latest
    /// schedule (a failed member that left since has a later one).
    pub(super) fn on_reap_timer(&mut self, id: NodeId, left: bool) {
        if self.reaps.get(&id) == Some(&left) {
            self.reaps.remove(&id);
            self.reap(id);
        }
    }

    /// Acts on departures the state gathered: down members whose record
    /// now says they left move to the left schedule; prunes are carried
    /// out where the member is down (or unknown).
    pub(super) fn take_departures(&mut self) {
        if self.lock_state().take_refute() {
            // Gossips our record with a version above the forced one.
            self.update_local(|_| {});
        }
        let (left, prunes) = self.lock_state().take_departures();
        for id in left {
            if self.reaps.get(&id) == Some(&false) {
                self.reaps.insert(id, true);
                let after = self.reap_after(true);
                self.effects
                    .timers
                    .push((after, NodeTimer::Reap { id, left: true }));
            }
        }
        for id in prunes {
            match self.member_state(id.addr) {
                Some((known, foca::State::Down)) if known == id => {
                    self.reaps.remove(&id);
                    self.reap(id);
                }
                // Suspected here: pruned once it is declared down.
                Some((known, foca::State::Suspect)) if known == id => {
                    if self.prune_when_down.len() >= MAX_PRUNE_WHEN_DOWN {
                        self.prune_when_down.clear();
                    }
                    self.prune_when_down.insert(id);
                }
                // Live here: a partition hides it from whoever pruned it.
                Some((known, _)) if known == id => {}
                _ => self.lock_state().mark_reaped(id),
            }
        }
    }

    /// foca learned members since we last looked: those we reaped (stale
    /// gossip can carry a down member we forgot) and earlier identities of
    /// ours are forgotten again; members first heard of as already down,
    /// for which foca reports no `MemberDown` (a newcomer joining while a
    /// failure is still news), get their reap scheduled here.
    pub(super) fn drop_reaped_again(&mut self) {
        let known = self.swim.iter_membership_state().len();
        let grew = known > self.known_members;
        self.known_members = known;
        if !grew {
            return;
        }
        let me = self.identity();
        let (again, rest): (Vec<NodeId>, Vec<NodeId>) = {
            let state = self.lock_state();
            self.swim
                .iter_membership_state()
                .filter(|member| member.state() == foca::State::Down)
                .map(|member| *member.id())
                // An earlier identity of ours, down: we are alive under
                // the current one and must not list ourselves as failed.
                .partition(|id| state.is_reaped(id) || (id.addr == me.addr && *id != me))
        };
        for id in again {
            self.reaps.remove(&id);
            self.reap(id);
        }
        for id in rest {
            if !self.reaps.contains_key(&id) {
                self.schedule_reap(id);
            }
            // Answer its datagrams with `TurnUndead`, as for a member we
            // saw go down: else a member every agent learned as down (each
            // restarted while it was cut off) is never told, and its
            // datagrams are ignored until it finds out by itself.
            let known = self.down.entry(id.addr).or_insert(id);
            if known.generation < id.generation {
                *known = id;
            }
        }
    }

    /// Forgets the down member `id` now, with its record.
    fn reap(&mut self, id: NodeId) {
        if let Err(error) = self
            .swim
            .handle_timer(foca::Timer::RemoveDown(id), &mut self.effects)
        {
            debug_assert!(false, "foca refused RemoveDown: {error}");
        }
        self.known_members = self.swim.iter_membership_state().len();
        self.forget_if_removed(id);
        self.changed = true;
    }
}
