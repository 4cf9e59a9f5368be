//! The discrete-event engine: one heap of events keyed by
//! `(virtual time, rank, sequence)`, one seeded RNG, and N real
//! [`Node`]s. It replaces only the sockets and the clock; every decision
//! (probing, suspicion, gossip, local health) is the protocol core's.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shoal_protocol::anti_entropy::SyncMessage;
use shoal_protocol::codec;
use shoal_protocol::envelope::{HEADER_LEN, cluster_id};
use shoal_protocol::{Envelope, GossipConfig, Node, NodeId, NodeRecord, NodeTimer};

use crate::metrics::Metrics;
use crate::network::{Micros, Network, node_addr, node_index};
use crate::scenario::{Bootstrap, Scenario};

pub(crate) const SECOND: Micros = 1_000_000;
/// How often convergence is checked after a partition heals.
const CONVERGENCE_CHECK: Micros = 100_000;
/// An exchange a responder serves but hears nothing more of ends after
/// this long (the agent's frame timeout): its slot is free again.
const EXCHANGE_IDLE: Micros = 10 * SECOND;

/// Rank of events that are not timers: after the timers due at the same
/// instant, as the agent's biased select handles timers first.
pub(crate) const RANK_OTHER: u8 = 100;

/// Something that happens at a virtual instant.
pub(crate) enum Event {
    /// A node starts (and, in a converged bootstrap, learns its view).
    Boot(usize),
    Datagram {
        to: usize,
        packet: Vec<u8>,
        arrived: Micros,
        slowed: bool,
    },
    Timer {
        node: usize,
        epoch: u32,
        timer: NodeTimer,
        due: Micros,
    },
    /// One message of an anti-entropy exchange (see
    /// `shoal_protocol::anti_entropy`), from node `from` to node `to`. Boxed: the
    /// heap moves events around, and a message is twice any other event.
    Sync {
        to: usize,
        from: usize,
        message: Box<SyncMessage>,
        arrived: Micros,
        slowed: bool,
    },
    Action(usize),
    Resume(usize),
    /// Per-agent traffic is counted from here (`traffic_from_s`).
    TrafficMark,
    Sample,
    ConvergenceCheck,
    /// Whether every healthy node holds every healthy node's current
    /// record yet (see `Metrics::cold_starts`).
    RecordsCheck,
    /// A KV write on `node` (a random healthy node when `None`); a
    /// delete when `value` is `None`.
    KvWrite {
        node: Option<usize>,
        key: String,
        value: Option<Vec<u8>>,
    },
    KvCheck,
    /// Every healthy node collects its old tombstones.
    KvHousekeeping,
}

struct Entry {
    time: Micros,
    rank: u8,
    seq: u64,
    event: Event,
}

