//! A seeded, randomized fault campaign against five real agents.
//!
//! Agents run behind lossy relays (`crate::relay`) with the fault hook on
//! (`--fault-injection`). For a set time, workers send KV writes, deletes
//! and CAS on a few shared keys, flag changes and service registrations
//! to random agents while the scheduler kills and restarts agents,
//! freezes them (SIGSTOP), partitions them and makes their links lossy.
//! Every datagram to an agent crosses its relay, so a lossy link drops
//! 5-15% of the UDP gossip an agent receives for 5-20 s (TCP anti-entropy
//! passes untouched). A partition cuts a minority of one or two agents off
//! from the rest for 5-20 s: both sides block each other's relay and own
//! addresses through the fault hook, re-applied after a restart. Kills
//! (SIGKILL, restart on the same data dir after 1-12 s) and pauses
//! (SIGSTOP for 2-8 s) hit one agent each; at most two agents are killed,
//! paused or in a minority at once.
//!
//! Then everything is healed and four invariants are checked:
//!
//! - (a) every agent converges to the same members, KV map and catalog
//!   within [`CONVERGE_BOUND`];
//! - (b) the final value of every key and every registration is one the
//!   acknowledged history allows ([`verdict`]);
//! - (c) no healthy agent was ever reported failed by a majority of the
//!   agents that could reach it ([`monitor`]);
//! - (d) no agent exited unless we killed it, and none logged a panic.
//!
//! Modules: [`rng`] the seeded generator, [`client`] HTTP with timeouts,
//! [`history`] the record of operations, [`workload`] the clients,
//! [`faults`] the scheduler, [`monitor`] membership polling, [`converge`]
//! the final checks, [`verdict`] the rule for (b).

pub mod client;
pub mod converge;
pub mod faults;
pub mod history;
pub mod monitor;
pub mod rng;
pub mod verdict;
pub mod workload;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::relay::Relay;
use crate::{Agent, AgentOptions, GOSSIP_PORT, unique_loopback};

/// Agents in the campaign's cluster.
pub const AGENTS: usize = 5;
/// How long an agent still counts as faulted after its fault ended.
pub const GRACE: Duration = Duration::from_secs(15);
/// The shortest grace window: cut short once every agent sees the faulted
/// one alive again, but not before this ([`monitor`]).
pub const SETTLE: Duration = Duration::from_secs(5);
/// How long after the heal every agent must agree.
pub const CONVERGE_BOUND: Duration = Duration::from_secs(60);
/// Client threads sending operations.
const WORKERS: usize = 3;

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
}

impl CampaignConfig {
    /// `SHOAL_CAMPAIGN_SEED` (else a fresh seed) and
    /// `SHOAL_CAMPAIGN_SECONDS` (else `default_seconds`).
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
        }
    }
}

/// A fault on one agent, for invariant (c): the agent doesn't count as
/// healthy from `start` to `end` plus [`GRACE`].
#[derive(Clone, Debug)]
pub struct Impairment {
    pub agent: usize,
    pub kind: &'static str,
    pub start: Duration,
    /// `None` while it lasts.
    pub end: Option<Duration>,
}

