//! Lifeguard's dynamic suspicion (Dadgar et al., 2018; `suspicion.go` in
//! hashicorp/memberlist).
//!
//! With a fixed suspicion timeout a member that one observer alone could
//! not reach (that observer cut off, starved or lossy) is declared down as
//! fast as one every observer failed to reach. Lifeguard starts each
//! suspicion long, at `Max`, and shortens it as independent members
//! *accuse* the suspect too (their own probe of it failed), down to `Min`
//! once `k` of them have:
//!
//! ```text
//! timeout(c) = max(Min, Max - (Max - Min) * ln(c + 1) / ln(k + 1))
//! Min = suspicion_mult * max(1, log10 n) * probe_period   (foca's fixed timeout)
//! Max = suspicion_max_mult * Min                            (memberlist: 6)
//! k   = suspicion_mult - 2, or 0 when n - 2 < k              (memberlist: 2)
//! ```
//!
//! where `c` counts the accusers beyond the first. A crashed member is
//! accused by every prober within a few probe periods and goes down after
//! about `Min`; a member only a minority lost goes down after up to `Max`,
//! by which time a short cut has usually healed and the member refuted.
//!
//! foca keeps one fixed timeout and its gossip does not say who suspected a
//! member, so Shoal adds the two missing parts around it rather than
//! inside it:
//!
//! - **Accusations** travel as a rumor of our own
//!   ([`crate::rumor::Rumor::Accuse`]: target, its incarnation, accuser),
//!   sent when foca reports that one of *our* probes failed
//!   (`Notification::ProbeFailed`). An older agent skips the unknown rumor
//!   and keeps foca's fixed timeout.
//! - **The timer**: foca asks its runtime for a `ChangeSuspectToDown` timer
//!   after `Min`; the runtime delivers it after the remaining dynamic
//!   timeout instead ([`Suspicions::arm`]), and when accusations shorten it
//!   delivers a copy earlier ([`Suspicions::accuse`]). foca's timer handler
//!   only checks that the member is still suspect at that incarnation, so
//!   the copy that arrives first does the work and the other finds nothing
//!   to do; a refutation raises the incarnation and voids both.
//!
//! Local health (see [`crate::lifeguard`]) still stretches the whole
//! timeout by its multiplier, fixed when the suspicion starts.

use std::collections::HashMap;
use std::time::Duration;

use foca::Timer;

use crate::identity::NodeId;

/// memberlist's `SuspicionMaxTimeoutMult`: `Max` is this many times `Min`.
pub const DEFAULT_MAX_MULT: u32 = 6;

/// Suspicions (and accusations heard before their suspicion) kept at most;
/// past it the oldest go. A cluster has few suspects at a time; the bound
/// only matters against a flood of accusations about made-up members.
const MAX_ENTRIES: usize = 1024;

/// Lifeguard's timeout after `confirmations` accusers beyond the first.
pub fn timeout(min: Duration, max: Duration, k: u32, confirmations: u32) -> Duration {
    if k == 0 || max <= min {
        return min;
    }
    let fraction = f64::from(confirmations + 1).ln() / f64::from(k + 1).ln();
    let span = (max - min).as_secs_f64();
    max.saturating_sub(Duration::from_secs_f64(span * fraction.min(1.0)))
        .max(min)
}

/// How confirmations are counted for a cluster: `k` from the suspicion
/// multiplier, `ceil(suspicion_mult - 2)` (memberlist's `SuspicionMult -
/// 2` for whole multipliers, and a fractional one lowers `Min` without
/// lowering the confirmations it takes to reach it), and the cluster's
/// size (memberlist expects none when fewer than `k` other members could
/// confirm).
pub fn expected_confirmations(suspicion_mult: f64, cluster_size: u32) -> u32 {
    let k = (suspicion_mult - 2.0).max(0.0).ceil() as u32;
    if cluster_size.saturating_sub(2) < k {
        0
    } else {
        k
    }
}

