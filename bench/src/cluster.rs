//! The head-to-head run: for one system and one size N, start N agents on
//! loopback and measure join convergence, idle footprint, propagation of a
//! node-level change and failure detection, all observed from every
//! agent's own API.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::task::JoinSet;

use crate::process;
use crate::report::Report;
use crate::stats::{self, ms};
use crate::system::{Agent, System};
use crate::{footprint, propagation, traffic};

/// Knobs of one run; see `shoal-bench cluster --help`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Propagation rounds per observation mode.
    pub rounds: usize,
    /// Agents SIGKILLed one after the other for failure detection.
    pub kills: usize,
    /// Length of the idle window (CPU, gossip bytes).
    pub idle: Duration,
    /// Poll interval while waiting for a change to propagate.
    pub change_poll: Duration,
    /// Poll interval of the membership view (join, failure detection).
    pub view_poll: Duration,
    /// Pause after convergence and between rounds, for gossip to go quiet.
    pub settle: Duration,
    /// Pause between the join and the idle window: the join's own gossip
    /// (every member and record, retransmitted) takes a few seconds to die
    /// down at 50 agents and more, and is not idle traffic.
    pub warmup: Duration,
    /// Whether loopback counters measure only this benchmark (private netns).
    pub private_netns: bool,
    pub work: PathBuf,
}

/// False positives in the idle window, where nothing fails: how many
/// agents learned that the cluster had declared them dead (Shoal logs it
/// when it rejoins under a new identity, memberlist when it refutes a dead
/// message; both at WARN, the level the cluster runs log at), from the
/// agents' logs past `offsets`.
fn declared_dead(system: &System, agents: &[Agent], work: &Path, offsets: &[u64]) -> usize {
    let notice = match system {
        System::Shoal { .. } => crate::faults::SHOAL_DECLARED_DOWN,
        System::Serf { .. } => crate::faults::SERF_REFUTED_DEAD,
    };
    agents
        .iter()
        .zip(offsets)
        .filter(|(agent, offset)| {
            crate::system::read_log_from(work, &agent.name, **offset).contains(notice)
        })
        .count()
}

/// memberlist's push-pull interval (Serf's LAN default, 30 s) scaled for
/// `size` members as memberlist's `pushPullScale` does: x1 up to 32
/// members, then one more x per doubling (x2 from 33, x3 from 65, x4
/// from 129...).
pub fn memberlist_push_pull(size: usize) -> Duration {
    const BASE: Duration = Duration::from_secs(30);
    const THRESHOLD: usize = 32;
    if size <= THRESHOLD {
        return BASE;
    }
    let extra = ((size as f64).log2() - (THRESHOLD as f64).log2()).ceil() as u32;
    BASE * (extra + 1)
}

/// The idle window and the pause before it, for both systems alike: the
/// window starts after Serf's first push-pull (else Serf's TCP bytes read
/// 0) and lasts at least three of its push-pull intervals, at the scale
/// for `size`; `--idle` and `--warmup` are minimums.
pub fn idle_schedule(options: &Options, size: usize) -> (Duration, Duration) {
    let push_pull = memberlist_push_pull(size);
    let warmup = options
        .warmup
        .max(options.settle)
        .max(push_pull + Duration::from_secs(5));
    (warmup, options.idle.max(push_pull * 3))
}

/// Cluster sizes above which newcomers join through [`SEEDS`] agents
/// instead of one (see [`start`]).
const SEEDS_FROM: usize = 500;

/// Whether the harness runs `size` agents the large-cluster way: several
/// seeds and waves of newcomers, compact views (`/health`, `serfHealth`)
/// instead of full membership lists, no view read of every agent before
/// each kill.
fn large_cluster(size: usize) -> bool {
    size > SEEDS_FROM
}
const SEEDS: usize = 10;
/// Newcomers started at once in a large start (see [`start`]).
const WAVE: usize = 100;

/// How long agents have to list every member alive, counted from the
/// moment the last one was started (spawning 1,000 agents on two cores
/// takes minutes by itself): 120 s, and 0.6 s per agent above 200.
fn join_deadline(size: usize) -> Duration {
    Duration::from_secs(120).max(Duration::from_millis(600) * size as u32)
}
pub const CHANGE_DEADLINE: Duration = Duration::from_secs(30);
const DETECT_DEADLINE: Duration = Duration::from_secs(60);

