//! One campaign from start to verdict: start the cluster, run the phases
//! of faults under the workload, heal, and check every invariant.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::timing::{self, Timing};
use super::{
    AGENTS, CONVERGE_BOUND, CampaignConfig, FaultState, Impairment, Load, Partition, Report,
    SETTLE, Shared, WORKERS, answers, converge, faults, history, monitor, reads, workload,
};
use crate::relay::Relay;
use crate::{Agent, AgentOptions, GOSSIP_PORT, unique_loopback};

/// Starts five agents, each behind its own relay, all joining through
/// every other agent's relay.
fn start_cluster(
    root: &std::path::Path,
    seed: u64,
    timing: Timing,
) -> (PathBuf, Vec<Agent>, Vec<Relay>) {
    let config = root.join("agent.toml");
    std::fs::write(&config, timing.config).expect("write agent config");
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
    (config, agents, relays)
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
        menu: config.menu.describe(),
        ..Report::default()
    };
    let default_time = if config.menu.default_timings {
        config.fault_time * timing::DEFAULTS_SHARE / 100
    } else {
        Duration::ZERO
    };
    let first = if default_time.is_zero() {
        timing::QUICK
    } else {
        timing::DEFAULTS
    };
    let root = tempfile::tempdir().expect("tempdir");
    let (config_path, mut agents, relays) = start_cluster(root.path(), config.seed, first);
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

    let mut scheduler = faults::FaultScheduler::new(
        &mut agents,
        &relays,
        &shared,
        config.seed,
        config.menu.clone(),
        first,
    );
    if !default_time.is_zero() {
        scheduler.run(default_time);
        report
            .phases
            .push((timing::DEFAULTS.name, default_time.as_secs()));
        scheduler.switch_timing(&config_path, timing::QUICK);
    }
    let quick_time = config.fault_time - default_time;
    scheduler.run(quick_time);
    report
        .phases
        .push((timing::QUICK.name, quick_time.as_secs()));
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
    report.hostile = scheduler.hostile_tallies.clone();
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
    let (impairments, partitions, loads) = {
        let state = shared.state();
        (
            state.impairments.clone(),
            state.partitions.clone(),
            state.loads.clone(),
        )
    };
    let membership = monitor::check_rounds(&rounds, &impairments, &partitions, &loads, SETTLE);
    report
        .checks
        .insert("c: healthy agent x poll", membership.checked);
    report.false_reports = membership.false_reports;
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
    // (e)
    let answers = answers::check_false_answers(&ops, &killed_after, &describe);
    report.checks.insert(
        "e: answers of false",
        answers.justified + answers.unjustified,
    );
    report.false_justified = answers.justified;
    report.false_unjustified = answers.unjustified;
    report.violations.extend(answers.violations);
    // (r)
    let reads = reads::check_reads(&ops, &killed_after, &describe);
    report
        .checks
        .insert("r: reads", reads.ryw_checked + reads.monotonic_checked);
    report.reads = reads.observations;
    report.reads_ryw = reads.ryw_checked;
    report.reads_monotonic = reads.monotonic_checked;
    report.violations.extend(reads.violations);

    let (by_kind, outcomes) = history.counts();
    report.ops_by_kind = by_kind;
    report.outcomes = outcomes;
    report.datagrams_dropped = relays
        .iter()
        .map(|r| r.stats.dropped.load(Ordering::Relaxed))
        .sum();
    if !report.violations.is_empty() || config.keep_artifacts {
        let faults = Faults {
            impairments: &impairments,
            partitions: &partitions,
            loads: &loads,
        };
        report.artifacts = save_artifacts(config, &agents, &history, &ops, &faults, heal_at);
    }
    report
}

/// Every fault of a campaign, for the record kept with a failing seed.
struct Faults<'a> {
    impairments: &'a [Impairment],
    partitions: &'a [Partition],
    loads: &'a [Load],
}

/// Leaves the history, the faults and the agents' logs where a failing
/// seed can be studied.
fn save_artifacts(
    config: &CampaignConfig,
    agents: &[Agent],
    history: &history::History,
    ops: &[history::Op],
    faults: &Faults,
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
    let until = |end: Option<Duration>| {
        end.map_or("the heal".into(), |e| format!("+{:.3}s", e.as_secs_f64()))
    };
    for fault in faults.impairments {
        text.push_str(&format!(
            "fault {} on node-{} from +{:.3}s to {} (grace {:?})\n",
            fault.kind,
            fault.agent,
            fault.start.as_secs_f64(),
            until(fault.end),
            fault.grace
        ));
    }
    for partition in faults.partitions {
        text.push_str(&format!(
            "partition {:?} | the rest from +{:.3}s to {} ({:.1} s)\n",
            partition.minority,
            partition.start.as_secs_f64(),
            until(partition.end),
            partition
                .end
                .map_or(0.0, |end| (end - partition.start).as_secs_f64())
        ));
    }
    for load in faults.loads {
        text.push_str(&format!(
            "load {} on node-{} from +{:.3}s to {}\n",
            load.kind,
            load.agent,
            load.start.as_secs_f64(),
            until(load.end)
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
