//! User events, as Serf's and Consul's: a name, a small payload and
//! optional filters, fired on one agent and gossiped to all of them.
//!
//! Events ride foca's custom broadcasts ([`crate::rumor::Rumor::Event`])
//! and nothing else: no anti-entropy, so an agent that was away misses
//! them, as with Serf. Each carries a Lamport time: the firing node stamps
//! its clock and every receiver witnesses it, so `LTime` orders events
//! across the cluster. [`EventLog`] deduplicates by ID and hands each new
//! event to the driver once.
//!
//! An agent that joins (or restarts) later does not replay old events still
//! circulating in peers' broadcast backlogs: an event fired before this node
//! started (its wall time below our start time) is witnessed (it moves our
//! Lamport clock) but not delivered. Serf learns the same bound from the
//! push-pull's event clock; here the fire time does it without touching the
//! anti-entropy messages. Events far behind our Lamport clock (more than
//! [`EVENT_RING`]) are dropped as too old, as Serf's buffer does.
//!
//! Everything from a peer is bounded before use ([`UserEvent::check`]),
//! its Lamport time included: at most [`MAX_LTIME_AHEAD`] ahead of our
//! clock, which never wraps (it saturates at `u64::MAX`).
//!
//! foca keeps every rumor in its broadcast backlog until it has been sent
//! `max_transmissions` times, and scans the whole backlog each time it adds
//! one (`add_or_replace` asks every entry whether the new key invalidates
//! it). A flood of events would grow that backlog, and the cost of every
//! add, without bound. So each event put in the backlog takes a
//! [`BacklogSlot`] numbered in arrival order, and a new event's slot
//! invalidates any event more than [`EVENT_BACKLOG`] slots older: foca
//! drops the oldest first, each drop is counted, and the backlog holds at
//! most [`EVENT_BACKLOG`] events (Serf's event queue is pruned the same
//! way, oldest first, past `MaxQueueDepth`). Each invalidation check is one
//! comparison; foca's scan stays linear, but over a bounded backlog.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bincode::{Decode, Encode};

/// Largest payload, in bytes (Consul's and Serf's limit).
pub const MAX_EVENT_PAYLOAD: usize = 512;
/// Longest event name, in bytes.
pub const MAX_EVENT_NAME: usize = 128;
/// Longest filter (node, service or tag), in bytes.
pub const MAX_EVENT_FILTER: usize = 64;
/// Events kept by readers (the agent's list), and how far behind our
/// Lamport clock an event may be before it is dropped as too old.
pub const EVENT_RING: usize = 256;
/// Event IDs remembered for deduplication: far more than a rumor's life in
/// foca's backlog can bring back.
const SEEN_IDS: usize = 4 * EVENT_RING;
/// Most events in foca's broadcast backlog: past it the oldest is dropped
/// (counted in [`EventCounters::backlog_dropped`]). An event rumor is at
/// most about 900 bytes, so this keeps the backlog's events under ~1 MB.
pub const EVENT_BACKLOG: u64 = 1024;
/// How far ahead of our Lamport clock a peer's event may be. Far more than
/// any cluster fires (a fresh agent starts at 0 and must accept a cluster
/// that has fired for years: 2^32 is 136 years at one event a second),
/// and small enough that `u64` time can't be used up by a few rumors.
pub const MAX_LTIME_AHEAD: u64 = 1 << 32;

/// One user event.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct UserEvent {
    /// Random, chosen by the firing agent (shown as a UUID).
    pub id: [u8; 16],
    pub name: String,
    pub payload: Vec<u8>,
    /// A regular expression over node names; empty: every node.
    pub node_filter: String,
    /// A regular expression over service names; empty: every node.
    pub service_filter: String,
    /// A regular expression over the tags of the services the service
    /// filter matched; empty: any.
    pub tag_filter: String,
    /// The firing node's Lamport time.
    pub ltime: u64,
    /// The firing node's wall time (NTP64), for the late-joiner rule.
    pub time: u64,
}

/// Why an event was refused. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error(
        "event name must be 1 to {MAX_EVENT_NAME} bytes of letters, digits, `-`, `_`, `.`, `/` or `:`"
    )]
    Name,
    #[error("event payload is {0} bytes, more than the {MAX_EVENT_PAYLOAD} allowed")]
    PayloadTooLarge(usize),
    #[error("event {0} filter is longer than {MAX_EVENT_FILTER} bytes")]
    FilterTooLong(&'static str),
    #[error("event time is further ahead of our clock than the allowed drift")]
    FromTheFuture,
    #[error(
        "event Lamport time {ltime} is more than {MAX_LTIME_AHEAD} ahead of our event clock {clock}"
    )]
    LtimeTooFarAhead { ltime: u64, clock: u64 },
}

