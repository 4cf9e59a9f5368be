//! The idle footprint of a running cluster: CPU time, gossip traffic and
//! resident memory per agent, measured while nothing but the agents runs.

use std::time::Instant;

use anyhow::{Context, Result};

use crate::cluster::Options;
use crate::netns;
use crate::process::{self, Memory};
use crate::report::Report;
use crate::stats;
use crate::system::{Agent, Client, System};

/// CPU time, loopback bytes and (Shoal) gossip counters over an idle
/// window in which nothing but the agents runs, then resident memory.
pub async fn idle_window(
    system: &System,
    agents: &mut [Agent],
    options: &Options,
    idle: std::time::Duration,
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
    tokio::time::sleep(idle).await;
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
        ("uss", field(|m| m.uss)),
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
