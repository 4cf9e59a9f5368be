//! What the node asks its driver to do ([`Effects`]: datagrams, timers,
//! exchanges), the timers it asks for ([`NodeTimer`]), and the wiring of
//! local health, which sits in foca's `Runtime` because foca's
//! notifications and timer requests pass through it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foca::{Notification, OwnedNotification, Runtime, Timer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::Node;
use crate::envelope::{COORDINATE_VERSION, Envelope, PayloadKind};
use crate::identity::NodeId;
use crate::lifeguard::LocalHealth;
use crate::state::ClusterState;
use crate::suspicion::{Bounds, Suspicions};

/// Timers the node asks its driver to deliver, in deadline order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeTimer {
    /// One of foca's own timers.
    Swim(Timer<NodeId>),
    /// Time to announce to the seeds (the token discards superseded ones).
    Rejoin(u32),
    /// Time for an anti-entropy exchange with a random peer.
    AntiEntropy,
    /// The "left" record had time to spread: declare ourselves down.
    FinishLeave,
    /// A tick for the pulls of digest rumors (see [`crate::pull`]).
    Pulls,
    /// Time to forget the down member `id`, if it is still on this
    /// schedule (`left`: the left one, else the failed one). See
    /// `node::reap`.
    Reap { id: NodeId, left: bool },
}

impl NodeTimer {
    /// Order among timers due at the same instant: foca's own order first.
    pub fn rank(&self) -> u8 {
        match self {
            NodeTimer::Swim(timer) => match timer {
                Timer::SendIndirectProbe { .. } => 0,
                Timer::ProbeRandomMember(_) => 1,
                Timer::ChangeSuspectToDown { .. } => 2,
                Timer::PeriodicAnnounce(_) => 3,
                Timer::PeriodicGossip(_) => 4,
                Timer::RemoveDown(_) => 5,
                Timer::PeriodicAnnounceDown(_) => 6,
            },
            NodeTimer::Rejoin(_) => 7,
            NodeTimer::AntiEntropy => 8,
            NodeTimer::FinishLeave => 9,
            NodeTimer::Pulls => 10,
            NodeTimer::Reap { .. } => 11,
        }
    }
}

/// What the node asks its driver to do. Drained by the driver after every
/// call into the node.
#[derive(Debug)]
pub struct Effects {
    envelope: Envelope,
    /// Read for the wire version each peer advertises (see
    /// [`Envelope::version_for`]). Never held by the node across a call
    /// into foca, so locking it from `send_to` can't deadlock.
    state: Arc<Mutex<ClusterState>>,
    /// Sealed datagrams to send.
    pub datagrams: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to deliver back after the given delay.
    pub timers: Vec<(Duration, NodeTimer)>,
    /// Peers to run an anti-entropy exchange with.
    pub syncs: Vec<SocketAddr>,
    pub(super) notifications: Vec<OwnedNotification<NodeId>>,
    /// Lives here because foca's notifications and timer requests pass
    /// through the runtime: it both listens and stretches.
    health: LocalHealth,
    /// Lifeguard's dynamic suspicion: the runtime sets when foca's
    /// suspect-to-down timers fire (see [`crate::suspicion`]).
    pub(super) suspicions: Suspicions,
    pub(super) suspicion: SuspicionParams,
    /// Members our own probes failed to reach since the node last asked:
    /// the node gossips an accusation for each.
    pub(super) failed_probes: Vec<NodeId>,
    /// Suspects this node sent something to since it last asked, with the
    /// incarnation they are suspected at: the node tells each (see
    /// [`Suspicions::remind`]).
    pub(super) reminders: Vec<(NodeId, foca::Incarnation)>,
    /// How often a suspect is told at most (the probe period).
    remind_every: Duration,
    /// Our incarnation in the last datagram foca sent.
    pub(super) incarnation: foca::Incarnation,
    /// Our last direct probe: its number, whom, and when it went out.
    probe_sent: Option<(foca::ProbeNumber, NodeId, Duration)>,
    /// Round trips of direct probes answered since the node last asked
    /// (see `node::coordinates`).
    pub(super) rtt_samples: Vec<(NodeId, Duration)>,
    /// Our network coordinate as our acks carry it.
    pub(super) coordinate: [u8; crate::coordinate::WIRE_LEN],
    /// The node's clock (see [`Node::set_clock`]), for suspicions.
    pub(super) now: Option<Duration>,
    /// Nonces for sealed datagrams.
    nonces: StdRng,
}

