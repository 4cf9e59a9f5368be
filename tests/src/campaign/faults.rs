//! The fault scheduler: draws faults from the seeded generator and applies
//! them to the real processes, ends them on time, and keeps each agent's
//! partition (the `--fault-injection` hook) in step with the plan, also
//! across restarts and pauses.
//!
//! At most two agents are *crippled* at once (killed, frozen, or on the
//! minority side of a partition), so a majority always stays healthy and
//! connected. Lossy links (the relays in front of every agent) and hostile
//! API load ([`super::hostile`], one at a time) come on top and don't
//! count: an agent under them is still healthy.
//!
//! A partition lasts 5-20 s; a *long* one outlasts the tombstone grace of
//! the timings in force plus the agents' KV housekeeping period (30 s:
//! tombstones are collected on that beat, so only then has the other side
//! collected deletes made after the partition began) by 2-10 s. It is only
//! drawn when the phase has room for all of it (so only with the quick
//! timings' 30 s grace), and when the menu has it, it is the first fault
//! of such a phase, so every campaign runs one.
//!
//! Between the phases, [`FaultScheduler::switch_timing`] restarts every
//! agent, one at a time, on the next phase's config.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::client::call;
use super::hostile::{HostileLoad, Tally};
use super::menu::FaultMenu;
use super::rng::Rng;
use super::timing::Timing;
use super::{AGENTS, Impairment, Load, Partition, Shared, monitor};
use crate::Agent;
use crate::relay::Relay;

/// How often an agent collects tombstones past their grace
/// (`KV_HOUSEKEEPING_INTERVAL` in agent/src/daemon/core_loop.rs).
const KV_HOUSEKEEPING: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Pause,
    Partition { long: bool },
    Lossy,
    Hostile(&'static str),
}

impl Fault {
    /// The kind's name in the menu and the report.
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition { long: false } => "partition",
            Fault::Partition { long: true } => "long_partition",
            Fault::Lossy => "lossy_link",
            Fault::Hostile(kind) => kind,
        }
    }
}

/// Something that ends a fault.
#[derive(Clone, Debug)]
enum End {
    Restart(usize),
    Resume(usize),
    Heal,
    Lossless(usize),
    Calm,
}

/// Owns the processes and the relays for the campaign's fault phase.
pub struct FaultScheduler<'a> {
    agents: &'a mut [Agent],
    relays: &'a [Relay],
    shared: &'a Shared,
    rng: Rng,
    ends: Vec<(Duration, End)>,
    /// Peers each agent should block, and what it was last told (`None`:
    /// unknown, e.g. just restarted).
    desired_blocks: Vec<Vec<IpAddr>>,
    applied_blocks: Vec<Option<Vec<IpAddr>>>,
    minority: Vec<usize>,
    lossy: Vec<usize>,
    hostile: Option<HostileLoad>,
    /// Hostile loads told to stop, joined at the heal.
    halted: Vec<HostileLoad>,
    menu: FaultMenu,
    timing: Timing,
    /// When the current phase ends.
    phase_end: Duration,
    /// No fault injected yet in this phase.
    phase_start: bool,
    /// Faults injected, by kind.
    pub counts: BTreeMap<&'static str, u64>,
    /// Hostile requests sent, by kind, and what they were answered.
    pub hostile_tallies: BTreeMap<&'static str, Tally>,
    /// Agents that exited without being killed (invariant d).
    pub crashes: Vec<String>,
}