/// The parameters of one suspicion, fixed when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min: Duration,
    pub max: Duration,
    pub k: u32,
    /// Local health's multiplier when the suspicion started.
    pub stretch: u32,
}

#[derive(Clone, Debug)]
struct Armed {
    started: Duration,
    bounds: Bounds,
    /// foca's timer token, for the copies we deliver early.
    token: foca::TimerToken,
    /// The earliest deadline a delivered timer already covers.
    scheduled: Duration,
}

#[derive(Clone, Debug)]
struct Suspicion {
    incarnation: foca::Incarnation,
    /// Distinct members that accused it at this incarnation, in order.
    accusers: Vec<NodeId>,
    armed: Option<Armed>,
    /// When this entry was last touched (for the bound).
    touched: Duration,
    /// When we last told the suspect itself (see [`Suspicions::remind`]).
    reminded: Option<Duration>,
}

impl Suspicion {
    fn new(incarnation: foca::Incarnation, now: Duration) -> Self {
        Self {
            incarnation,
            accusers: Vec::new(),
            armed: None,
            touched: now,
            reminded: None,
        }
    }

    fn confirmations(&self) -> u32 {
        self.accusers.len().saturating_sub(1) as u32
    }

    fn deadline(&self, armed: &Armed) -> Duration {
        let bounds = armed.bounds;
        armed.started
            + timeout(bounds.min, bounds.max, bounds.k, self.confirmations()) * bounds.stretch
    }
}

/// What dynamic suspicion has done so far (monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuspicionCounters {
    /// Accusations that counted (a new accuser of a suspicion).
    pub accusations: u64,
    /// Timers delivered earlier than first scheduled because accusations
    /// shortened a suspicion.
    pub shortened: u64,
    /// Suspicions sent to the suspect itself (Lifeguard's buddy system,
    /// see [`Suspicions::remind`]).
    pub reminders: u64,
}

/// The suspicions foca holds now, with their accusers and deadlines.
#[derive(Debug, Default)]
pub struct Suspicions {
    entries: HashMap<NodeId, Suspicion>,
    stats: SuspicionCounters,
}

impl Suspicions {
    pub fn stats(&self) -> &SuspicionCounters {
        &self.stats
    }