/// What a suspicion's bounds are computed from.
#[derive(Clone, Copy, Debug)]
pub(super) struct SuspicionParams {
    pub(super) suspicion_mult: f64,
    pub(super) max_mult: u32,
    pub(super) cluster_size: u32,
    /// Whether suspicions are dynamic now (every member reads accusations;
    /// see `Node::all_read_accusations`); else `Max` is `Min`.
    pub(super) dynamic: bool,
}

impl SuspicionParams {
    /// foca asks for `min` (its fixed timeout for the size now).
    fn bounds(&self, min: Duration, stretch: u32) -> Bounds {
        Bounds {
            min,
            max: if self.dynamic {
                min * self.max_mult.max(1)
            } else {
                min
            },
            k: crate::suspicion::expected_confirmations(self.suspicion_mult, self.cluster_size),
            stretch,
        }
    }
}

impl Effects {
    pub(super) fn new(
        envelope: Envelope,
        state: Arc<Mutex<ClusterState>>,
        health: LocalHealth,
        suspicion: SuspicionParams,
        remind_every: Duration,
        seed: u64,
    ) -> Self {
        Self {
            envelope,
            state,
            health,
            suspicions: Suspicions::default(),
            suspicion,
            failed_probes: Vec::new(),
            reminders: Vec::new(),
            remind_every,
            incarnation: 0,
            probe_sent: None,
            rtt_samples: Vec::new(),
            coordinate: crate::coordinate::Coordinate::new(
                &crate::coordinate::CoordinateConfig::default(),
            )
            .to_wire(),
            now: None,
            nonces: StdRng::seed_from_u64(seed ^ 0x6e6f_6e63_6573),
            datagrams: Vec::new(),
            timers: Vec::new(),
            syncs: Vec::new(),
            notifications: Vec::new(),
        }
    }
}

impl Runtime<NodeId> for Effects {
    fn notify(&mut self, notification: Notification<'_, NodeId>) {
        match &notification {
            Notification::ProbeFailed(_, member) => self.failed_probes.push(**member),
            Notification::DataSent(header) => {
                self.incarnation = header.src_incarnation;
                if let (foca::Message::Ping(number), Some(now)) = (&header.message, self.now) {
                    self.probe_sent = Some((*number, header.dst, now));
                }
            }
            // The direct ack of our last probe, from the probed member
            // itself (an indirect one also took a detour): a round trip.
            Notification::DataReceived(header) => {
                if let (foca::Message::Ack(number), Some(now)) = (&header.message, self.now)
                    && let Some((sent, probed, at)) = self.probe_sent
                    && sent == *number
                    && probed == header.src
                {
                    self.probe_sent = None;
                    self.rtt_samples.push((probed, now.saturating_sub(at)));
                }
            }
            _ => {}
        }
        if self.health.observe(&notification) {
            return;
        }
        self.notifications.push(notification.to_owned());
    }

    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        let nonce = self.nonces.random();
        let theirs = self
            .state
            .lock()
            .expect("cluster state lock poisoned")
            .wire_range_of(&to);
        let version = self.envelope.version_for(theirs);
        let packet = if version >= COORDINATE_VERSION && is_ack(data) {
            self.envelope
                .seal_with_coordinate(version, data, &self.coordinate, nonce)
        } else {
            self.envelope
                .seal_as(version, PayloadKind::Swim, data, nonce)
        };
        self.datagrams.push((to.addr, packet));
        if let Some(now) = self.now
            && let Some(incarnation) = self.suspicions.remind(&to, now, self.remind_every)
        {
            self.reminders.push((to, incarnation));
        }
    }

    fn submit_after(&mut self, event: Timer<NodeId>, after: Duration) {
        if matches!(event, Timer::ChangeSuspectToDown { .. }) {
            self.health.note_suspicion();
        }
        let bounds = self.suspicion.bounds(after, self.health.multiplier());
        let dynamic = self
            .now
            .and_then(|now| self.suspicions.arm(&event, bounds, now));
        let after = dynamic.unwrap_or_else(|| self.health.stretch(&event, after));
        self.timers.push((after, NodeTimer::Swim(event)));
    }
}

impl Node {
    /// Tells local health that an event was handled `lag` late: a timer
    /// after its deadline, a datagram after it arrived. See
    /// [`crate::lifeguard`].
    pub fn note_lag(&mut self, lag: Duration) {
        self.effects.health.note_lag(lag);
    }

    /// The local health score and what fed it.
    pub fn local_health(&self) -> &LocalHealth {
        &self.effects.health
    }
}

/// Whether foca's datagram is an ack (of a direct probe): what carries our
/// network coordinate.
fn is_ack(data: &[u8]) -> bool {
    use foca::Codec;
    let mut rest = data;
    crate::codec::SwimCodec
        .decode_header(&mut rest)
        .is_ok_and(|header| matches!(header.message, foca::Message::Ack(_)))
}
