//! The scenario's actions (faults, partitions, state changes) and the
//! observations taken after every call into a node.

use foca::State;
use shoal_protocol::NodeId;

use crate::metrics::{ChangeTrack, CrashTrack, Sample};
use crate::network::{Micros, node_addr, node_index};
use crate::scenario::Action;
use crate::sim::{Event, SECOND, Simulation};

/// Tag a `change` action sets on its node's record.
const CHANGE_TAG: &str = "sim/change";

impl Simulation {
    pub(crate) fn apply(&mut self, action: &Action) {
        let now = self.now;
        match *action {
            Action::Change { node } => {
                let node = if node < 0 {
                    self.random_live_node()
                } else {
                    Some(node as usize)
                };
                if let Some(node) = node {
                    self.change(node);
                }
            }
            Action::Crash { node } => self.crash(node),
            Action::Restart { node } => self.restart(node),
            Action::MassRestart => {
                // Not crashes whose detection is measured: every node
                // comes back at once.
                let tracked = self.metrics.crashes.len();
                for node in 0..self.slots.len() {
                    self.crash(node);
                }
                for node in 0..self.slots.len() {
                    self.restart(node);
                }
                self.metrics.crashes.truncate(tracked);
                self.cold_start();
            }
            Action::Pause { node, seconds } => {
                let slot = &mut self.slots[node];
                slot.paused_until = now + (seconds * SECOND as f64) as Micros;
                slot.faulted = true;
                let until = slot.paused_until;
                self.push(until, 0, Event::Resume(node));
            }
            Action::Deaf { node, seconds } => {
                let slot = &mut self.slots[node];
                slot.deaf_until = now + (seconds * SECOND as f64) as Micros;
                slot.faulted = true;
            }
            Action::Slow {
                node,
                delay_ms,
                jitter_ms,
            } => {
                let slot = &mut self.slots[node];
                slot.slow = Some((
                    (delay_ms * 1000.0) as Micros,
                    (jitter_ms * 1000.0) as Micros,
                ));
                slot.faulted = true;
            }
            Action::Recover { node } => self.slots[node].slow = None,
            Action::Leave { node } => {
                if let Some(instance) = self.slots[node].node.as_mut() {
                    instance.begin_leave();
                    self.slots[node].left = true;
                    self.after_call(node);
                }
            }
            Action::Partition { split } => self.network.partition(split),
            Action::IsolateZone { zone } => self.network.isolate_zone(zone),
            Action::Heal => {
                self.network.heal();
                self.metrics.heal_at = Some(now);
                self.metrics.converged_after_heal = None;
                self.push(now, 200, Event::ConvergenceCheck);
                self.kv_disturbed();
            }
            Action::Loss { loss } => self.network.set_loss(loss),
            Action::LinkLoss { from, to, loss } => self.network.set_link_loss(from, to, loss),
            Action::BurstyLoss {
                enter,
                leave,
                loss_in_burst,
            } => self.network.set_bursty_loss(enter, leave, loss_in_burst),
            Action::KvWrite {
                node,
                ref key,
                ref value,
            } => {
                let node = usize::try_from(node).ok();
                self.kv_write(node, key.clone(), Some(value.clone().into_bytes()));
            }
            Action::KvDelete { node, ref key } => {
                let node = usize::try_from(node).ok();
                self.kv_write(node, key.clone(), None);
            }
            Action::KvBulk {
                writes,
                keys,
                over_s,
                node,
                ref prefix,
                value_bytes,
                deletes,
            } => {
                let node = usize::try_from(node).ok();
                let shape = crate::kv::Bulk {
                    writes,
                    keys,
                    over_s,
                    value_bytes,
                    deletes,
                };
                self.kv_bulk(node, prefix, shape);
            }
            Action::SpoofDigest { node } => self.spoof_digest(node),
            Action::Rename { node } => self.rename(node),
        }
    }