/// Runs every phase for `system` with `size` agents, appending to `report`.
pub async fn run(
    system: &System,
    size: usize,
    options: &Options,
    report: &mut Report,
) -> Result<()> {
    anyhow::ensure!(size >= 3, "a cluster needs at least 3 agents");
    let name = system.name();
    let work = options.work.join(format!("{name}-{size}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    report.summary(
        name,
        size,
        "load_average_at_start",
        process::load_average(),
        "",
    );
    eprintln!(
        "[{name} n={size}] starting agents (load {:.2})",
        process::load_average()
    );

    let mut agents = start(system, size, &work, options, report).await?;
    let (warmup, idle) = idle_schedule(options, size);
    tokio::time::sleep(warmup).await;
    check_running(&mut agents)?;

    eprintln!("[{name} n={size}] idle window {idle:?} after {warmup:?}");
    let capture = options
        .private_netns
        .then(traffic::Capture::start)
        .transpose()?;
    let log_offsets: Vec<u64> = agents
        .iter()
        .map(|agent| crate::system::log_len(&work, &agent.name))
        .collect();
    footprint::idle_window(system, &mut agents, options, idle, report).await?;
    let declared = declared_dead(system, &agents, &work, &log_offsets);
    if declared > 0 {
        eprintln!(
            "[{name} n={size}] {declared} healthy agents were declared dead in the idle window"
        );
    }
    report.summary(name, size, "idle_declared_dead", declared as f64, "agents");
    if let Some(capture) = capture {
        let (counts, elapsed) = capture.stop();
        let addresses: Vec<(String, std::net::Ipv4Addr)> = agents
            .iter()
            .filter_map(|agent| match agent.gossip.ip() {
                std::net::IpAddr::V4(ip) => Some((agent.name.clone(), ip)),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        report_traffic(
            name,
            size,
            &traffic::per_agent(&counts, &addresses, elapsed),
            report,
        );
    }

    let modes: &[propagation::Mode] = match system {
        System::Shoal { .. } => &[propagation::Mode::Block, propagation::Mode::Poll],
        System::Serf { .. } => &[propagation::Mode::Poll],
    };
    let mut round = 0;
    for &mode in modes {
        let mut latencies = Vec::new();
        for _ in 0..options.rounds {
            eprintln!(
                "[{name} n={size}] propagation round {round} ({})",
                mode.name()
            );
            // A round that fails to start counts its observers as missed
            // instead of discarding the cell's other figures.
            let seen = propagation::propagate(system, &agents, round, mode, options)
                .await
                .unwrap_or_else(|error| {
                    eprintln!("[{name} n={size}] propagation round {round} failed: {error:#}");
                    Vec::new()
                });
            for (agent, latency) in &seen {
                report.sample(name, size, mode.phase(), round, agent, *latency);
            }
            latencies.extend(seen.iter().map(|(_, latency)| *latency));
            round += 1;
            tokio::time::sleep(options.settle).await;
        }
        let phase = mode.phase();
        report.summary(
            name,
            size,
            &format!("{phase}_p50_ms"),
            stats::median(&latencies),
            "ms",
        );
        report.summary(
            name,
            size,
            &format!("{phase}_p99_ms"),
            stats::percentile(&latencies, 99.0),
            "ms",
        );
        report.summary(
            name,
            size,
            &format!("{phase}_max_ms"),
            stats::max(&latencies),
            "ms",
        );
        let missing = (size - 1) * options.rounds - latencies.len();
        report.summary(
            name,
            size,
            &format!("{phase}_missed"),
            missing as f64,
            "agents",
        );
    }
    check_running(&mut agents)?;

    let mut detections = Vec::new();
    let mut firsts = Vec::new();
    let mut missed = 0;
    for kill in 0..options.kills {
        // Never the seed; each victim is restarted once detected, so any
        // number of kills leaves the cluster at N.
        let victim = size - 1 - kill % (size - 1);
        eprintln!("[{name} n={size}] SIGKILL {}", agents[victim].name);
        let seen = detect_failure(system, &mut agents, victim, options).await?;
        for (agent, latency) in &seen {
            report.sample(name, size, "detect", kill, agent, *latency);
        }
        let latencies: Vec<f64> = seen.iter().map(|(_, latency)| *latency).collect();
        firsts.push(stats::min(&latencies));
        missed += (size - 1) - latencies.len();
        detections.extend(latencies);
        if kill + 1 < options.kills {
            let seed = agents[0].gossip;
            agents[victim] = system.spawn(victim, Some(seed), &work)?;
            wait_all_alive(system, &agents, size, options, Instant::now())
                .await
                .with_context(|| format!("{} did not rejoin", agents[victim].name))?;
        }
        tokio::time::sleep(options.settle).await;
    }
    report.summary(name, size, "detect_first_ms", stats::median(&firsts), "ms");
    report.summary(
        name,
        size,
        "detect_p50_ms",
        stats::median(&detections),
        "ms",
    );
    report.summary(name, size, "detect_max_ms", stats::max(&detections), "ms");
    report.summary(name, size, "detect_missed", missed as f64, "agents");
    report.summary(
        name,
        size,
        "load_average_at_end",
        process::load_average(),
        "",
    );
    eprintln!("[{name} n={size}] done, stopping agents");
    drop(agents);
    Ok(())
}

/// Per-agent traffic of the idle window: median, busiest and their ratio
/// (the hotspot figure), UDP and TCP together and apart.
fn report_traffic(name: &str, size: usize, rates: &traffic::PerAgent, report: &mut Report) {
    for row in &rates.rows {
        report.traffic(name, size, row);
    }
    let column = |pick: fn(&(String, f64, f64, f64, f64)) -> f64| -> Vec<f64> {
        rates.rows.iter().map(pick).collect()
    };
    for (metric, values, unit) in [
        ("agent_bytes", column(|r| r.1 + r.3), "B/s"),
        ("agent_packets", column(|r| r.2 + r.4), "pkt/s"),
        ("agent_udp_bytes", column(|r| r.1), "B/s"),
        ("agent_udp_packets", column(|r| r.2), "pkt/s"),
        ("agent_tcp_bytes", column(|r| r.3), "B/s"),
        ("agent_tcp_packets", column(|r| r.4), "pkt/s"),
    ] {
        let (median, max) = (stats::median(&values), stats::max(&values));
        report.summary(name, size, &format!("{metric}_median"), median, unit);
        report.summary(name, size, &format!("{metric}_max"), max, unit);
        if median > 0.0 {
            report.summary(name, size, &format!("{metric}_ratio"), max / median, "x");
        }
    }
    report.summary(
        name,
        size,
        "tcp_unattributed_bytes_s",
        rates.tcp_unattributed.0,
        "B/s",
    );
}

fn check_running(agents: &mut [Agent]) -> Result<()> {
    for agent in agents.iter_mut() {
        if agent.process.exited() {
            bail!(
                "{} exited early; see its log in the work directory",
                agent.name
            );
        }
    }
    Ok(())
}

/// Starts the seed, waits until its API answers, then starts the others at
/// once (through several seeds above [`SEEDS_FROM`] agents) and waits
/// until every agent lists `size` alive members.
async fn start(
    system: &System,
    size: usize,
    work: &std::path::Path,
    options: &Options,
    report: &mut Report,
) -> Result<Vec<Agent>> {
    let name = system.name();
    let seed = system.spawn(0, None, work)?;
    let mut client = system.client(&seed);
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.members().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the seed's API never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seed_gossip = seed.gossip;
    let mut agents = vec![seed];
    let started = Instant::now();
    // Above SEEDS_FROM agents, the first SEEDS join through the seed and
    // the others through them in turn, as an operator lists several
    // `join` addresses: one seed serving every newcomer's first exchange
    // (8 at a time) while sharing two cores with 999 others never let a
    // 1,000-agent start converge.
    let seeds = if large_cluster(size) {
        SEEDS.min(size - 1)
    } else {
        0
    };
    for index in 1..=seeds {
        agents.push(system.spawn(index, Some(seed_gossip), work)?);
    }
    if seeds > 0 {
        wait_all_alive(system, &agents, seeds + 1, options, Instant::now())
            .await
            .context("the extra seeds did not join")?;
    }
    for index in seeds + 1..size {
        let through = if seeds > 0 {
            agents[1 + index % seeds].gossip
        } else {
            seed_gossip
        };
        agents.push(system.spawn(index, Some(through), work)?);
        // And in waves of WAVE: two cores running 1,000 agents that all
        // join at once starve them into declaring each other failed.
        if seeds > 0 && (index - seeds) % WAVE == 0 && index + 1 < size {
            wait_seed_lists(system, &agents[0], agents.len(), options).await?;
        }
    }
    report.summary(name, size, "spawn_ms", ms(started.elapsed()), "ms");

    let converged = wait_all_alive(system, &agents, size, options, started).await?;
    for (agent, latency) in &converged {
        report.sample(name, size, "join", 0, agent, *latency);
    }
    let converged: Vec<f64> = converged.iter().map(|(_, latency)| *latency).collect();
    report.summary(name, size, "join_p50_ms", stats::median(&converged), "ms");
    report.summary(name, size, "join_all_ms", stats::max(&converged), "ms");
    Ok(agents)
}

/// Waits until `seed` lists `alive` members alive (a wave of a large
/// start has joined).
async fn wait_seed_lists(
    system: &System,
    seed: &Agent,
    alive: usize,
    options: &Options,
) -> Result<()> {
    let deadline = Instant::now() + join_deadline(alive);
    let mut client = system.client(seed);
    loop {
        if let Ok(n) = client.alive_count(true).await
            && n >= alive
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not list {alive} members alive within {:?}",
            seed.name,
            join_deadline(alive)
        );
        tokio::time::sleep(options.view_poll).await;
    }
}

/// Waits until every agent lists `size` alive members; returns when each
/// did (ms since `started`).
async fn wait_all_alive(
    system: &System,
    agents: &[Agent],
    size: usize,
    options: &Options,
    started: Instant,
) -> Result<Vec<(String, f64)>> {
    let allowed = join_deadline(size);
    let deadline = Instant::now() + allowed;
    let compact = large_cluster(agents.len());
    let mut watchers = JoinSet::new();
    for (index, agent) in agents.iter().enumerate() {
        let mut client = system.client(agent);
        let agent_name = agent.name.clone();
        let interval = options.view_poll;
        watchers.spawn_local(async move {
            let mut next = Instant::now() + stagger(interval, index, size);
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                if let Ok(alive) = client.alive_count(compact).await
                    && alive == size
                {
                    return (agent_name, Some(Instant::now()));
                }
                next += interval;
            }
            (agent_name, None)
        });
    }
    let mut converged = Vec::new();
    while let Some(result) = watchers.join_next().await {
        let (agent, seen) = result?;
        match seen {
            Some(at) => converged.push((agent, ms(at - started))),
            None => bail!("{agent} did not see {size} alive members within {allowed:?}"),
        }
    }
    Ok(converged)
}

/// Agent `index`'s offset inside one poll interval, so that the pollers of
/// `size` agents spread over the interval instead of firing in lock-step.
pub fn stagger(interval: Duration, index: usize, size: usize) -> Duration {
    interval.mul_f64(index as f64 / size as f64)
}

/// SIGKILLs `agents[victim]` and returns how long each remaining agent
/// took to list it as failed (ms).
async fn detect_failure(
    system: &System,
    agents: &mut [Agent],
    victim: usize,
    options: &Options,
) -> Result<Vec<(String, f64)>> {
    let size = agents.len();
    let victim_name = Rc::new(agents[victim].name.clone());
    let compact = large_cluster(size);
    let mut watchers = JoinSet::new();
    let mut clients = Vec::new();
    for (index, agent) in agents
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != victim)
    {
        let mut client = system.client(agent);
        // Opens the connection before the kill. Above SEEDS_FROM agents
        // this is skipped: the join or rejoin just polled every agent, and
        // 1,000 answers in a row take minutes on a saturated machine.
        if !compact {
            client
                .members()
                .await
                .with_context(|| format!("{} does not answer", agent.name))?;
        }
        clients.push((index, agent.name.clone(), client));
    }
    agents[victim].process.kill();
    let started = Instant::now();
    let deadline = started + DETECT_DEADLINE;
    for (index, agent_name, mut client) in clients {
        let victim_name = Rc::clone(&victim_name);
        let interval = options.view_poll;
        watchers.spawn_local(async move {
            let mut next = started + stagger(interval, index, size);
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                if let Ok(true) = client.lists_failed(&victim_name, compact).await {
                    return (agent_name, Some(Instant::now()));
                }
                next += interval;
            }
            (agent_name, None)
        });
    }
    let mut seen = Vec::new();
    while let Some(result) = watchers.join_next().await {
        let (agent, at) = result?;
        match at {
            Some(at) => seen.push((agent, ms(at - started))),
            None => eprintln!(
                "  {agent} never listed {victim_name} as failed within {DETECT_DEADLINE:?}"
            ),
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_window_covers_three_of_serfs_scaled_push_pulls() {
        let s = Duration::from_secs;
        assert_eq!(memberlist_push_pull(10), s(30));
        assert_eq!(memberlist_push_pull(32), s(30));
        assert_eq!(memberlist_push_pull(50), s(60));
        assert_eq!(memberlist_push_pull(100), s(90));
        assert_eq!(memberlist_push_pull(250), s(120));
        assert_eq!(memberlist_push_pull(1_000), s(180));
        let options = Options {
            rounds: 1,
            kills: 1,
            idle: s(30),
            change_poll: s(1),
            view_poll: s(1),
            settle: s(3),
            warmup: s(15),
            private_netns: false,
            work: PathBuf::new(),
        };
        assert_eq!(idle_schedule(&options, 10), (s(35), s(90)));
        assert_eq!(join_deadline(10), s(120));
        assert_eq!(join_deadline(1_000), s(600));
        assert_eq!(idle_schedule(&options, 100), (s(95), s(270)));
    }
}
