//! A seeded, randomized fault campaign against five real agents.
//!
//! Agents run behind lossy relays (`crate::relay`) with the fault hook on
//! (`--fault-injection`). For a set time, workers send KV writes, deletes,
//! CAS and reads on a few shared keys, flag changes and service
//! registrations to random agents while the scheduler kills and restarts
//! agents, freezes them (SIGSTOP), partitions them, makes their links
//! lossy and loads their API with hostile requests ([`faults`]). Every
//! datagram to an agent crosses its relay, so a lossy link drops 5-15% of
//! the UDP gossip an agent receives for 5-20 s (TCP anti-entropy passes
//! untouched). A partition cuts a minority of one or two agents off from
//! the rest for 5-20 s, a long one for longer than the tombstone grace:
//! both sides block each other's relay and own addresses through the fault
//! hook, re-applied after a restart. Kills (SIGKILL, restart on the same
//! data dir after 1-12 s) and pauses (SIGSTOP for 2-8 s) hit one agent
//! each; at most two agents are killed, paused or in a minority at once.
//! Hostile load ([`hostile`]) hits one agent at a time for 5-15 s.
//!
//! The first part of the fault time runs with the agents' default timings,
//! the rest on quick ones ([`timing`]); [`menu`] switches fault kinds off.
//!
//! Then everything is healed and these invariants are checked:
//!
//! - (a) every agent converges to the same members, KV map and catalog
//!   within [`CONVERGE_BOUND`];
//! - (b) the final value of every key and every registration is one the
//!   acknowledged history allows ([`verdict`]);
//! - (c) no healthy agent was ever reported failed, by any agent that could
//!   reach it ([`monitor`]);
//! - (d) no agent exited unless we killed it, and none logged a panic;
//! - (e) every KV write answered `false` is justified by a concurrent newer
//!   write ([`answers`]);
//! - (r) reads during the run: read-your-writes on the acknowledging agent
//!   and monotonic reads per client, agent and key ([`reads`]).
//!
//! Modules: [`rng`] the seeded generator, [`client`] HTTP with timeouts,
//! [`history`] the record of operations, [`workload`] the clients,
//! [`faults`] the scheduler, [`hostile`] the hostile load, [`monitor`]
//! membership polling, [`converge`] the final checks, [`verdict`] the rule
//! for (b), [`report`] the summary.

pub mod answers;
pub mod client;
pub mod converge;
pub mod faults;
pub mod history;
pub mod hostile;
pub mod menu;
pub mod monitor;
pub mod reads;
pub mod report;
pub mod rng;
mod run;
pub mod timing;
pub mod verdict;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use report::Report;
pub use run::run;

use menu::FaultMenu;

/// Agents in the campaign's cluster.
pub const AGENTS: usize = 5;
/// The shortest grace window: cut short once every agent sees the faulted
/// one alive again, but not before this ([`monitor`]).
pub const SETTLE: Duration = Duration::from_secs(5);
/// How long after the heal every agent must agree.
pub const CONVERGE_BOUND: Duration = Duration::from_secs(60);
/// Client threads sending operations.
pub(crate) const WORKERS: usize = 3;

/// What to run.
#[derive(Clone, Debug)]
pub struct CampaignConfig {
    pub seed: u64,
    /// Length of the fault phase.
    pub fault_time: Duration,
    /// Where a failing campaign leaves its history and the agents' logs.
    pub artifacts: Option<PathBuf>,
    /// Leave them even when nothing failed (`SHOAL_CAMPAIGN_KEEP=1`).
    pub keep_artifacts: bool,
    /// The fault kinds and phases switched on ([`menu`]).
    pub menu: FaultMenu,
}

impl CampaignConfig {
    /// `SHOAL_CAMPAIGN_SEED` (else a fresh seed),
    /// `SHOAL_CAMPAIGN_SECONDS` (else `default_seconds`) and the switches
    /// of [`menu`].
    pub fn from_env(default_seconds: u64, artifacts: Option<PathBuf>) -> CampaignConfig {
        let seed = match std::env::var("SHOAL_CAMPAIGN_SEED") {
            Ok(text) => text
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("SHOAL_CAMPAIGN_SEED=`{text}` is not a number")),
            Err(_) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64;
                rng::Rng::new(nanos ^ u64::from(std::process::id())).next_u64() % 1_000_000_000
            }
        };
        let seconds = match std::env::var("SHOAL_CAMPAIGN_SECONDS") {
            Ok(text) => text
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("SHOAL_CAMPAIGN_SECONDS=`{text}` is not a number")),
            Err(_) => default_seconds,
        };
        CampaignConfig {
            seed,
            fault_time: Duration::from_secs(seconds),
            artifacts,
            keep_artifacts: std::env::var_os("SHOAL_CAMPAIGN_KEEP").is_some_and(|v| v != "0"),
            menu: FaultMenu::from_env().unwrap_or_else(|error| panic!("{error}")),
        }
    }
}

/// A fault on one agent, for invariant (c): the agent doesn't count as
/// healthy from `start` to `end` plus `grace`.
#[derive(Clone, Debug)]
pub struct Impairment {
    pub agent: usize,
    pub kind: &'static str,
    pub start: Duration,
    /// `None` while it lasts.
    pub end: Option<Duration>,
    /// [`timing::Timing::grace`] of the timings in force when it began.
    pub grace: Duration,
}

impl Impairment {
    pub fn new(agent: usize, kind: &'static str, start: Duration, grace: Duration) -> Impairment {
        Impairment {
            agent,
            kind,
            start,
            end: None,
            grace,
        }
    }
}

/// A partition: `minority` cut off from every other agent.
#[derive(Clone, Debug)]
pub struct Partition {
    pub minority: Vec<usize>,
    pub start: Duration,
    /// `None` while it lasts.
    pub end: Option<Duration>,
    /// [`timing::Timing::grace`] of the timings in force when it began.
    pub grace: Duration,
}

impl Partition {
    /// Whether `a` and `b` were on different sides at any time in
    /// `[from - grace, to]`.
    pub fn separated(&self, a: usize, b: usize, from: Duration, to: Duration) -> bool {
        self.minority.contains(&a) != self.minority.contains(&b)
            && self.start <= to
            && self.end.is_none_or(|end| end + self.grace >= from)
    }
}

/// Hostile API load on one agent ([`hostile`]): the agent stays healthy.
#[derive(Clone, Debug)]
pub struct Load {
    pub agent: usize,
    pub kind: &'static str,
    pub start: Duration,
    /// `None` while it lasts.
    pub end: Option<Duration>,
}

/// What the scheduler tells the other threads.
#[derive(Debug, Default)]
pub struct FaultState {
    pub down: [bool; AGENTS],
    pub paused: [bool; AGENTS],
    /// Kills, pauses and minority sides of partitions, per agent.
    pub impairments: Vec<Impairment>,
    pub partitions: Vec<Partition>,
    pub loads: Vec<Load>,
    /// `(agent, when)` for every SIGKILL (and crash).
    pub kills: Vec<(usize, Duration)>,
}

impl FaultState {
    pub fn end_impairment(&mut self, agent: usize, kind: &str, now: Duration) {
        for fault in &mut self.impairments {
            if fault.agent == agent && fault.kind == kind && fault.end.is_none() {
                fault.end = Some(now);
            }
        }
    }
}

/// State shared by the scheduler, the workers and the monitor.
pub struct Shared {
    start: Instant,
    pub stop_workers: AtomicBool,
    pub stop_monitor: AtomicBool,
    state: Mutex<FaultState>,
}

impl Shared {
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn state(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().expect("fault state lock")
    }
}