impl Entry {
    fn key(&self) -> (Micros, u8, u64) {
        (self.time, self.rank, self.seq)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// One simulated host.
pub(crate) struct Slot {
    /// `None` while crashed.
    pub node: Option<Node>,
    /// Bumped on crash so the dead instance's timers are dropped.
    pub epoch: u32,
    pub generation: u64,
    pub paused_until: Micros,
    /// Datagrams sent to it before this instant are lost (`Action::Deaf`).
    pub deaf_until: Micros,
    pub backlog: Vec<Event>,
    pub slow: Option<(Micros, Micros)>,
    /// Paused or slowed at some point: its own troubles are not false
    /// positives of the failure detector.
    pub faulted: bool,
    pub left: bool,
    pub members_down: u64,
    /// Totals of earlier (crashed) instances.
    pub datagrams_out: u64,
    pub bytes_out: u64,
    /// Anti-entropy messages and their bytes this host sent (TCP in the
    /// agent), all instances.
    pub sync_messages_out: u64,
    pub sync_bytes_out: u64,
    /// Totals at `traffic_from_s`: UDP bytes, datagrams, TCP bytes,
    /// messages.
    pub traffic_mark: [u64; 4],
    /// The node's name (`rename` changes it).
    pub name: String,
    /// Exchanges this node serves (as responder), by initiator, with when
    /// each last heard from it: at most `max_exchanges`.
    pub serving: HashMap<usize, Micros>,
}

impl Slot {
    /// UDP bytes, datagrams, TCP bytes and messages sent so far.
    pub(crate) fn traffic_totals(&self) -> [u64; 4] {
        let (bytes, datagrams) = self.node.as_ref().map_or((0, 0), |node| {
            (node.counters().bytes_out, node.counters().datagrams_out)
        });
        [
            self.bytes_out + bytes,
            self.datagrams_out + datagrams,
            self.sync_bytes_out,
            self.sync_messages_out,
        ]
    }
}

/// A running simulation.
pub struct Simulation {
    pub(crate) scenario: Scenario,
    pub(crate) now: Micros,
    seq: u64,
    queue: BinaryHeap<Reverse<Entry>>,
    pub(crate) rng: StdRng,
    pub(crate) network: Network,
    pub(crate) slots: Vec<Slot>,
    pub(crate) metrics: Metrics,
    pub(crate) config: GossipConfig,
    pub(crate) envelope: Envelope,
    pub(crate) events: u64,
    pub(crate) change_counter: u64,
    /// Bulk KV values written so far (each value is distinct).
    pub(crate) kv_values: u64,
    /// Initial members of each node in a converged bootstrap.
    views: Vec<Vec<usize>>,
}

impl Simulation {
    /// Builds the cluster and schedules the scenario's actions.
    pub fn new(scenario: Scenario) -> Self {
        let nodes = scenario.nodes;
        let mut rng = StdRng::seed_from_u64(scenario.seed);
        let base = scenario.profile.gossip();
        let config = GossipConfig {
            seeds: (0..scenario.seeds).map(node_addr).collect(),
            local_health: scenario.local_health,
            notify_down_members: scenario.notify_down_members,
            suspicion_max_mult: scenario
                .suspicion_max_mult
                .unwrap_or(base.suspicion_max_mult),
            suspicion_mult: scenario.suspicion_mult.unwrap_or(base.suspicion_mult),
            reconnect_timeout: scenario
                .remove_down_after_s
                .map_or(GossipConfig::default().reconnect_timeout, |seconds| {
                    std::time::Duration::from_secs_f64(seconds)
                }),
            tombstone_timeout: scenario
                .remove_down_after_s
                .map_or(GossipConfig::default().tombstone_timeout, |seconds| {
                    std::time::Duration::from_secs_f64(seconds)
                }),
            // Every simulated node has its own name; see the field's docs.
            check_name: scenario.check_name,
            ..base
        };
        let envelope = Envelope::new(cluster_id("shoal-sim"));
        let slots = (0..nodes)
            .map(|index| {
                let name = format!("node-{index:05}");
                let node = Self::make_node(index, 1, &name, &config, envelope.clone(), &mut rng);
                Slot {
                    node: Some(node),
                    epoch: 0,
                    generation: 1,
                    paused_until: 0,
                    deaf_until: 0,
                    backlog: Vec::new(),
                    slow: None,
                    faulted: false,
                    left: false,
                    members_down: 0,
                    datagrams_out: 0,
                    bytes_out: 0,
                    sync_messages_out: 0,
                    sync_bytes_out: 0,
                    traffic_mark: [0; 4],
                    name,
                    serving: HashMap::new(),
                }
            })
            .collect();
        let mut sim = Self {
            network: Network::new(&scenario.network, nodes),
            metrics: Metrics::new(nodes),
            scenario,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            slots,
            config,
            envelope,
            events: 0,
            change_counter: 0,
            kv_values: 0,
            views: Vec::new(),
        };
        if sim.scenario.bootstrap == Bootstrap::Converged {
            sim.views = initial_views(nodes, sim.scenario.view, &mut sim.rng);
        }
        // Nodes start at random offsets so their probe rounds are not in
        // lockstep, as on real hosts.
        let spread = match sim.scenario.bootstrap {
            Bootstrap::Converged => sim.config.probe_period.as_micros() as f64,
            Bootstrap::Join => sim.scenario.join_spread_s * SECOND as f64,
        };
        for index in 0..nodes {
            let at = (sim.rng.random::<f64>() * spread) as Micros;
            sim.push(at, RANK_OTHER, Event::Boot(index));
        }
        if sim.scenario.bootstrap == Bootstrap::Join {
            sim.cold_start();
        }
        for index in 0..sim.scenario.actions.len() {
            let at = (sim.scenario.actions[index].at_s * SECOND as f64) as Micros;
            sim.push(at, RANK_OTHER, Event::Action(index));
        }
        sim.push(0, RANK_OTHER + 1, Event::Sample);
        if sim.scenario.tombstone_grace_s.is_some() {
            let first = sim.kv_housekeeping_period();
            sim.push(first, RANK_OTHER + 1, Event::KvHousekeeping);
        }
        if sim.scenario.traffic_from_s > 0.0 {
            let at = (sim.scenario.traffic_from_s * SECOND as f64) as Micros;
            sim.push(at, RANK_OTHER + 1, Event::TrafficMark);
        }
        sim
    }

    pub(crate) fn make_node(
        index: usize,
        generation: u64,
        name: &str,
        config: &GossipConfig,
        envelope: Envelope,
        rng: &mut StdRng,
    ) -> Node {
        let id = NodeId {
            addr: node_addr(index),
            generation,
        };
        let record = NodeRecord::new(id, name);
        Node::new(record, config.clone(), envelope, rng.random())
    }

    pub(crate) fn push(&mut self, time: Micros, rank: u8, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Entry {
            time,
            rank,
            seq: self.seq,
            event,
        }));
    }