/// Whether `name` is a valid event name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:".contains(&b))
}

impl UserEvent {
    /// Checks the bounds on what a peer (or a client) may send.
    pub fn check(&self) -> Result<(), EventError> {
        if !valid_name(&self.name) {
            return Err(EventError::Name);
        }
        if self.payload.len() > MAX_EVENT_PAYLOAD {
            return Err(EventError::PayloadTooLarge(self.payload.len()));
        }
        for (which, filter) in [
            ("node", &self.node_filter),
            ("service", &self.service_filter),
            ("tag", &self.tag_filter),
        ] {
            if filter.len() > MAX_EVENT_FILTER {
                return Err(EventError::FilterTooLong(which));
            }
        }
        Ok(())
    }
}

/// What the caller asks to fire; the log stamps the times.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventRequest {
    pub id: [u8; 16],
    pub name: String,
    pub payload: Vec<u8>,
    pub node_filter: String,
    pub service_filter: String,
    pub tag_filter: String,
}

/// Counters, all monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventCounters {
    /// New events delivered to the driver (fired here or received).
    pub delivered: u64,
    /// Events from peers refused by [`UserEvent::check`], the drift bound
    /// or the Lamport time bound.
    pub refused: u64,
    /// Of those, events whose Lamport time was more than
    /// [`MAX_LTIME_AHEAD`] ahead of our clock.
    pub refused_ltime: u64,
    /// Events dropped from foca's broadcast backlog, oldest first, to keep
    /// it at [`EVENT_BACKLOG`] events (they reach the cluster only through
    /// the transmissions they had already had).
    pub backlog_dropped: u64,
    /// Events fired before this node started, or too far behind the
    /// Lamport clock: witnessed, not delivered.
    pub ignored_old: u64,
}

/// The Lamport clock, deduplication and delivery queue of user events.
#[derive(Debug, Default)]
pub struct EventLog {
    clock: u64,
    /// Wall time (NTP64) this node started at; older events are not
    /// delivered. 0 until the driver sets it.
    started: u64,
    seen: HashSet<[u8; 16]>,
    seen_order: VecDeque<[u8; 16]>,
    /// Delivered, not taken by the driver yet (at most [`EVENT_RING`]).
    pending: VecDeque<UserEvent>,
    counters: EventCounters,
    /// The next event's place in foca's backlog.
    next_slot: u64,
    /// Events dropped from foca's backlog, counted by the slots that
    /// dropped them.
    backlog_dropped: Arc<AtomicU64>,
}

impl EventLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the start time (NTP64) once: events fired before it are not
    /// delivered.
    pub fn set_started(&mut self, now: u64) {
        if self.started == 0 {
            self.started = now;
        }
    }

    /// The Lamport clock: the next local event's time.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    pub fn counters(&self) -> EventCounters {
        EventCounters {
            backlog_dropped: self.backlog_dropped.load(Ordering::Relaxed),
            ..self.counters
        }
    }

    /// The slot of the next event that goes into foca's backlog: it drops
    /// the events more than [`EVENT_BACKLOG`] slots older still there.
    pub fn backlog_slot(&mut self) -> BacklogSlot {
        let seq = self.next_slot;
        self.next_slot += 1;
        BacklogSlot {
            seq,
            keep_from: seq.saturating_sub(EVENT_BACKLOG - 1),
            dropped: self.backlog_dropped.clone(),
        }
    }

    /// Stamps and delivers a local event; returns it for gossip.
    pub fn fire(&mut self, request: EventRequest, now: u64) -> Result<UserEvent, EventError> {
        let event = UserEvent {
            id: request.id,
            name: request.name,
            payload: request.payload,
            node_filter: request.node_filter,
            service_filter: request.service_filter,
            tag_filter: request.tag_filter,
            ltime: self.clock,
            time: now,
        };
        event.check()?;
        // Saturates: the peer bound keeps the clock far from the top, and
        // a clock stuck there still never goes back.
        self.clock = self.clock.saturating_add(1);
        self.remember(event.id);
        self.deliver(event.clone());
        Ok(event)
    }

    /// A peer's event. `max_time` is the latest fire time accepted (our
    /// clock plus the allowed drift). Returns whether it was news, to keep
    /// spreading it.
    pub fn receive(&mut self, event: UserEvent, max_time: u64) -> Result<bool, EventError> {
        let checked = match event.check() {
            Ok(()) if event.time > max_time => Err(EventError::FromTheFuture),
            Ok(()) if event.ltime > self.clock.saturating_add(MAX_LTIME_AHEAD) => {
                Err(EventError::LtimeTooFarAhead {
                    ltime: event.ltime,
                    clock: self.clock,
                })
            }
            other => other,
        };
        if let Err(error) = checked {
            self.counters.refused += 1;
            if matches!(error, EventError::LtimeTooFarAhead { .. }) {
                self.counters.refused_ltime += 1;
            }
            return Err(error);
        }
        if self.seen.contains(&event.id) {
            return Ok(false);
        }
        self.remember(event.id);
        let too_far_behind = event.ltime.saturating_add(EVENT_RING as u64) < self.clock;
        // Witness: our next event comes after everything we have seen.
        self.clock = self.clock.max(event.ltime.saturating_add(1));
        if event.time < self.started || too_far_behind {
            self.counters.ignored_old += 1;
            return Ok(false);
        }
        self.deliver(event);
        Ok(true)
    }

    /// Events delivered since the last call, oldest first.
    pub fn take_delivered(&mut self) -> Vec<UserEvent> {
        self.pending.drain(..).collect()
    }

    fn deliver(&mut self, event: UserEvent) {
        self.counters.delivered += 1;
        if self.pending.len() == EVENT_RING {
            self.pending.pop_front();
        }
        self.pending.push_back(event);
    }

    fn remember(&mut self, id: [u8; 16]) {
        if self.seen_order.len() == SEEN_IDS
            && let Some(oldest) = self.seen_order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(id);
        self.seen_order.push_back(id);
    }
}