    pub(crate) fn random_live_node(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|&index| self.is_healthy(index))
            .collect();
        (!live.is_empty()).then(|| live[rand::RngExt::random_range(&mut self.rng, 0..live.len())])
    }

    fn change(&mut self, index: usize) {
        self.change_counter += 1;
        let value = self.change_counter.to_string();
        let Some(node) = self.slots[index].node.as_mut() else {
            return;
        };
        node.update_local(|record| {
            record.tags.insert(CHANGE_TAG.into(), value);
        });
        let record = node.local_record();
        let audience = (0..self.slots.len())
            .filter(|&other| other != index && self.slots[other].node.is_some())
            .count();
        let mut reached = vec![false; self.slots.len()];
        reached[index] = true;
        self.metrics.changes.push(ChangeTrack {
            origin: index,
            name: record.name,
            version: record.version,
            at: self.now,
            reached,
            arrivals: Vec::new(),
            audience,
        });
        self.after_call(index);
    }

    pub(crate) fn crash(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let Some(node) = slot.node.take() else {
            return;
        };
        slot.epoch += 1;
        slot.backlog.clear();
        slot.serving.clear();
        slot.datagrams_out += node.counters().datagrams_out;
        slot.bytes_out += node.counters().bytes_out;
        let id = node.identity();
        let expected = (0..self.slots.len())
            .filter(|&other| {
                self.slots[other].node.as_ref().is_some_and(|observer| {
                    matches!(observer.member_state(id.addr), Some((seen, State::Alive | State::Suspect)) if seen == id)
                })
            })
            .count();
        self.metrics.crashes.push(CrashTrack {
            node: index,
            id,
            at: self.now,
            expected,
            observers: 0,
            first: None,
            all: (expected == 0).then_some(0),
            delays: Vec::new(),
        });
    }

    pub(crate) fn restart(&mut self, index: usize) {
        if self.slots[index].node.is_some() {
            return;
        }
        let generation = self.slots[index].generation + 1;
        let node = Self::make_node(
            index,
            generation,
            &self.slots[index].name,
            &self.config,
            self.envelope.clone(),
            &mut self.rng,
        );
        let slot = &mut self.slots[index];
        slot.generation = generation;
        slot.node = Some(node);
        slot.left = false;
        slot.members_down = 0;
        slot.node.as_mut().expect("just set").start();
        self.after_call(index);
        // It comes back with an empty KV store.
        self.kv_disturbed();
    }

    /// A paused node wakes up: its overdue timers first, then everything
    /// that arrived meanwhile, as the agent's biased select would.
    pub(crate) fn resume(&mut self, index: usize) {
        let backlog = std::mem::take(&mut self.slots[index].backlog);
        let (timers, others): (Vec<Event>, Vec<Event>) = backlog
            .into_iter()
            .partition(|event| matches!(event, Event::Timer { .. }));
        for event in timers.into_iter().chain(others) {
            self.handle(index, event);
        }
    }

    /// A node that is up, has not left and is not paused.
    pub(crate) fn is_healthy(&self, index: usize) -> bool {
        let slot = &self.slots[index];
        slot.node.is_some() && !slot.left && slot.paused_until <= self.now
    }

    /// Measurements after a call into node `index`.
    pub(crate) fn observe(&mut self, index: usize) {
        let now = self.now;
        let slot = &mut self.slots[index];
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        if let Some(id) = node.take_renewed() {
            slot.generation = id.generation;
            if !slot.left {
                self.metrics.renewals += 1;
            }
        }
        // The agent persists these; here they would only pile up.
        drop(node.take_kv_applied());
        if !node.take_changed() {
            return;
        }
        if self.metrics.changes_pending() {
            let names: Vec<String> = self
                .metrics
                .changes
                .iter()
                .filter(|change| !change.reached[index])
                .map(|change| change.name.clone())
                .collect();
            for record in node.records_named(&names) {
                self.metrics
                    .saw_version(index, &record.name, record.version, now);
            }
        }
        let downs = node.counters().members_down;
        if downs == slot.members_down {
            return;
        }
        slot.members_down = downs;
        // What the failure detector holds down, listed or not: a member
        // that fails before this node has its record is not listed.
        let down: Vec<NodeId> = node.down_members();
        for id in down {
            if !self.metrics.down_seen[index].insert(id) {
                continue;
            }
            if self.metrics.saw_crash_detected(id, now) {
                continue;
            }
            let Some(target) = node_index(id.addr, self.slots.len()) else {
                continue;
            };
            let target_slot = &self.slots[target];
            if target_slot.node.is_none()
                || target_slot.left
                || target_slot.generation != id.generation
            {
                continue;
            }
            if !self.network.connected(index, target) {
                self.metrics.partition_downs += 1;
                let side = (0..self.slots.len())
                    .filter(|&other| self.network.connected(index, other))
                    .count();
                if 2 * side < self.slots.len() {
                    self.metrics.partition_downs_by_minority += 1;
                }
                continue;
            }
            let faulted = target_slot.faulted;
            self.metrics.saw_false_down(id, faulted, now);
        }
    }

    /// Whether every healthy node sees every other healthy node as active.
    pub(crate) fn converged(&self) -> bool {
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|&index| self.is_healthy(index))
            .collect();
        // Checking every pair costs O(N^2 * view): beyond a few hundred
        // nodes, the count of active members has to do.
        let pairwise = live.len() <= 200;
        live.iter().all(|&index| {
            let node = self.slots[index].node.as_ref().expect("healthy");
            node.active_members() + 1 >= live.len()
                && (!pairwise || live.iter().all(|&other| {
                    other == index
                        || matches!(node.member_state(node_addr(other)), Some((id, State::Alive | State::Suspect)) if id.generation == self.slots[other].generation)
                }))
        })
    }

    /// Of the ordered pairs of zones (datacenters), the share across which
    /// a read would be answered now: some live node of the one holds
    /// alive, and can reach, a live node of the other (the WAN pool's
    /// forwarding). 1 without zones.
    fn routes_between_zones(&self) -> f64 {
        let zones = self.network.zones();
        if zones < 2 {
            return 1.0;
        }
        let nodes = self.slots.len();
        let mut routed = vec![vec![false; zones]; zones];
        for (from, slot) in self.slots.iter().enumerate() {
            let Some(node) = slot.node.as_ref() else {
                continue;
            };
            for member in node.members() {
                if member.status != shoal_protocol::MemberStatus::Alive {
                    continue;
                }
                let Some(to) = crate::network::node_index(member.id.addr, nodes) else {
                    continue;
                };
                let live = self.slots[to]
                    .node
                    .as_ref()
                    .is_some_and(|peer| peer.local_record().id == member.id);
                if live && self.network.connected(from, to) {
                    routed[self.network.zone(from)][self.network.zone(to)] = true;
                }
            }
        }
        let pairs = zones * (zones - 1);
        let answered = (0..zones)
            .flat_map(|a| (0..zones).map(move |b| (a, b)))
            .filter(|&(a, b)| a != b && routed[a][b])
            .count();
        answered as f64 / pairs as f64
    }

    pub(crate) fn sample(&mut self) {
        let mut sample = Sample {
            time: self.now,
            live: 0,
            min_view: usize::MAX,
            max_view: 0,
            datagrams: 0,
            bytes: 0,
            false_downs: self.metrics.false_downs.len(),
            change_coverage: 0.0,
            max_health_score: 0,
            zone_routes: self.routes_between_zones(),
        };
        for slot in &self.slots {
            sample.datagrams += slot.datagrams_out;
            sample.bytes += slot.bytes_out;
            let Some(node) = slot.node.as_ref() else {
                continue;
            };
            sample.live += 1;
            sample.min_view = sample.min_view.min(node.active_members());
            sample.max_view = sample.max_view.max(node.active_members());
            sample.datagrams += node.counters().datagrams_out;
            sample.bytes += node.counters().bytes_out;
            sample.max_health_score = sample.max_health_score.max(node.local_health().score());
        }
        if let Some(change) = self.metrics.changes.last() {
            sample.change_coverage = change.arrivals.len() as f64 / change.audience.max(1) as f64;
        }
        self.metrics.samples.push(sample);
    }
}