    /// foca armed `timer` (a `ChangeSuspectToDown`): returns the delay to
    /// actually deliver it after. The first arming of a suspicion starts it
    /// at `now` with `bounds`; foca arms again each time a probe of a
    /// member already suspect fails, and those keep the first start.
    /// Other timers pass through as `None`.
    pub fn arm(
        &mut self,
        timer: &Timer<NodeId>,
        bounds: Bounds,
        now: Duration,
    ) -> Option<Duration> {
        let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            token,
        } = timer
        else {
            return None;
        };
        let entry = self.entry(*member_id, *incarnation, now)?;
        let armed = entry.armed.get_or_insert(Armed {
            started: now,
            bounds,
            token: *token,
            scheduled: Duration::MAX,
        });
        armed.token = *token;
        let armed = armed.clone();
        let deadline = entry.deadline(&armed);
        if let Some(armed) = entry.armed.as_mut() {
            armed.scheduled = armed.scheduled.min(deadline);
        }
        Some(deadline.saturating_sub(now))
    }

    /// `accuser` says its probe of `target` (at `incarnation`) failed.
    /// Returns a copy of the suspicion's timer to deliver after the given
    /// delay when this brings its deadline forward.
    pub fn accuse(
        &mut self,
        target: NodeId,
        incarnation: foca::Incarnation,
        accuser: NodeId,
        now: Duration,
    ) -> Option<(Duration, Timer<NodeId>)> {
        let entry = self.entry(target, incarnation, now)?;
        if accuser == target || entry.accusers.contains(&accuser) {
            return None;
        }
        entry.accusers.push(accuser);
        self.stats.accusations += 1;
        let entry = self.entries.get_mut(&target)?;
        let armed = entry.armed.clone()?;
        let deadline = entry.deadline(&armed);
        if deadline >= armed.scheduled {
            return None;
        }
        if let Some(armed) = entry.armed.as_mut() {
            armed.scheduled = deadline;
        }
        self.stats.shortened += 1;
        Some((
            deadline.saturating_sub(now),
            Timer::ChangeSuspectToDown {
                member_id: target,
                incarnation,
                token: armed.token,
            },
        ))
    }

    /// Whether one more accusation of `target` at `incarnation` could
    /// still shorten its suspicion here: not once `k` members beyond the
    /// first have accused it (it is at `Min` already). Peers count the
    /// same accusations, so ours need not be gossiped then.
    pub fn wants_accusers(&self, target: &NodeId, incarnation: foca::Incarnation) -> bool {
        match self.entries.get(target) {
            Some(entry) if entry.incarnation == incarnation => match &entry.armed {
                Some(armed) => entry.accusers.len() <= armed.bounds.k as usize,
                None => true,
            },
            Some(entry) => entry.incarnation < incarnation,
            None => true,
        }
    }

    /// Lifeguard's buddy system: we are sending something to `member`;
    /// if it is suspected (foca armed our timer for it, or a peer's
    /// accusation of it reached us) and we have not told it so in the last
    /// `every`, returns the incarnation to tell it it is suspected at (the
    /// node checks that foca still holds it suspect there). foca sends each
    /// suspicion a few times to random members and then stops, so a member
    /// that heard nothing for a few seconds (inbound loss, a full receive
    /// queue) learns of its own suspicion only from a message like this,
    /// and refutes it at once; otherwise it goes down at `Min` however soon
    /// it hears again.
    pub fn remind(
        &mut self,
        member: &NodeId,
        now: Duration,
        every: Duration,
    ) -> Option<foca::Incarnation> {
        let entry = self.entries.get_mut(member)?;
        if entry
            .reminded
            .is_some_and(|last| now.saturating_sub(last) < every)
        {
            return None;
        }
        entry.reminded = Some(now);
        Some(entry.incarnation)
    }

    /// foca no longer holds `member` suspect at `incarnation` (it refuted,
    /// or went down): its entry goes, so no reminder is offered again.
    pub fn settled(&mut self, member: &NodeId, incarnation: foca::Incarnation) {
        if self
            .entries
            .get(member)
            .is_some_and(|entry| entry.incarnation <= incarnation)
        {
            self.entries.remove(member);
        }
    }

    /// A reminder went out (see [`Suspicions::remind`]).
    pub fn count_reminder(&mut self) {
        self.stats.reminders += 1;
    }

    /// A `ChangeSuspectToDown` timer was delivered: foca settled that
    /// suspicion (down, or refuted earlier), so it is forgotten.
    pub fn fired(&mut self, timer: &Timer<NodeId>) {
        if let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = timer
            && self
                .entries
                .get(member_id)
                .is_some_and(|entry| entry.incarnation == *incarnation)
        {
            self.entries.remove(member_id);
        }
    }

    /// The remaining timeout of the suspicion of `member`, if one is armed.
    pub fn remaining(&self, member: &NodeId, now: Duration) -> Option<Duration> {
        let entry = self.entries.get(member)?;
        let armed = entry.armed.as_ref()?;
        Some(entry.deadline(armed).saturating_sub(now))
    }

    /// Suspicions held (armed or only accused).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `member` at `incarnation`: a newer incarnation (the
    /// member refuted) starts over; an older one is stale (`None`).
    fn entry(
        &mut self,
        member: NodeId,
        incarnation: foca::Incarnation,
        now: Duration,
    ) -> Option<&mut Suspicion> {
        let fresh = match self.entries.get(&member) {
            Some(entry) if entry.incarnation > incarnation => return None,
            Some(entry) => entry.incarnation < incarnation,
            None => true,
        };
        if fresh {
            if !self.entries.contains_key(&member) && self.entries.len() >= MAX_ENTRIES {
                self.drop_oldest();
            }
            self.entries
                .insert(member, Suspicion::new(incarnation, now));
        }
        let entry = self.entries.get_mut(&member)?;
        entry.touched = now;
        Some(entry)
    }

    fn drop_oldest(&mut self) {
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, entry)| entry.touched)
            .map(|(id, _)| *id)
        {
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(port: u16) -> NodeId {
        NodeId {
            addr: ([10, 0, 0, 1], port).into(),
            generation: 1,
        }
    }

    const MIN: Duration = Duration::from_secs(4);
    const MAX: Duration = Duration::from_secs(24);

    fn bounds() -> Bounds {
        Bounds {
            min: MIN,
            max: MAX,
            k: 2,
            stretch: 1,
        }
    }

    fn suspect(member: u16, incarnation: u16) -> Timer<NodeId> {
        Timer::ChangeSuspectToDown {
            member_id: id(member),
            incarnation,
            token: 7,
        }
    }

    const T0: Duration = Duration::from_secs(100);

    #[test]
    fn the_suspect_is_reminded_once_per_period_until_settled() {
        let mut suspicions = Suspicions::default();
        let every = Duration::from_secs(1);
        assert_eq!(suspicions.remind(&id(1), T0, every), None, "not suspected");
        // A peer's accusation reached us (foca holds it suspect from that
        // peer's gossip, without a timer of ours).
        suspicions.accuse(id(1), 3, id(2), T0);
        assert_eq!(suspicions.remind(&id(1), T0, every), Some(3));
        suspicions.arm(&suspect(1, 3), bounds(), T0);
        assert_eq!(
            suspicions.remind(&id(1), T0 + Duration::from_millis(500), every),
            None,
            "at most once per period"
        );
        assert_eq!(suspicions.remind(&id(1), T0 + every, every), Some(3));
        suspicions.fired(&suspect(1, 3));
        assert_eq!(
            suspicions.remind(&id(1), T0 + every * 5, every),
            None,
            "settled"
        );
        // Accused again, then refuted before any timer of ours fired.
        suspicions.accuse(id(1), 4, id(2), T0 + every * 6);
        suspicions.settled(&id(1), 4);
        assert_eq!(suspicions.remind(&id(1), T0 + every * 7, every), None);
        assert!(suspicions.is_empty());
    }

    #[test]
    fn the_formula_is_memberlists() {
        assert_eq!(timeout(MIN, MAX, 2, 0), MAX);
        assert_eq!(timeout(MIN, MAX, 2, 2), MIN);
        assert_eq!(timeout(MIN, MAX, 2, 5), MIN, "never below Min");
        // One confirmation of two expected: 24 - 20 * ln 2 / ln 3 = 11.38 s.
        let one = timeout(MIN, MAX, 2, 1).as_secs_f64();
        assert!((one - 11.381).abs() < 0.01, "{one}");
        assert_eq!(timeout(MIN, MAX, 0, 0), MIN, "no confirmations expected");
        assert_eq!(expected_confirmations(4.0, 5), 2);
        assert_eq!(expected_confirmations(4.0, 3), 0, "too few to confirm");
        assert_eq!(expected_confirmations(2.0, 100), 0);
        assert_eq!(expected_confirmations(3.5, 100), 2, "rounded up");
    }

    #[test]
    fn a_lone_suspicion_lasts_max() {
        let mut suspicions = Suspicions::default();
        assert_eq!(suspicions.arm(&suspect(2, 0), bounds(), T0), Some(MAX));
        // Our own accusation is the first: no confirmation yet.
        assert_eq!(suspicions.accuse(id(2), 0, id(1), T0), None);
        // foca arms again at a later failed probe: the start stays.
        let later = T0 + Duration::from_secs(3);
        assert_eq!(
            suspicions.arm(&suspect(2, 0), bounds(), later),
            Some(MAX - Duration::from_secs(3))
        );
        assert_eq!(
            suspicions.arm(&Timer::PeriodicGossip(7), bounds(), T0),
            None
        );
    }

    #[test]
    fn k_confirmations_bring_it_to_min() {
        let mut suspicions = Suspicions::default();
        suspicions.arm(&suspect(2, 0), bounds(), T0);
        assert!(suspicions.wants_accusers(&id(2), 0));
        suspicions.accuse(id(2), 0, id(1), T0);
        let second = T0 + Duration::from_secs(1);
        let (delay, timer) = suspicions.accuse(id(2), 0, id(3), second).unwrap();
        assert_eq!(timer, suspect(2, 0), "a copy of foca's timer");
        let expected = T0 + timeout(MIN, MAX, 2, 1) - second;
        assert_eq!(delay, expected);
        assert_eq!(suspicions.accuse(id(2), 0, id(3), second), None, "once");
        let (delay, _) = suspicions.accuse(id(2), 0, id(4), second).unwrap();
        assert_eq!(delay, MIN - Duration::from_secs(1));
        // More accusers can't go below Min, and need not be gossiped.
        assert!(!suspicions.wants_accusers(&id(2), 0));
        assert_eq!(suspicions.accuse(id(2), 0, id(5), second), None);
        assert!(suspicions.wants_accusers(&id(2), 1), "a newer suspicion");
        assert_eq!(suspicions.stats().accusations, 4);
        assert_eq!(suspicions.stats().shortened, 2);
    }

    #[test]
    fn accusations_heard_first_count_when_the_suspicion_starts() {
        let mut suspicions = Suspicions::default();
        for accuser in [1, 3, 4] {
            assert_eq!(suspicions.accuse(id(2), 0, id(accuser), T0), None);
        }
        assert_eq!(suspicions.arm(&suspect(2, 0), bounds(), T0), Some(MIN));
    }

    #[test]
    fn a_refutation_clears_it() {
        let mut suspicions = Suspicions::default();
        suspicions.arm(&suspect(2, 0), bounds(), T0);
        for accuser in [1, 3, 4] {
            suspicions.accuse(id(2), 0, id(accuser), T0);
        }
        assert_eq!(suspicions.remaining(&id(2), T0), Some(MIN));
        // The member refuted (incarnation 1) and is suspected again: the
        // accusations of incarnation 0 no longer count, and late ones are
        // stale.
        assert_eq!(suspicions.accuse(id(2), 0, id(5), T0), None);
        assert_eq!(suspicions.arm(&suspect(2, 1), bounds(), T0), Some(MAX));
        assert_eq!(suspicions.accuse(id(2), 0, id(6), T0), None);
        assert_eq!(suspicions.remaining(&id(2), T0), Some(MAX));
        // The timer of incarnation 0 fires: it settles nothing current.
        suspicions.fired(&suspect(2, 0));
        assert_eq!(suspicions.len(), 1);
        suspicions.fired(&suspect(2, 1));
        assert!(suspicions.is_empty());
    }

    #[test]
    fn local_health_stretches_the_whole_timeout() {
        let mut suspicions = Suspicions::default();
        let stretched = Bounds {
            stretch: 3,
            ..bounds()
        };
        assert_eq!(suspicions.arm(&suspect(2, 0), stretched, T0), Some(3 * MAX));
    }

    #[test]
    fn accusations_about_made_up_members_are_bounded() {
        let mut suspicions = Suspicions::default();
        for port in 0..(MAX_ENTRIES as u16 + 100) {
            let at = T0 + Duration::from_millis(u64::from(port));
            suspicions.accuse(id(port), 0, id(u16::MAX), at);
        }
        assert_eq!(suspicions.len(), MAX_ENTRIES);
        assert!(
            suspicions
                .entries
                .contains_key(&id(MAX_ENTRIES as u16 + 99))
        );
        assert!(!suspicions.entries.contains_key(&id(0)), "the oldest went");
    }
}