/// An event's place in foca's broadcast backlog (part of its
/// [`crate::rumor::RumorKey`]): numbered in the order events entered this
/// agent's backlog, not sent on the wire.
#[derive(Clone, Debug)]
pub struct BacklogSlot {
    seq: u64,
    /// Events in slots below this are dropped when this one is added.
    keep_from: u64,
    dropped: Arc<AtomicU64>,
}

impl BacklogSlot {
    /// Whether adding `self` drops `older` from the backlog (counted:
    /// foca asks once per entry, and removes the entry when told so).
    pub fn evicts(&self, older: &BacklogSlot) -> bool {
        let evicted = older.seq < self.keep_from;
        if evicted {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        evicted
    }
}

/// Slots are equal by their number; the shared counter is not part of it.
impl PartialEq for BacklogSlot {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl Eq for BacklogSlot {}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u8, name: &str) -> EventRequest {
        EventRequest {
            id: [id; 16],
            name: name.into(),
            payload: b"v42".to_vec(),
            ..EventRequest::default()
        }
    }

    #[test]
    fn a_fired_event_is_delivered_once_and_moves_the_clock() {
        let mut log = EventLog::new();
        let event = log.fire(request(1, "deploy"), 100).unwrap();
        assert_eq!(event.ltime, 0);
        assert_eq!(log.clock(), 1);
        assert_eq!(log.take_delivered(), vec![event.clone()]);
        // Our own rumor coming back is not news.
        assert_eq!(log.receive(event, u64::MAX), Ok(false));
        assert!(log.take_delivered().is_empty());
    }

    #[test]
    fn a_received_event_is_witnessed_and_deduplicated() {
        let mut firer = EventLog::new();
        for id in 0..5 {
            firer.fire(request(id, "tick"), 100).unwrap();
        }
        let last = firer.fire(request(9, "deploy"), 100).unwrap();
        let mut receiver = EventLog::new();
        assert_eq!(receiver.receive(last.clone(), u64::MAX), Ok(true));
        assert_eq!(receiver.receive(last.clone(), u64::MAX), Ok(false));
        assert_eq!(receiver.clock(), last.ltime + 1);
        assert_eq!(receiver.take_delivered(), vec![last]);
        let next = receiver.fire(request(10, "after"), 100).unwrap();
        assert_eq!(next.ltime, 6);
    }

    #[test]
    fn events_fired_before_we_started_are_witnessed_not_delivered() {
        let mut firer = EventLog::new();
        let old = firer.fire(request(1, "deploy"), 100).unwrap();
        let mut joiner = EventLog::new();
        joiner.set_started(200);
        assert_eq!(joiner.receive(old, u64::MAX), Ok(false));
        assert!(joiner.take_delivered().is_empty());
        assert_eq!(joiner.clock(), 1);
        assert_eq!(joiner.counters().ignored_old, 1);
        let new = firer.fire(request(2, "deploy"), 300).unwrap();
        assert_eq!(joiner.receive(new, u64::MAX), Ok(true));
    }