impl Impairment {
    pub fn new(agent: usize, kind: &'static str, start: Duration) -> Impairment {
        Impairment {
            agent,
            kind,
            start,
            end: None,
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
}

impl Partition {
    /// Whether `a` and `b` were on different sides at any time in
    /// `[from - grace, to]`.
    pub fn separated(
        &self,
        a: usize,
        b: usize,
        from: Duration,
        to: Duration,
        grace: Duration,
    ) -> bool {
        self.minority.contains(&a) != self.minority.contains(&b)
            && self.start <= to
            && self.end.is_none_or(|end| end + grace >= from)
    }
}

/// What the scheduler tells the other threads.
#[derive(Debug, Default)]
pub struct FaultState {
    pub down: [bool; AGENTS],
    pub paused: [bool; AGENTS],
    /// Kills, pauses and minority sides of partitions, per agent.
    pub impairments: Vec<Impairment>,
    pub partitions: Vec<Partition>,
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

/// What a campaign did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub fault_time: Duration,
    pub ops_by_kind: BTreeMap<&'static str, u64>,
    pub outcomes: BTreeMap<history::Outcome, u64>,
    pub faults: BTreeMap<&'static str, u64>,
    pub checks: BTreeMap<&'static str, u64>,
    pub converged_after: Option<Duration>,
    pub datagrams_dropped: u64,
    pub lone_false_reports: u64,
    pub faulted_seen_failed: u64,
    pub violations: Vec<String>,
    /// Where the history and logs were left, if there were violations.
    pub artifacts: Option<PathBuf>,
}

impl Report {
    fn total(map: &BTreeMap<impl Ord, u64>) -> u64 {
        map.values().sum()
    }

    /// The human summary, then one machine-readable line for
    /// `scripts/campaign`.
    pub fn summary(&self) -> String {
        let list = |map: &BTreeMap<&'static str, u64>| {
            map.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let outcome = |o| self.outcomes.get(&o).copied().unwrap_or(0);
        let faults: u64 = self
            .faults
            .iter()
            .filter(|(kind, _)| !kind.starts_with("skipped"))
            .map(|(_, n)| n)
            .sum();
        format!(
            "campaign seed {seed}, {secs} s of faults\n\
             \x20 operations: {ops} ({kinds})\n\
             \x20 answers: {applied} acknowledged, {not} not applied, {unknown} unknown\n\
             \x20 faults: {faults} ({fault_kinds}); {dropped} datagrams dropped by lossy links\n\
             \x20 converged {converged} after the heal\n\
             \x20 invariant checks: {checks} ({check_kinds})\n\
             \x20 membership: faulted agents seen failed by a majority in {seen} polls; \
             lone false failure reports {lone}\n\
             \x20 violations: {violations}\n\
             CAMPAIGN-SUMMARY seed={seed} seconds={secs} ops={ops} acked={applied} faults={faults} checks={checks} violations={violations}",
            seed = self.seed,
            secs = self.fault_time.as_secs(),
            ops = Self::total(&self.ops_by_kind),
            kinds = list(&self.ops_by_kind),
            applied = outcome(history::Outcome::Applied),
            not = outcome(history::Outcome::NotApplied),
            unknown = outcome(history::Outcome::Unknown),
            fault_kinds = list(&self.faults),
            dropped = self.datagrams_dropped,
            converged = self
                .converged_after
                .map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
            checks = Self::total(&self.checks),
            check_kinds = list(&self.checks),
            lone = self.lone_false_reports,
            seen = self.faulted_seen_failed,
            violations = self.violations.len(),
        )
    }
}

/// Agent settings for the campaign: quick re-announces and anti-entropy,
/// so healed partitions are found within seconds (as in kv.rs), and a
/// tombstone grace of 30 s instead of 72 h, so tombstones are collected
/// during the campaign and the remembered-delete rules (an old entry for
/// a key whose delete a peer remembers is refused, and the delete handed
/// back) run all the time. The grace must exceed `max_clock_drift`, hence 5 s of drift
/// (loopback agents share one clock). No single fault isolates an agent
/// for 30 s, back-to-back ones can.
const AGENT_CONFIG: &str = "max_clock_drift = \"5s\"\n\
                            [gossip]\nreannounce_interval = \"1s\"\npush_pull_interval = \"2s\"\n\
                            [kv]\ntombstone_grace = \"30s\"\n";

/// Starts five agents, each behind its own relay, all joining through
/// every other agent's relay.
fn start_cluster(root: &std::path::Path, seed: u64) -> (Vec<Agent>, Vec<Relay>) {
    let config = root.join("agent.toml");
    std::fs::write(&config, AGENT_CONFIG).expect("write agent config");
    let relay_addrs: Vec<SocketAddr> = (0..AGENTS)
        .map(|_| SocketAddr::new(unique_loopback(), GOSSIP_PORT))
        .collect();
    let mut agents = Vec::new();
    let mut relays = Vec::new();
    for (i, relay_addr) in relay_addrs.iter().enumerate() {
        let agent = Agent::start(
            root,
            AgentOptions {
                name: format!("node-{i}"),
                join: relay_addrs
                    .iter()
                    .filter(|addr| *addr != relay_addr)
                    .copied()
                    .collect(),
                args: vec![
                    "--fault-injection".into(),
                    "--config".into(),
                    config.display().to_string(),
                    "--advertise".into(),
                    relay_addr.to_string(),
                ],
                ..AgentOptions::default()
            },
        );
        relays.push(Relay::start(
            *relay_addr,
            agent.gossip_addr(),
            0.0,
            seed ^ i as u64,
        ));
        agents.push(agent);
    }
    (agents, relays)
}

fn wait_all_alive(addrs: &[SocketAddr], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let views: Result<Vec<_>, _> = addrs.iter().map(|a| converge::read_view(*a)).collect();
        let last = match views {
            Ok(views) => {
                let bad: Vec<String> = views
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| {
                        v.members.len() != AGENTS || v.members.values().any(|&s| s != 1)
                    })
                    .map(|(i, v)| format!("node-{i}: {:?}", v.members))
                    .collect();
                if bad.is_empty() {
                    return Ok(());
                }
                bad.join("; ")
            }
            Err(error) => error,
        };
        if Instant::now() > deadline {
            return Err(format!(
                "the cluster did not form within {timeout:?}: {last}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs one campaign.
pub fn run(config: &CampaignConfig) -> Report {
    let mut report = Report {
        seed: config.seed,
        fault_time: config.fault_time,
        ..Report::default()
    };
    let root = tempfile::tempdir().expect("tempdir");
    let (mut agents, relays) = start_cluster(root.path(), config.seed);
    let addrs: Vec<SocketAddr> = agents.iter().map(Agent::http_addr).collect();
    if let Err(error) = wait_all_alive(&addrs, Duration::from_secs(60)) {
        report.violations.push(format!("setup: {error}"));
        return report;
    }

    let start = Instant::now();
    let shared = Arc::new(Shared {
        start,
        stop_workers: AtomicBool::new(false),
        stop_monitor: AtomicBool::new(false),
        state: Mutex::new(FaultState::default()),
    });
    let history = Arc::new(history::History::new(start));
    let monitor = monitor::spawn_monitor(addrs.clone(), shared.clone());
    let workers = workload::spawn_workers(
        WORKERS,
        config.seed,
        addrs.clone(),
        history.clone(),
        shared.clone(),
    );

    let mut scheduler = faults::FaultScheduler::new(&mut agents, &relays, &shared, config.seed);
    scheduler.run(config.fault_time);
    shared.stop_workers.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("worker thread");
    }
    let healed = scheduler.heal_all(Duration::from_secs(30));
    let heal_at = shared.now();
    let (converged, views) = converge::converge(&addrs, CONVERGE_BOUND);
    // A few more membership polls after convergence.
    std::thread::sleep(Duration::from_secs(2));
    shared.stop_monitor.store(true, Ordering::Relaxed);
    let rounds = monitor.join().expect("monitor thread");
    report.faults = scheduler.counts.clone();
    let crashes = std::mem::take(&mut scheduler.crashes);
    drop(scheduler);

    // (a)
    report.checks.insert("a: convergence", 1);
    if let Err(error) = healed {
        report.violations.push(format!("(a) {error}"));
    }
    match converged {
        Ok(after) => report.converged_after = Some(after),
        Err(error) => report.violations.push(error),
    }
    // (b): on one view if they agree, else on each.
    let ops = history.ops();
    let kills = shared.state().kills.clone();
    let killed_after = |op: &history::Op| {
        kills
            .iter()
            .filter(|(agent, at)| *agent == op.agent && *at >= op.issued)
            .map(|(_, at)| *at)
            .min()
    };
    let describe = |op: &history::Op| history.describe(op);
    let distinct: Vec<(usize, &converge::FinalView)> = views
        .iter()
        .enumerate()
        .filter(|(i, view)| !views[..*i].contains(view))
        .collect();
    for (i, view) in distinct {
        let (checked, violations) =
            converge::check_history(view, &format!("node-{i}"), &ops, &killed_after, &describe);
        *report.checks.entry("b: final states").or_default() += checked;
        report.violations.extend(violations);
    }
    // (c)
    let impairments = shared.state().impairments.clone();
    let partitions = shared.state().partitions.clone();
    let membership = monitor::check_rounds(&rounds, &impairments, &partitions, GRACE, SETTLE);
    report
        .checks
        .insert("c: healthy agent x poll", membership.checked);
    report.lone_false_reports = membership.lone_false_reports;
    report.faulted_seen_failed = membership.faulted_seen_failed;
    report.violations.extend(membership.violations);
    // (d)
    report
        .violations
        .extend(crashes.into_iter().map(|c| format!("(d) {c}")));
    for agent in &mut agents {
        *report.checks.entry("d: processes").or_default() += 1;
        if !agent.is_running() {
            report
                .violations
                .push(format!("(d) {} is not running at the end", agent.name));
        }
        if let Some(line) = agent.log().lines().find(|line| line.contains("panicked")) {
            report
                .violations
                .push(format!("(d) {} panicked: {line}", agent.name));
        }
    }
    let (by_kind, outcomes) = history.counts();
    report.ops_by_kind = by_kind;
    report.outcomes = outcomes;
    report.datagrams_dropped = relays
        .iter()
        .map(|r| r.stats.dropped.load(Ordering::Relaxed))
        .sum();
    if !report.violations.is_empty() || config.keep_artifacts {
        report.artifacts = save_artifacts(config, &agents, &history, &ops, &impairments, heal_at);
    }
    report
}

/// Leaves the history, the faults and the agents' logs where a failing
/// seed can be studied.
fn save_artifacts(
    config: &CampaignConfig,
    agents: &[Agent],
    history: &history::History,
    ops: &[history::Op],
    impairments: &[Impairment],
    heal_at: Duration,
) -> Option<PathBuf> {
    let dir = config
        .artifacts
        .as_ref()?
        .join(format!("campaign-{}", config.seed));
    std::fs::create_dir_all(&dir).ok()?;
    let mut text = format!(
        "seed {} started {} (offsets below are from then); healed at +{:.3}s\n",
        config.seed,
        history::wall_clock(history.start_wall),
        heal_at.as_secs_f64()
    );
    for fault in impairments {
        text.push_str(&format!(
            "fault {} on node-{} from +{:.3}s to {}\n",
            fault.kind,
            fault.agent,
            fault.start.as_secs_f64(),
            fault
                .end
                .map_or("the heal".into(), |e| format!("+{:.3}s", e.as_secs_f64()))
        ));
    }
    for op in ops {
        text.push_str(&history.describe(op));
        text.push('\n');
    }
    std::fs::write(dir.join("history.txt"), text).ok()?;
    for agent in agents {
        std::fs::write(dir.join(format!("{}.log", agent.name)), agent.log()).ok()?;
    }
    Some(dir)
}