    /// Runs to the end of the scenario.
    pub fn run(&mut self) {
        let end = (self.scenario.duration_s * SECOND as f64) as Micros;
        while let Some(Reverse(entry)) = self.queue.pop() {
            if entry.time > end {
                break;
            }
            self.now = entry.time;
            self.events += 1;
            self.dispatch(entry.event);
        }
        self.now = end;
        self.sample();
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Boot(index) => self.boot(index),
            Event::Action(index) => {
                let action = self.scenario.actions[index].action.clone();
                self.apply(&action);
            }
            Event::Resume(index) => self.resume(index),
            Event::TrafficMark => {
                for slot in &mut self.slots {
                    slot.traffic_mark = slot.traffic_totals();
                }
            }
            Event::Sample => {
                self.sample();
                let next = self.now + (self.scenario.sample_s * SECOND as f64) as Micros;
                self.push(next, RANK_OTHER + 1, Event::Sample);
            }
            Event::ConvergenceCheck => {
                if self.converged() {
                    let heal = self.metrics.heal_at.unwrap_or(0);
                    self.metrics.converged_after_heal = Some(self.now - heal);
                } else {
                    self.push(
                        self.now + CONVERGENCE_CHECK,
                        RANK_OTHER,
                        Event::ConvergenceCheck,
                    );
                }
            }
            Event::RecordsCheck => self.check_records(),
            Event::KvWrite { node, key, value } => self.kv_write(node, key, value),
            Event::KvCheck => self.kv_check(),
            Event::KvHousekeeping => self.kv_housekeeping(),
            Event::Datagram { to, .. } | Event::Sync { to, .. } => self.deliver(to, event),
            Event::Timer { node, .. } => self.deliver(node, event),
        }
    }

    fn boot(&mut self, index: usize) {
        let Some(node) = self.slots[index].node.as_mut() else {
            return;
        };
        if self.scenario.bootstrap == Bootstrap::Converged {
            let ids = std::mem::take(&mut self.views[index]);
            node.assume_members(ids.into_iter().map(|other| NodeId {
                addr: node_addr(other),
                generation: 1,
            }));
            // Everyone already has what these exchanges would fetch.
            node.effects().syncs.clear();
        }
        node.start();
        self.after_call(index);
    }

    /// Hands an event to its node, unless the node is down, paused (the
    /// event waits) or slow (the event comes back later).
    fn deliver(&mut self, index: usize, event: Event) {
        let now = self.now;
        let slot = &mut self.slots[index];
        if slot.node.is_none() {
            return;
        }
        if let Event::Timer { epoch, .. } = event
            && epoch != slot.epoch
        {
            return;
        }
        if now < slot.paused_until {
            slot.backlog.push(event);
            return;
        }
        if let Some((delay, jitter)) = slot.slow {
            let event = match event {
                Event::Datagram {
                    to,
                    packet,
                    arrived,
                    slowed: false,
                } => Some(Event::Datagram {
                    to,
                    packet,
                    arrived,
                    slowed: true,
                }),
                Event::Sync {
                    to,
                    from,
                    message,
                    arrived,
                    slowed: false,
                } => Some(Event::Sync {
                    to,
                    from,
                    message,
                    arrived,
                    slowed: true,
                }),
                other => {
                    self.handle(index, other);
                    None
                }
            };
            if let Some(event) = event {
                let extra = if jitter > 0 {
                    self.rng.random_range(0..jitter)
                } else {
                    0
                };
                self.push(now + delay + extra, RANK_OTHER, event);
            }
            return;
        }
        self.handle(index, event);
    }

    pub(crate) fn handle(&mut self, index: usize, event: Event) {
        let now = self.now;
        let Some(node) = self.slots[index].node.as_mut() else {
            return;
        };
        // The virtual clock, as the agent passes the wall clock.
        node.set_clock(std::time::Duration::from_micros(now));
        match event {
            Event::Timer { timer, due, .. } => {
                if now > due {
                    node.note_lag(std::time::Duration::from_micros(now - due));
                }
                node.handle_timer(timer);
            }
            Event::Datagram {
                packet, arrived, ..
            } => {
                if now > arrived {
                    node.note_lag(std::time::Duration::from_micros(now - arrived));
                }
                // Refused packets are counted by the node itself.
                let _ = node.handle_datagram(&packet);
            }
            Event::Sync { from, message, .. } => {
                if matches!(*message, SyncMessage::Digest(_)) && !self.serve(index, from) {
                    self.metrics.syncs_refused += 1;
                    return;
                }
                let node = self.slots[index].node.as_mut().expect("checked above");
                // The same step function the agent runs over TCP.
                match node.on_sync(*message) {
                    Some(reply) => self.send_sync(index, from, reply),
                    None => self.end_exchange(index, from),
                }
            }
            _ => unreachable!("only node events are handled"),
        }
        self.after_call(index);
    }

    /// Sends one anti-entropy message; an exchange across a partition
    /// fails as its TCP connection would.
    fn send_sync(&mut self, from: usize, to: usize, message: SyncMessage) {
        if !self.network.connected(from, to) {
            self.end_exchange(from, to);
            return;
        }
        if let Some(heard) = self.slots[from].serving.get_mut(&to) {
            *heard = self.now;
        }
        let bytes = (4 + HEADER_LEN + codec::encoded_len(&message)) as u64;
        self.metrics.sync_bytes += bytes;
        self.slots[from].sync_bytes_out += bytes;
        self.slots[from].sync_messages_out += 1;
        let at = self.now + self.network.delay(&mut self.rng, from, to);
        let arrived = at;
        let event = Event::Sync {
            to,
            from,
            message: Box::new(message),
            arrived,
            slowed: false,
        };
        self.push(at, RANK_OTHER, event);
    }

    /// Carries out the node's effects and takes measurements.
    pub(crate) fn after_call(&mut self, index: usize) {
        let now = self.now;
        let epoch = self.slots[index].epoch;
        let Some(node) = self.slots[index].node.as_mut() else {
            return;
        };
        let effects = node.effects();
        let datagrams = std::mem::take(&mut effects.datagrams);
        let timers = std::mem::take(&mut effects.timers);
        let mut syncs = std::mem::take(&mut effects.syncs);
        for (after, timer) in timers {
            if self.scenario.static_views
                && matches!(
                    timer,
                    NodeTimer::Rejoin(_) | NodeTimer::Swim(foca::Timer::PeriodicAnnounce(_))
                )
            {
                continue;
            }
            let due = now + after.as_micros() as Micros;
            let rank = timer.rank();
            let event = Event::Timer {
                node: index,
                epoch,
                timer,
                due,
            };
            self.push(due, rank, event);
        }
        for (addr, packet) in datagrams {
            let Some(to) = node_index(addr, self.slots.len()) else {
                continue;
            };
            if now < self.slots[to].deaf_until {
                self.network.sent += 1;
                self.network.lost += 1;
                continue;
            }
            if let Some(delay) = self.network.datagram(&mut self.rng, index, to) {
                let at = now + delay;
                let event = Event::Datagram {
                    to,
                    packet,
                    arrived: at,
                    slowed: false,
                };
                self.push(at, RANK_OTHER, event);
            }
        }
        // Exchanges with addresses outside the cluster: what a forged rumor
        // could make nodes attempt.
        self.metrics.syncs_outside += syncs
            .iter()
            .filter(|&&peer| node_index(peer, self.slots.len()).is_none())
            .count() as u64;
        if self.scenario.anti_entropy && !syncs.is_empty() {
            syncs.sort_unstable();
            syncs.dedup();
            let digest = self.slots[index].node.as_ref().expect("alive").sync_open();
            for peer in syncs {
                if let Some(to) = node_index(peer, self.slots.len()) {
                    if self.network.connected(index, to) {
                        self.metrics.sync_exchanges += 1;
                    }
                    self.send_sync(index, to, digest.clone());
                }
            }
        }
        self.observe(index);
    }
}