    #[test]
    fn events_far_behind_the_clock_are_dropped() {
        let mut log = EventLog::new();
        let mut far = EventLog::new();
        far.clock = 1_000;
        let recent = far.fire(request(1, "a"), 1).unwrap();
        log.receive(recent, u64::MAX).unwrap();
        let mut stale = EventLog::new();
        let old = stale.fire(request(2, "b"), 1).unwrap();
        assert_eq!(log.receive(old, u64::MAX), Ok(false));
        assert_eq!(log.counters().ignored_old, 1);
    }

    #[test]
    fn bounds_are_checked_before_anything_changes() {
        let mut log = EventLog::new();
        let mut big = request(1, "deploy");
        big.payload = vec![0; MAX_EVENT_PAYLOAD + 1];
        assert_eq!(
            log.fire(big, 1),
            Err(EventError::PayloadTooLarge(MAX_EVENT_PAYLOAD + 1))
        );
        assert_eq!(log.fire(request(1, "bad name"), 1), Err(EventError::Name));
        assert_eq!(log.fire(request(1, ""), 1), Err(EventError::Name));
        let mut filter = request(1, "deploy");
        filter.tag_filter = "x".repeat(MAX_EVENT_FILTER + 1);
        assert_eq!(log.fire(filter, 1), Err(EventError::FilterTooLong("tag")));
        assert_eq!(log.clock(), 0);
        let future = EventLog::new().fire(request(2, "deploy"), 500).unwrap();
        assert_eq!(log.receive(future, 499), Err(EventError::FromTheFuture));
        assert_eq!(log.counters().refused, 1);
        assert!(log.take_delivered().is_empty());
    }

    #[test]
    fn an_ltime_far_ahead_is_refused_and_the_clock_never_wraps() {
        let mut log = EventLog::new();
        log.fire(request(1, "deploy"), 1).unwrap();
        let mut evil = log.fire(request(2, "deploy"), 1).unwrap();
        evil.id = [3; 16];
        evil.ltime = u64::MAX - 1;
        assert_eq!(
            log.receive(evil.clone(), u64::MAX),
            Err(EventError::LtimeTooFarAhead {
                ltime: u64::MAX - 1,
                clock: 2
            })
        );
        assert_eq!(log.clock(), 2);
        assert_eq!(log.counters().refused, 1);
        assert_eq!(log.counters().refused_ltime, 1);
        // At the edge of the window: accepted, and witnessed.
        evil.ltime = 2 + MAX_LTIME_AHEAD;
        assert_eq!(log.receive(evil, u64::MAX), Ok(true));
        assert_eq!(log.clock(), 3 + MAX_LTIME_AHEAD);
        // A clock at the top saturates instead of wrapping to 0.
        log.clock = u64::MAX;
        let top = log.fire(request(4, "deploy"), 1).unwrap();
        let next = log.fire(request(5, "deploy"), 1).unwrap();
        assert_eq!(
            (top.ltime, next.ltime, log.clock()),
            (u64::MAX, u64::MAX, u64::MAX)
        );
    }

    #[test]
    fn a_backlog_slot_evicts_only_slots_past_the_cap_and_counts_them() {
        let mut log = EventLog::new();
        let slots: Vec<BacklogSlot> = (0..EVENT_BACKLOG + 2).map(|_| log.backlog_slot()).collect();
        let last = &slots[slots.len() - 1];
        let evicted = slots[..slots.len() - 1]
            .iter()
            .filter(|older| last.evicts(older))
            .count();
        // The newest keeps itself and the EVENT_BACKLOG - 1 before it.
        assert_eq!(evicted, 2);
        assert!(last.evicts(&slots[1]) && !last.evicts(&slots[2]));
        assert_eq!(log.counters().backlog_dropped, 3);
        assert!(!slots[5].evicts(&slots[0]));
    }

    #[test]
    fn dedup_memory_and_pending_queue_stay_bounded() {
        let mut log = EventLog::new();
        for n in 0..(SEEN_IDS + 10) as u32 {
            let mut id = [0; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            let event = UserEvent {
                id,
                name: "e".into(),
                payload: Vec::new(),
                node_filter: String::new(),
                service_filter: String::new(),
                tag_filter: String::new(),
                ltime: u64::from(n),
                time: 1,
            };
            log.receive(event, u64::MAX).unwrap();
        }
        assert_eq!(log.seen.len(), SEEN_IDS);
        assert_eq!(log.seen_order.len(), SEEN_IDS);
        assert_eq!(log.take_delivered().len(), EVENT_RING);
    }
}
