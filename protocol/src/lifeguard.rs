//! Lifeguard-style local health awareness.
//!
//! A node that is itself in trouble (starved of CPU, paused, behind on its
//! receive queue) misreads its peers: acks arrive after its probe timers
//! fired, refutations arrive after its suspicion timers fired, and it
//! declares healthy members down. Lifeguard (Dadgar et al., 2018; the
//! "awareness" in hashicorp/memberlist) lets such a node notice its own
//! trouble and slow down: it keeps a small score that
//!
//! - rises by one when a probe got no answer at all (direct nor indirect)
//!   right after another probe that failed too: memberlist blames itself
//!   when the indirect probers send no nacks, but SWIM in foca has no
//!   nacks, so a lone failure is taken as the target's fault (it is what
//!   a crashed member looks like) and a run of failures on different
//!   targets as ours,
//! - rises by one when the node had to refute a suspicion about itself,
//! - rises by one (at most once per probe cycle) when the driver reports
//!   that an event was handled later than the lag threshold,
//! - falls by one when a probe was answered in time,
//!
//! and stretches its probe period, probe timeout and suspicion timeout by
//! `score + 1` (up to [`MAX_MULTIPLIER`]). A healthy node keeps a score of
//! zero and runs foca's timers unchanged.
//!
//! foca 2 has no Lifeguard, but the runtime decides when timers fire, so the
//! stretching happens in [`crate::node`]'s `Runtime::submit_after`, and the
//! signals come from foca's `unstable-notifications` (`ProbeFailed`,
//! `DataSent`, `DataReceived`).

use std::time::Duration;

use foca::{Message, Notification, Timer};

use crate::identity::NodeId;

/// Largest factor timers are stretched by (memberlist's
/// `awarenessMaxMultiplier`).
pub const MAX_MULTIPLIER: u32 = 8;

/// What the local health score has seen so far. All counters are monotonic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthCounters {
    /// Probes that got neither a direct nor an indirect ack in time.
    pub probe_failures: u64,
    /// Probes answered in time.
    pub probe_successes: u64,
    /// Times this node raised its incarnation to refute a suspicion.
    pub refutations: u64,
    /// Probe cycles in which the driver reported an event handled late.
    pub lagging_cycles: u64,
    /// Highest score reached.
    pub max_score: u32,
    /// Direct probes (pings) this node sent.
    pub probes_sent: u64,
    /// Suspicions started: each time foca set a member suspect (from our
    /// own failed probe or from gossip) and armed its suspect-to-down timer.
    pub suspicions: u64,
}

/// The local health score and the timer stretching it implies.
#[derive(Clone, Debug)]
pub struct LocalHealth {
    enabled: bool,
    score: u32,
    lag_threshold: Duration,
    /// Probe number of the probe in flight, and whether it was answered.
    probe: Option<u8>,
    answered: bool,
    /// Failed probes in a row.
    failures_in_a_row: u32,
    lag_noted: bool,
    /// Our incarnation as last seen on an outgoing header.
    incarnation: Option<u16>,
    stats: HealthCounters,
}

impl LocalHealth {
    /// A score of zero. When `enabled` is false the score is still kept (for
    /// reports) but never stretches a timer. Lag above `lag_threshold`
    /// counts against the node's health.
    pub fn new(enabled: bool, lag_threshold: Duration) -> Self {
        Self {
            enabled,
            score: 0,
            lag_threshold,
            probe: None,
            answered: false,
            failures_in_a_row: 0,
            lag_noted: false,
            incarnation: None,
            stats: HealthCounters::default(),
        }
    }

    /// Current score, from 0 (healthy) to `MAX_MULTIPLIER - 1`.
    pub fn score(&self) -> u32 {
        self.score
    }

    /// Factor the probe and suspicion timers are stretched by (1 = healthy,
    /// or local health awareness disabled).
    pub fn multiplier(&self) -> u32 {
        if self.enabled { self.score + 1 } else { 1 }
    }

    pub fn stats(&self) -> &HealthCounters {
        &self.stats
    }

    /// Feeds one of foca's notifications. Returns true when the
    /// notification only matters to local health (the per-packet ones and
    /// `ProbeFailed`), so the caller need not keep it.
    pub fn observe(&mut self, notification: &Notification<'_, NodeId>) -> bool {
        match notification {
            Notification::ProbeFailed(..) => {
                self.stats.probe_failures += 1;
                self.failures_in_a_row += 1;
                if self.failures_in_a_row >= 2 {
                    self.apply(1);
                }
                true
            }
            Notification::DataSent(header) => {
                if let Message::Ping(number) = header.message {
                    self.stats.probes_sent += 1;
                    // A new probe cycle: settle the previous probe.
                    if self.probe.is_some() && self.answered {
                        self.stats.probe_successes += 1;
                        self.failures_in_a_row = 0;
                        self.apply(-1);
                    }
                    self.probe = Some(number);
                    self.answered = false;
                    self.lag_noted = false;
                }
                // foca raises its incarnation only to refute a suspicion;
                // it starts over at zero under a renewed identity.
                match self.incarnation {
                    Some(seen) if header.src_incarnation > seen => {
                        self.stats.refutations += 1;
                        self.apply(1);
                    }
                    _ => {}
                }
                self.incarnation = Some(header.src_incarnation);
                true
            }
            Notification::DataReceived(header) => {
                let number = match header.message {
                    Message::Ack(number) => Some(number),
                    Message::ForwardedAck { probe_number, .. } => Some(probe_number),
                    _ => None,
                };
                if number.is_some() && number == self.probe {
                    self.answered = true;
                }
                true
            }
            _ => false,
        }
    }