/// Who knows whom at t=0: everyone (`view = 0`), or a random symmetric
/// graph of about `view` members per node. Symmetric, because a ping from
/// a stranger teaches the receiver (and, by gossip, everyone) a new member.
fn initial_views(nodes: usize, view: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    if view == 0 || view >= nodes - 1 {
        return (0..nodes)
            .map(|index| (0..nodes).filter(|&other| other != index).collect())
            .collect();
    }
    let mut views: Vec<Vec<usize>> = vec![Vec::with_capacity(view + view / 4); nodes];
    for index in 0..nodes {
        for _ in 0..view / 2 {
            let mut other = rng.random_range(0..nodes - 1);
            if other >= index {
                other += 1;
            }
            views[index].push(other);
            views[other].push(index);
        }
    }
    for members in &mut views {
        members.sort_unstable();
        members.dedup();
    }
    views
}

impl Simulation {
    /// Whether `responder` takes the exchange `initiator` opens: it serves
    /// at most `max_exchanges` at once, as the agent does, and refuses the
    /// rest (the initiator hears nothing, as from a closed connection).
    fn serve(&mut self, responder: usize, initiator: usize) -> bool {
        let limit = self.scenario.max_exchanges;
        if limit == 0 {
            return true;
        }
        let now = self.now;
        let serving = &mut self.slots[responder].serving;
        serving.retain(|_, heard| now.saturating_sub(*heard) < EXCHANGE_IDLE);
        if serving.len() >= limit && !serving.contains_key(&initiator) {
            return false;
        }
        serving.insert(initiator, now);
        true
    }

