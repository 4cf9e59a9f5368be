//! The head-to-head run: for one system and one size N, start N agents on
//! loopback and measure join convergence, idle footprint, propagation of a
//! node-level change and failure detection, all observed from every
//! agent's own API.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::task::JoinSet;

use crate::netns;
use crate::process::{self, Memory};
use crate::report::Report;
use crate::stats::{self, ms};
use crate::system::{Agent, Client, Status, System};

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
    /// Whether loopback counters measure only this benchmark (private netns).
    pub private_netns: bool,
    pub work: PathBuf,
}

const JOIN_DEADLINE: Duration = Duration::from_secs(120);
const CHANGE_DEADLINE: Duration = Duration::from_secs(30);
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
    tokio::time::sleep(options.settle).await;
    check_running(&mut agents)?;

    eprintln!("[{name} n={size}] idle window {:?}", options.idle);
    idle_window(system, &mut agents, options, report).await?;

    let modes: &[Mode] = match system {
        System::Shoal { .. } => &[Mode::Block, Mode::Poll],
        System::Serf { .. } => &[Mode::Poll],
    };
    let mut round = 0;
    for &mode in modes {
        let mut latencies = Vec::new();
        for _ in 0..options.rounds {
            eprintln!(
                "[{name} n={size}] propagation round {round} ({})",
                mode.name()
            );
            let seen = propagate(system, &agents, round, mode, options).await?;
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
    for kill in 0..options.kills.min(size - 2) {
        let victim = size - 1 - kill;
        eprintln!("[{name} n={size}] SIGKILL {}", agents[victim].name);
        let seen = detect_failure(system, &mut agents, victim, options).await?;
        for (agent, latency) in &seen {
            report.sample(name, size, "detect", kill, agent, *latency);
        }
        let latencies: Vec<f64> = seen.iter().map(|(_, latency)| *latency).collect();
        firsts.push(stats::min(&latencies));
        missed += (size - 1 - kill) - latencies.len();
        detections.extend(latencies);
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
/// once and waits until every agent lists `size` alive members.
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
    for index in 1..size {
        agents.push(system.spawn(index, Some(seed_gossip), work)?);
    }
    report.summary(name, size, "spawn_ms", ms(started.elapsed()), "ms");

    let deadline = started + JOIN_DEADLINE;
    let mut watchers = JoinSet::new();
    for (index, agent) in agents.iter().enumerate() {
        let mut client = system.client(agent);
        let agent_name = agent.name.clone();
        let interval = options.view_poll;
        watchers.spawn_local(async move {
            let mut next = Instant::now() + stagger(interval, index, size);
            while next < deadline {
                tokio::time::sleep_until(next.into()).await;
                if let Ok(members) = client.members().await
                    && members
                        .iter()
                        .filter(|(_, status)| *status == Status::Alive)
                        .count()
                        == size
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
            Some(at) => {
                let latency = ms(at - started);
                report.sample(name, size, "join", 0, &agent, latency);
                converged.push(latency);
            }
            None => bail!("{agent} did not see {size} alive members within {JOIN_DEADLINE:?}"),
        }
    }
    report.summary(name, size, "join_p50_ms", stats::median(&converged), "ms");
    report.summary(name, size, "join_all_ms", stats::max(&converged), "ms");
    Ok(agents)
}

/// Agent `index`'s offset inside one poll interval, so that the pollers of
/// `size` agents spread over the interval instead of firing in lock-step.
fn stagger(interval: Duration, index: usize, size: usize) -> Duration {
    interval.mul_f64(index as f64 / size as f64)
}

/// CPU time, loopback bytes and (Shoal) gossip counters over an idle
/// window in which nothing but the agents runs, then resident memory.
async fn idle_window(
    system: &System,
    agents: &mut [Agent],
    options: &Options,
    report: &mut Report,
) -> Result<()> {
    let name = system.name();
    let size = agents.len();
    let mut clients: Vec<Client> = agents.iter().map(|agent| system.client(agent)).collect();
    let mut counters_before = Vec::new();
    for client in &mut clients {
        counters_before.push(client.gossip_counters().await);
    }
    let pids: Vec<u32> = agents
        .iter()
        .map(|a| a.process.pid().context("agent not running"))
        .collect::<Result<_>>()?;
    let lo_before = netns::loopback_counters()?;
    let machine_before = process::machine_cpu();
    let cpu_before: Vec<u64> = pids
        .iter()
        .map(|&pid| process::cpu_ns(pid))
        .collect::<Result<_>>()?;
    let ticks_before: Vec<u64> = pids
        .iter()
        .map(|&pid| process::cpu_ticks(pid))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    tokio::time::sleep(options.idle).await;
    let ticks_after: Vec<u64> = pids
        .iter()
        .map(|&pid| process::cpu_ticks(pid))
        .collect::<Result<_>>()?;
    let cpu_after: Vec<u64> = pids
        .iter()
        .map(|&pid| process::cpu_ns(pid))
        .collect::<Result<_>>()?;
    let elapsed = started.elapsed().as_secs_f64();
    let machine_after = process::machine_cpu();
    let lo_after = netns::loopback_counters()?;
    let mut counters_after = Vec::new();
    for client in &mut clients {
        counters_after.push(client.gossip_counters().await);
    }

    let cpu_percent: Vec<f64> = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(before, after)| 100.0 * (after.saturating_sub(*before)) as f64 / 1e9 / elapsed)
        .collect();
    let ticks: u64 = ticks_before
        .iter()
        .zip(&ticks_after)
        .map(|(before, after)| after - before)
        .sum();
    let ticks_percent =
        100.0 * process::ticks_to_duration(ticks).as_secs_f64() / elapsed / size as f64;
    report.summary(
        name,
        size,
        "idle_cpu_mean_pct_from_ticks",
        ticks_percent,
        "% of a core",
    );
    let memory: Vec<Memory> = pids
        .iter()
        .map(|&pid| process::memory(pid))
        .collect::<Result<_>>()?;
    for ((agent, memory), cpu) in agents.iter().zip(&memory).zip(&cpu_percent) {
        report.resource(name, size, &agent.name, memory, *cpu);
    }
    let field = |f: fn(&Memory) -> u64| memory.iter().map(|m| f(m) as f64).collect::<Vec<_>>();
    for (metric, values) in [
        ("rss", field(|m| m.rss)),
        ("rss_anon", field(|m| m.anon)),
        ("rss_file", field(|m| m.file)),
        ("pss", field(|m| m.pss)),
    ] {
        report.summary(
            name,
            size,
            &format!("{metric}_median_kib"),
            stats::median(&values),
            "KiB",
        );
        report.summary(
            name,
            size,
            &format!("{metric}_max_kib"),
            stats::max(&values),
            "KiB",
        );
    }
    report.summary(
        name,
        size,
        "idle_cpu_median_pct",
        stats::median(&cpu_percent),
        "% of a core",
    );
    report.summary(
        name,
        size,
        "idle_cpu_max_pct",
        stats::max(&cpu_percent),
        "% of a core",
    );
    report.summary(
        name,
        size,
        "idle_cpu_mean_pct",
        cpu_percent.iter().sum::<f64>() / size as f64,
        "% of a core",
    );
    report.summary(
        name,
        size,
        "machine_busy_pct",
        process::machine_busy_percent(machine_before, machine_after),
        "% of all cores",
    );
    if options.private_netns {
        let per_agent = |total: u64| total as f64 / size as f64 / elapsed;
        report.summary(
            name,
            size,
            "lo_bytes_per_agent_s",
            per_agent(lo_after.bytes - lo_before.bytes),
            "B/s",
        );
        report.summary(
            name,
            size,
            "lo_packets_per_agent_s",
            per_agent(lo_after.packets - lo_before.packets),
            "pkt/s",
        );
    }
    let own: Vec<(u64, u64)> = counters_before
        .iter()
        .zip(&counters_after)
        .filter_map(|(before, after)| {
            Some(((*after)?.0 - (*before)?.0, (*after)?.1 - (*before)?.1))
        })
        .collect();
    if own.len() == size {
        let bytes: u64 = own.iter().map(|(bytes, _)| bytes).sum();
        let datagrams: u64 = own.iter().map(|(_, datagrams)| datagrams).sum();
        report.summary(
            name,
            size,
            "own_bytes_out_per_agent_s",
            bytes as f64 / size as f64 / elapsed,
            "B/s",
        );
        report.summary(
            name,
            size,
            "own_datagrams_out_per_agent_s",
            datagrams as f64 / size as f64 / elapsed,
            "pkt/s",
        );
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Shoal's blocking queries: each agent answers the moment it knows.
    Block,
    /// Polling every `change_poll`, the same way for both systems.
    Poll,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Block => "blocking query",
            Mode::Poll => "polling",
        }
    }

    fn phase(self) -> &'static str {
        match self {
            Mode::Block => "prop_block",
            Mode::Poll => "prop_poll",
        }
    }
}

/// One propagation round: arms a watcher on every agent but the origin,
/// makes the change on the origin, and returns each watcher's latency (ms).
async fn propagate(
    system: &System,
    agents: &[Agent],
    round: usize,
    mode: Mode,
    options: &Options,
) -> Result<Vec<(String, f64)>> {
    let size = agents.len();
    let origin = 1 + round % (size - 1);
    let origin_name = Rc::new(agents[origin].name.clone());
    let deadline = Instant::now() + CHANGE_DEADLINE;
    let (armed_tx, mut armed_rx) = tokio::sync::mpsc::channel::<()>(size);
    let mut watchers = JoinSet::new();
    for (index, agent) in agents
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != origin)
    {
        let mut client = system.client(agent);
        let agent_name = agent.name.clone();
        let origin_name = Rc::clone(&origin_name);
        let armed_tx = armed_tx.clone();
        let interval = options.change_poll;
        watchers.spawn_local(async move {
            let seen = match mode {
                Mode::Block => watch_blocking(&mut client, round, deadline, armed_tx).await,
                Mode::Poll => {
                    // Arm with a first poll, so the connection is open.
                    let _ = client.poll_change(&origin_name, round).await;
                    let _ = armed_tx.send(()).await;
                    let mut next = Instant::now() + stagger(interval, index, size);
                    loop {
                        tokio::time::sleep_until(next.into()).await;
                        if next > deadline {
                            break None;
                        }
                        if let Ok(true) = client.poll_change(&origin_name, round).await {
                            break Some(Instant::now());
                        }
                        next += interval;
                    }
                }
            };
            (agent_name, seen)
        });
    }
    drop(armed_tx);
    for _ in 0..size - 1 {
        tokio::time::timeout(Duration::from_secs(10), armed_rx.recv())
            .await
            .context("watchers not armed within 10 s")?;
    }
    let mut origin_client = system.client(&agents[origin]);
    let started = Instant::now();
    origin_client.make_change(round).await?;
    let mut seen = Vec::new();
    while let Some(result) = watchers.join_next().await {
        let (agent, at) = result?;
        if let Some(at) = at {
            seen.push((agent, ms(at.saturating_duration_since(started))));
        } else {
            eprintln!("  {agent} did not see round {round} within {CHANGE_DEADLINE:?}");
        }
    }
    Ok(seen)
}

async fn watch_blocking(
    client: &mut Client,
    round: usize,
    deadline: Instant,
    armed_tx: tokio::sync::mpsc::Sender<()>,
) -> Option<Instant> {
    let mut index = loop {
        match client.block_change(round, 0, Duration::ZERO).await {
            Ok((index, _)) => break index,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(_) => return None,
        }
    };
    let _ = armed_tx.send(()).await;
    while Instant::now() < deadline {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match client.block_change(round, index, wait).await {
            Ok((_, true)) => return Some(Instant::now()),
            Ok((new_index, false)) => index = new_index,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    None
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
    let mut watchers = JoinSet::new();
    let mut clients = Vec::new();
    for (index, agent) in agents
        .iter()
        .enumerate()
        .filter(|(index, _)| *index < victim)
    {
        let mut client = system.client(agent);
        client
            .members()
            .await
            .with_context(|| format!("{} does not answer", agent.name))?;
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
                if let Ok(members) = client.members().await
                    && members
                        .iter()
                        .any(|(name, status)| *name == *victim_name && *status == Status::Failed)
                {
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