    /// The driver handled an event `lag` after it was due (a timer) or
    /// after it arrived (a datagram).
    pub fn note_lag(&mut self, lag: Duration) {
        if lag > self.lag_threshold && !self.lag_noted {
            self.lag_noted = true;
            self.stats.lagging_cycles += 1;
            self.apply(1);
        }
    }

    /// foca armed a suspect-to-down timer: a member is now suspect.
    pub fn note_suspicion(&mut self) {
        self.stats.suspicions += 1;
    }

    /// The delay to actually wait for `timer`, which foca asked for after
    /// `after`: probe and suspicion timers stretch with the score, the
    /// others (gossip, announces, removals) keep their pace.
    pub fn stretch(&self, timer: &Timer<NodeId>, after: Duration) -> Duration {
        match timer {
            Timer::ProbeRandomMember(_)
            | Timer::SendIndirectProbe { .. }
            | Timer::ChangeSuspectToDown { .. } => after * self.multiplier(),
            _ => after,
        }
    }

    fn apply(&mut self, delta: i32) {
        self.score = self
            .score
            .saturating_add_signed(delta)
            .min(MAX_MULTIPLIER - 1);
        self.stats.max_score = self.stats.max_score.max(self.score);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Header;

    fn id(port: u16) -> NodeId {
        NodeId {
            addr: ([10, 0, 0, 1], port).into(),
            generation: 1,
        }
    }

    fn header(message: Message<NodeId>, incarnation: u16) -> Header<NodeId> {
        Header {
            src: id(1),
            src_incarnation: incarnation,
            dst: id(2),
            message,
        }
    }

    #[test]
    fn failed_probes_stretch_timers_and_answered_ones_relax_them() {
        let mut health = LocalHealth::new(true, Duration::from_millis(250));
        let probe = Timer::ProbeRandomMember(0);
        let second = Duration::from_secs(1);
        assert_eq!(health.stretch(&probe, second), second);

        health.observe(&Notification::ProbeFailed(0, &id(2)));
        assert_eq!(health.score(), 0, "one failure is the target's fault");
        for _ in 0..3 {
            health.observe(&Notification::ProbeFailed(0, &id(2)));
        }
        assert_eq!(health.score(), 3);
        assert_eq!(health.stretch(&probe, second), 4 * second);
        assert_eq!(health.stretch(&Timer::PeriodicGossip(0), second), second);

        // Probe 5 is answered: the next cycle settles it as a success.
        health.observe(&Notification::DataSent(&header(Message::Ping(5), 0)));
        health.observe(&Notification::DataReceived(&header(Message::Ack(5), 0)));
        health.observe(&Notification::DataSent(&header(Message::Ping(6), 0)));
        assert_eq!(health.score(), 2);
        // A late ack for an older probe is no success.
        health.observe(&Notification::DataReceived(&header(Message::Ack(5), 0)));
        health.observe(&Notification::DataSent(&header(Message::Ping(7), 0)));
        assert_eq!(health.score(), 2);
    }

    #[test]
    fn refutations_and_lag_count_and_the_score_is_capped() {
        let mut health = LocalHealth::new(true, Duration::from_millis(250));
        health.observe(&Notification::DataSent(&header(Message::Gossip, 0)));
        health.observe(&Notification::DataSent(&header(Message::Gossip, 1)));
        assert_eq!(health.stats().refutations, 1);
        health.note_lag(Duration::from_secs(1));
        health.note_lag(Duration::from_secs(1));
        assert_eq!(health.score(), 2, "lag counts once per probe cycle");
        for _ in 0..20 {
            health.observe(&Notification::ProbeFailed(0, &id(2)));
        }
        assert_eq!(health.multiplier(), MAX_MULTIPLIER);
    }

    #[test]
    fn disabled_health_never_stretches() {
        let mut health = LocalHealth::new(false, Duration::from_millis(250));
        health.observe(&Notification::ProbeFailed(0, &id(2)));
        health.observe(&Notification::ProbeFailed(0, &id(3)));
        assert_eq!(health.score(), 1);
        let timer = Timer::ChangeSuspectToDown {
            member_id: id(2),
            incarnation: 0,
            token: 0,
        };
        assert_eq!(
            health.stretch(&timer, Duration::from_secs(4)),
            Duration::from_secs(4)
        );
    }
}