impl<'a> FaultScheduler<'a> {
    pub fn new(
        agents: &'a mut [Agent],
        relays: &'a [Relay],
        shared: &'a Shared,
        seed: u64,
        menu: FaultMenu,
        timing: Timing,
    ) -> FaultScheduler<'a> {
        FaultScheduler {
            agents,
            relays,
            shared,
            rng: Rng::derive(seed, 1),
            ends: Vec::new(),
            desired_blocks: vec![Vec::new(); AGENTS],
            applied_blocks: vec![Some(Vec::new()); AGENTS],
            minority: Vec::new(),
            lossy: Vec::new(),
            hostile: None,
            halted: Vec::new(),
            menu,
            timing,
            phase_end: Duration::ZERO,
            phase_start: false,
            counts: BTreeMap::new(),
            hostile_tallies: BTreeMap::new(),
            crashes: Vec::new(),
        }
    }

    /// Runs the fault phase for `length`: a new fault every 0.5-4 s.
    pub fn run(&mut self, length: Duration) {
        let now = self.shared.now();
        let deadline = now + length;
        self.phase_end = deadline;
        self.phase_start = true;
        let mut next_fault = now + self.rng.millis(1000, 3000);
        while self.shared.now() < deadline {
            let now = self.shared.now();
            self.end_due(now);
            if now >= next_fault {
                self.inject(now);
                next_fault = now + self.rng.millis(500, 4000);
            }
            self.reconcile_blocks();
            self.check_processes();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ends every fault now and waits (up to `timeout`) until every agent
    /// runs, unpaused and unblocked.
    pub fn heal_all(&mut self, timeout: Duration) -> Result<(), String> {
        self.end_due(Duration::MAX);
        for load in std::mem::take(&mut self.halted) {
            let kind = load.kind;
            let tally = load.finish();
            self.hostile_tallies.entry(kind).or_default().add(&tally);
        }
        let deadline = self.shared.now() + timeout;
        loop {
            self.reconcile_blocks();
            self.check_processes();
            let pending: Vec<usize> = (0..AGENTS)
                .filter(|&i| self.applied_blocks[i].as_ref() != Some(&Vec::new()))
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if self.shared.now() > deadline {
                return Err(format!(
                    "heal: agents {pending:?} did not take their partition off within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn crippled(&self) -> usize {
        let state = self.shared.state();
        (0..AGENTS)
            .filter(|&i| state.down[i] || state.paused[i] || self.minority.contains(&i))
            .count()
    }

    fn healthy_candidates(&self) -> Vec<usize> {
        let state = self.shared.state();
        (0..AGENTS)
            .filter(|&i| !state.down[i] && !state.paused[i] && !self.minority.contains(&i))
            .collect()
    }

    /// How long a long partition may last: longer than the tombstone grace,
    /// and it must fit in what is left of the phase.
    fn long_partition_length(&self, now: Duration) -> Option<(u64, u64)> {
        let outlast = self.timing.tombstone_grace + KV_HOUSEKEEPING;
        let low = outlast + Duration::from_secs(2);
        let room = self.phase_end.saturating_sub(now + Duration::from_secs(1));
        let high = room.min(outlast + Duration::from_secs(10));
        (high > low).then_some((low.as_millis() as u64, high.as_millis() as u64))
    }

    /// Injects one fault, drawn among those the menu and the caps allow.
    fn inject(&mut self, now: Duration) {
        let crippled = self.crippled();
        let candidates = self.healthy_candidates();
        let can_cripple = crippled < 2 && !candidates.is_empty();
        let can_partition = can_cripple && self.minority.is_empty();
        let calm = self.hostile.is_none();
        let feasible: Vec<(u64, Fault)> = [
            (25, Fault::Kill, can_cripple),
            (20, Fault::Pause, can_cripple),
            (20, Fault::Partition { long: false }, can_partition),
            (
                30,
                Fault::Partition { long: true },
                can_partition && self.long_partition_length(now).is_some(),
            ),
            (20, Fault::Lossy, self.lossy.len() < 2),
            (6, Fault::Hostile("hostile_filter"), calm),
            (6, Fault::Hostile("hostile_events"), calm),
            (6, Fault::Hostile("hostile_template"), calm),
        ]
        .into_iter()
        .filter(|(_, fault, allowed)| *allowed && self.menu.allows(fault.name()))
        .map(|(weight, fault, _)| (weight, fault))
        .collect();
        if feasible.is_empty() {
            self.count("skipped (caps)");
            return;
        }
        let long_first = Fault::Partition { long: true };
        let fault = if std::mem::take(&mut self.phase_start)
            && feasible.iter().any(|(_, f)| f.name() == long_first.name())
        {
            long_first
        } else {
            self.rng.weighted(&feasible)
        };
        match fault {
            Fault::Kill | Fault::Pause => {
                let i = candidates[self.rng.index(candidates.len())];
                if matches!(fault, Fault::Kill) {
                    // Up to 12 s: long enough, at times, to be declared failed
                    // and come back as a new generation.
                    let downtime = self.rng.millis(1000, 12000);
                    self.agents[i].kill();
                    self.applied_blocks[i] = None;
                    let mut state = self.shared.state();
                    state.down[i] = true;
                    state.kills.push((i, now));
                    let grace = self.timing.grace;
                    state
                        .impairments
                        .push(Impairment::new(i, "kill", now, grace));
                    self.ends.push((now + downtime, End::Restart(i)));
                    self.count("kill");
                } else {
                    let frozen = self.rng.millis(2000, 8000);
                    {
                        let mut state = self.shared.state();
                        state.paused[i] = true;
                        let grace = self.timing.grace;
                        state
                            .impairments
                            .push(Impairment::new(i, "pause", now, grace));
                    }
                    self.agents[i].signal(libc::SIGSTOP);
                    self.ends.push((now + frozen, End::Resume(i)));
                    self.count("pause");
                }
            }
            Fault::Partition { long } => {
                let size = if crippled == 0 && self.rng.chance(50) {
                    2
                } else {
                    1
                };
                let mut pool = candidates;
                let mut minority = Vec::new();
                while minority.len() < size && !pool.is_empty() {
                    minority.push(pool.remove(self.rng.index(pool.len())));
                }
                let ips = |side: &dyn Fn(usize) -> bool, agents: &[Agent], relays: &[Relay]| {
                    (0..AGENTS)
                        .filter(|&j| side(j))
                        .flat_map(|j| [agents[j].ip, relays[j].addr.ip()])
                        .collect::<Vec<IpAddr>>()
                };
                for i in 0..AGENTS {
                    let inside = minority.contains(&i);
                    self.desired_blocks[i] = ips(
                        &|j| minority.contains(&j) != inside,
                        self.agents,
                        self.relays,
                    );
                }
                let length = match self.long_partition_length(now).filter(|_| long) {
                    Some((low, high)) => self.rng.millis(low, high),
                    None => self.rng.millis(5000, 20000),
                };
                let grace = self.timing.grace;
                let mut state = self.shared.state();
                for &i in &minority {
                    state
                        .impairments
                        .push(Impairment::new(i, "partition", now, grace));
                }
                state.partitions.push(Partition {
                    minority: minority.clone(),
                    start: now,
                    end: None,
                    grace,
                });
                drop(state);
                self.minority = minority;
                self.ends.push((now + length, End::Heal));
                self.count(fault.name());
            }
            Fault::Lossy => {
                let free: Vec<usize> = (0..AGENTS).filter(|i| !self.lossy.contains(i)).collect();
                let i = free[self.rng.index(free.len())];
                let loss = [0.05, 0.10, 0.15][self.rng.index(3)];
                self.relays[i].set_loss(loss);
                self.lossy.push(i);
                let length = self.rng.millis(5000, 20000);
                self.ends.push((now + length, End::Lossless(i)));
                self.count("lossy_link");
            }
            Fault::Hostile(kind) => {
                let i = self.rng.index(AGENTS);
                self.hostile = Some(HostileLoad::start(kind, self.agents[i].http_addr()));
                self.shared.state().loads.push(Load {
                    agent: i,
                    kind,
                    start: now,
                    end: None,
                });
                let length = self.rng.millis(5000, 15000);
                self.ends.push((now + length, End::Calm));
                self.count(kind);
            }
        }
    }

    fn count(&mut self, kind: &'static str) {
        *self.counts.entry(kind).or_default() += 1;
    }

    fn end_due(&mut self, now: Duration) {
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ends)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.ends = later;
        let now = self.shared.now();
        for (_, end) in due {
            match end {
                End::Restart(i) => {
                    self.agents[i].restart();
                    // A new process starts without a partition.
                    self.applied_blocks[i] = Some(Vec::new());
                    let mut state = self.shared.state();
                    state.down[i] = false;
                    state.end_impairment(i, "kill", now);
                }
                End::Resume(i) => {
                    self.agents[i].signal(libc::SIGCONT);
                    let mut state = self.shared.state();
                    state.paused[i] = false;
                    state.end_impairment(i, "pause", now);
                }
                End::Heal => {
                    for blocks in &mut self.desired_blocks {
                        blocks.clear();
                    }
                    self.minority.clear();
                    let mut state = self.shared.state();
                    for i in 0..AGENTS {
                        state.end_impairment(i, "partition", now);
                    }
                    for partition in &mut state.partitions {
                        partition.end.get_or_insert(now);
                    }
                }
                End::Lossless(i) => {
                    self.relays[i].set_loss(0.0);
                    self.lossy.retain(|&j| j != i);
                }
                End::Calm => {
                    if let Some(load) = self.hostile.take() {
                        load.halt();
                        self.halted.push(load);
                        for load in &mut self.shared.state().loads {
                            load.end.get_or_insert(now);
                        }
                    }
                }
            }
        }
    }

    /// Ends every fault, writes `timing`'s config to `config`, and
    /// restarts the agents on it one at a time: each is killed, started
    /// again, and seen alive by a majority of the agents (up to 15 s; a
    /// partition healed just before may take the old timings' re-announce
    /// to mend everywhere) before the next. The workers go on meanwhile;
    /// each restart counts as a kill (kind `restart`, with the longer of
    /// both timings' graces).
    pub fn switch_timing(&mut self, config: &Path, timing: Timing) {
        self.end_due(Duration::MAX);
        std::fs::write(config, timing.config).expect("write the next phase's agent config");
        let grace = self.timing.grace.max(timing.grace);
        self.timing = timing;
        for i in 0..AGENTS {
            self.reconcile_blocks();
            let now = self.shared.now();
            self.agents[i].restart();
            self.applied_blocks[i] = Some(Vec::new());
            {
                let mut state = self.shared.state();
                state.kills.push((i, now));
                let mut restart = Impairment::new(i, "restart", now, grace);
                restart.end = Some(now);
                state.impairments.push(restart);
            }
            self.count("restart");
            let name = format!("node-{i}");
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                self.check_processes();
                let seen_alive = self
                    .agents
                    .iter()
                    .filter(|agent| {
                        monitor::members(agent.http_addr())
                            .is_some_and(|view| monitor::status_of(&view, &name) == Some("alive"))
                    })
                    .count();
                if seen_alive > AGENTS / 2 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Tells every reachable agent its blocks where they differ from the
    /// plan (a restarted agent forgot them; a frozen one is told later).
    fn reconcile_blocks(&mut self) {
        for i in 0..AGENTS {
            let desired = &self.desired_blocks[i];
            if self.applied_blocks[i].as_ref() == Some(desired) {
                continue;
            }
            {
                let state = self.shared.state();
                if state.down[i] || state.paused[i] {
                    continue;
                }
            }
            let list: Vec<String> = desired.iter().map(IpAddr::to_string).collect();
            let path = format!("/v1/shoal/fault?block={}", list.join(","));
            let addr = self.agents[i].http_addr();
            if let Ok((200, _)) = call("PUT", addr, &path, None, Duration::from_secs(2)) {
                self.applied_blocks[i] = Some(desired.clone());
            }
        }
    }

    /// Invariant (d): an agent we did not kill must still run. A crashed
    /// one is recorded and started again so the campaign goes on.
    fn check_processes(&mut self) {
        for i in 0..AGENTS {
            if self.shared.state().down[i] || self.agents[i].is_running() {
                continue;
            }
            let code = self.agents[i].wait_exit(Duration::ZERO);
            let log = self.agents[i].log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let now = self.shared.now();
            self.crashes.push(format!(
                "node-{i} exited on its own at +{:.3}s (exit code {code:?}); last log lines:\n{}",
                now.as_secs_f64(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
            self.agents[i].restart();
            self.applied_blocks[i] = Some(Vec::new());
            let mut state = self.shared.state();
            state.kills.push((i, now));
            state.impairments.push(Impairment {
                agent: i,
                kind: "crash",
                start: now,
                end: Some(now),
                grace: self.timing.grace,
            });
        }
    }
}