    /// The exchange between `a` and `b` is over (or failed): whichever
    /// served it has a free slot.
    pub(crate) fn end_exchange(&mut self, a: usize, b: usize) {
        self.slots[a].serving.remove(&b);
        self.slots[b].serving.remove(&a);
    }

    /// Every node starts now: time how long until each holds every
    /// healthy node's current record.
    pub(crate) fn cold_start(&mut self) {
        self.metrics.cold_starts.push(crate::metrics::ColdStart {
            at: self.now,
            complete_after: None,
        });
        self.push(
            self.now + CONVERGENCE_CHECK,
            RANK_OTHER,
            Event::RecordsCheck,
        );
    }

    fn check_records(&mut self) {
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|&index| self.is_healthy(index))
            .collect();
        let complete = live.iter().all(|&observer| {
            let node = self.slots[observer].node.as_ref().expect("healthy");
            let held: HashMap<String, u64> = node
                .records()
                .into_iter()
                .map(|record| (record.name, record.id.generation))
                .collect();
            live.iter().all(|&other| {
                held.get(&self.slots[other].name) == Some(&self.slots[other].generation)
            })
        });
        let Some(start) = self.metrics.cold_starts.last_mut() else {
            return;
        };
        if complete {
            start.complete_after = Some(self.now - start.at);
        } else {
            self.push(
                self.now + CONVERGENCE_CHECK,
                RANK_OTHER,
                Event::RecordsCheck,
            );
        }
    }
}

/// How well the nodes' network coordinates estimate the round trips
/// between them (see `shoal_protocol::coordinate`).
#[derive(Clone, Debug, PartialEq)]
pub struct CoordinateAccuracy {
    /// Median over every pair of live nodes of |estimate - mean rtt| /
    /// mean rtt.
    pub median_relative_error: f64,
    /// 90th percentile of the same.
    pub p90_relative_error: f64,
    /// Share of live nodes whose nearest other node by estimate is in
    /// their own zone (1 without zones).
    pub nearest_in_zone: f64,
}

impl Simulation {
    /// Each sample's time (seconds) and share of zone pairs with a route
    /// for a read (see [`crate::metrics::Sample::zone_routes`]).
    pub fn zone_routes(&self) -> Vec<(f64, f64)> {
        self.metrics
            .samples
            .iter()
            .map(|sample| (sample.time as f64 / SECOND as f64, sample.zone_routes))
            .collect()
    }

    /// The coordinates' accuracy now, from each live node's own coordinate.
    pub fn coordinate_accuracy(&self) -> CoordinateAccuracy {
        let live: Vec<(usize, &shoal_protocol::coordinate::Coordinate)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(index, slot)| Some((index, slot.node.as_ref()?.coordinate())))
            .collect();
        let mut errors = Vec::new();
        let mut nearest_in_zone = 0usize;
        for &(a, mine) in &live {
            let mut nearest: Option<(f64, usize)> = None;
            for &(b, theirs) in &live {
                if a == b {
                    continue;
                }
                let estimate = mine.distance_to(theirs).as_secs_f64();
                if b > a {
                    let truth = self.network.mean_rtt(a, b);
                    errors.push((estimate - truth).abs() / truth);
                }
                if nearest.is_none_or(|(best, _)| estimate < best) {
                    nearest = Some((estimate, b));
                }
            }
            if nearest.is_some_and(|(_, b)| self.network.zone(b) == self.network.zone(a)) {
                nearest_in_zone += 1;
            }
        }
        errors.sort_by(f64::total_cmp);
        let at = |q: f64| {
            errors
                .get(((errors.len() as f64 * q) as usize).min(errors.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        CoordinateAccuracy {
            median_relative_error: at(0.5),
            p90_relative_error: at(0.9),
            nearest_in_zone: nearest_in_zone as f64 / live.len().max(1) as f64,
        }
    }
}
