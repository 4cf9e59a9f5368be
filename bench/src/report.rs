//! Raw results as CSV, and the markdown summary rendered from the CSV (so
//! `shoal-bench report` can redo the markdown without rerunning anything).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::process::Memory;

/// Everything one run measured.
#[derive(Default)]
pub struct Report {
    /// `system,n,phase,round,agent,ms`: one agent's latency in one event.
    samples: Vec<String>,
    /// `system,n,agent,rss_kib,rss_anon_kib,rss_file_kib,pss_kib,idle_cpu_pct,uss_kib`.
    resources: Vec<String>,
    /// `system,n,metric,value,unit`.
    summary: Vec<String>,
    /// `system,n,agent,udp_bytes_s,udp_packets_s,tcp_bytes_s,tcp_packets_s`.
    traffic: Vec<String>,
}

pub const SAMPLES_HEADER: &str = "system,n,phase,round,agent,ms";
pub const RESOURCES_HEADER: &str =
    "system,n,agent,rss_kib,rss_anon_kib,rss_file_kib,pss_kib,idle_cpu_pct,uss_kib";
pub const SUMMARY_HEADER: &str = "system,n,metric,value,unit";
pub const TRAFFIC_HEADER: &str =
    "system,n,agent,udp_bytes_s,udp_packets_s,tcp_bytes_s,tcp_packets_s";

impl Report {
    pub fn sample(
        &mut self,
        system: &str,
        n: usize,
        phase: &str,
        round: usize,
        agent: &str,
        ms: f64,
    ) {
        self.samples
            .push(format!("{system},{n},{phase},{round},{agent},{ms:.1}"));
    }

    pub fn resource(
        &mut self,
        system: &str,
        n: usize,
        agent: &str,
        memory: &Memory,
        idle_cpu_percent: f64,
    ) {
        self.resources.push(format!(
            "{system},{n},{agent},{},{},{},{},{idle_cpu_percent:.3},{}",
            memory.rss, memory.anon, memory.file, memory.pss, memory.uss
        ));
    }

    /// One agent's traffic in the idle window (see `traffic::PerAgent`).
    pub fn traffic(&mut self, system: &str, n: usize, row: &(String, f64, f64, f64, f64)) {
        let (agent, udp_bytes, udp_packets, tcp_bytes, tcp_packets) = row;
        self.traffic.push(format!(
            "{system},{n},{agent},{udp_bytes:.1},{udp_packets:.3},{tcp_bytes:.1},{tcp_packets:.3}"
        ));
    }

    pub fn summary(&mut self, system: &str, n: usize, metric: &str, value: f64, unit: &str) {
        self.summary
            .push(format!("{system},{n},{metric},{value:.3},{unit}"));
    }

    /// Writes (overwrites) `cluster_{samples,resources,summary}.csv` in `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        for (file, header, rows) in [
            ("cluster_samples.csv", SAMPLES_HEADER, &self.samples),
            ("cluster_resources.csv", RESOURCES_HEADER, &self.resources),
            ("cluster_summary.csv", SUMMARY_HEADER, &self.summary),
            ("cluster_traffic.csv", TRAFFIC_HEADER, &self.traffic),
        ] {
            let mut text = format!("{header}\n");
            for row in rows {
                text.push_str(row);
                text.push('\n');
            }
            std::fs::write(dir.join(file), text).with_context(|| format!("write {file}"))?;
        }
        Ok(())
    }
}

impl Report {
    /// The cells `(system, n)` that `dir`'s CSVs hold complete (their
    /// summary has `load_average_at_end`, the last figure a cell writes),
    /// with every row of those cells; rows of an interrupted cell are
    /// dropped. For `--resume`.
    pub fn load_complete(dir: &Path) -> Result<(Report, BTreeSet<(String, usize)>)> {
        let read = |file: &str| -> Result<Vec<String>> {
            let path = dir.join(file);
            if !path.exists() {
                return Ok(Vec::new());
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("read {}", path.display()))?;
            Ok(text.lines().skip(1).map(str::to_string).collect())
        };
        let cell = |row: &str| -> Option<(String, usize)> {
            let mut fields = row.split(',');
            let system = fields.next()?.to_string();
            Some((system, fields.next()?.parse().ok()?))
        };
        let summary = read("cluster_summary.csv")?;
        let complete: BTreeSet<(String, usize)> = summary
            .iter()
            .filter(|row| row.split(',').nth(2) == Some("load_average_at_end"))
            .filter_map(|row| cell(row))
            .collect();
        let keep = |rows: Vec<String>| -> Vec<String> {
            rows.into_iter()
                .filter(|row| cell(row).is_some_and(|c| complete.contains(&c)))
                .collect()
        };
        let report = Report {
            samples: keep(read("cluster_samples.csv")?),
            resources: keep(read("cluster_resources.csv")?),
            summary: keep(summary),
            traffic: keep(read("cluster_traffic.csv")?),
        };
        Ok((report, complete))
    }
}

/// `(system, n, metric) -> value` from `cluster_summary.csv`.
pub type Summary = BTreeMap<(String, usize, String), f64>;

pub fn load_summary(path: &Path) -> Result<Summary> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut summary = Summary::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if let [system, n, metric, value, ..] = fields[..] {
            summary.insert(
                (system.to_string(), n.parse()?, metric.to_string()),
                value.parse()?,
            );
        }
    }
    Ok(summary)
}

/// One row of the comparison: label, metric key, scale (divide by), decimals.
const ROWS: &[(&str, &str, f64, usize)] = &[
    (
        "Join: every agent sees N alive (ms from the seed being up)",
        "join_all_ms",
        1.0,
        0,
    ),
    ("Join: median agent (ms)", "join_p50_ms", 1.0, 0),
    ("Propagation, polled: p50 (ms)", "prop_poll_p50_ms", 1.0, 0),
    ("Propagation, polled: p99 (ms)", "prop_poll_p99_ms", 1.0, 0),
    ("Propagation, polled: max (ms)", "prop_poll_max_ms", 1.0, 0),
    (
        "Propagation, Shoal blocking query: p50 (ms)",
        "prop_block_p50_ms",
        1.0,
        0,
    ),
    (
        "Propagation, Shoal blocking query: p99 (ms)",
        "prop_block_p99_ms",
        1.0,
        0,
    ),
    (
        "Propagation, Shoal blocking query: max (ms)",
        "prop_block_max_ms",
        1.0,
        0,
    ),
    (
        "Failure detection: first agent (ms)",
        "detect_first_ms",
        1.0,
        0,
    ),
    ("Failure detection: p50 (ms)", "detect_p50_ms", 1.0, 0),
    (
        "Failure detection: last agent (ms)",
        "detect_max_ms",
        1.0,
        0,
    ),
    (
        "False positives in the idle window: agents told they were declared dead",
        "idle_declared_dead",
        1.0,
        0,
    ),
    ("RSS (VmRSS) median (MiB)", "rss_median_kib", 1024.0, 2),
    ("RSS max (MiB)", "rss_max_kib", 1024.0, 2),
    (
        "RssAnon median (MiB): private heap/stacks",
        "rss_anon_median_kib",
        1024.0,
        2,
    ),
    (
        "RssFile median (MiB): mapped binary, shared",
        "rss_file_median_kib",
        1024.0,
        2,
    ),
    (
        "PSS median (MiB): fair share with N copies",
        "pss_median_kib",
        1024.0,
        2,
    ),
    (
        "USS median (MiB): pages only this agent maps",
        "uss_median_kib",
        1024.0,
        2,
    ),
    (
        "Idle CPU per agent, median (% of a core)",
        "idle_cpu_median_pct",
        1.0,
        3,
    ),
    (
        "Idle CPU per agent, max (% of a core)",
        "idle_cpu_max_pct",
        1.0,
        3,
    ),
    (
        "Idle CPU per agent, mean (% of a core)",
        "idle_cpu_mean_pct",
        1.0,
        3,
    ),
    (
        "Idle CPU per agent, mean from /proc stat ticks (cross-check)",
        "idle_cpu_mean_pct_from_ticks",
        1.0,
        3,
    ),
    (
        "Gossip bytes per agent per second (lo counter)",
        "lo_bytes_per_agent_s",
        1.0,
        0,
    ),
    (
        "Gossip packets per agent per second (lo counter)",
        "lo_packets_per_agent_s",
        1.0,
        1,
    ),
    (
        "Shoal's own counter: payload bytes out per agent per second",
        "own_bytes_out_per_agent_s",
        1.0,
        0,
    ),
    (
        "Gossip bytes sent per agent per second, UDP + TCP: median agent",
        "agent_bytes_median",
        1.0,
        0,
    ),
    (
        "Gossip bytes sent per agent per second: busiest agent",
        "agent_bytes_max",
        1.0,
        0,
    ),
    (
        "Hotspot: busiest / median agent, bytes (target <= 3)",
        "agent_bytes_ratio",
        1.0,
        2,
    ),
    (
        "Gossip packets sent per agent per second, UDP + TCP: median agent",
        "agent_packets_median",
        1.0,
        2,
    ),
    (
        "Gossip packets sent per agent per second: busiest agent",
        "agent_packets_max",
        1.0,
        2,
    ),
    (
        "Hotspot: busiest / median agent, packets (target <= 3)",
        "agent_packets_ratio",
        1.0,
        2,
    ),
    (
        "UDP bytes per agent per second: median",
        "agent_udp_bytes_median",
        1.0,
        0,
    ),
    ("UDP bytes: busiest agent", "agent_udp_bytes_max", 1.0, 0),
    (
        "TCP bytes per agent per second: median",
        "agent_tcp_bytes_median",
        1.0,
        0,
    ),
    ("TCP bytes: busiest agent", "agent_tcp_bytes_max", 1.0, 0),
    (
        "TCP bytes from no agent's address (Serf's dialer), spread evenly",
        "tcp_unattributed_bytes_s",
        1.0,
        0,
    ),
    ("Agents that missed a change / a failure", "missed", 1.0, 0),
    (
        "Machine busy during the idle window (% of both cores)",
        "machine_busy_pct",
        1.0,
        1,
    ),
    (
        "Load average (1 min) at start",
        "load_average_at_start",
        1.0,
        2,
    ),
];

fn cell(value: Option<f64>, scale: f64, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{:.*}", decimals, v / scale),
        _ => "–".to_string(),
    }
}

/// The markdown comparison tables, one per cluster size.
pub fn render_cluster(summary_csv: &Path) -> Result<String> {
    let summary = load_summary(summary_csv)?;
    let get = |system: &str, n: usize, metric: &str| -> Option<f64> {
        if metric == "missed" {
            let keys = ["prop_poll_missed", "prop_block_missed", "detect_missed"];
            let values: Vec<f64> = keys
                .iter()
                .filter_map(|k| summary.get(&(system.to_string(), n, k.to_string())))
                .copied()
                .collect();
            return (!values.is_empty()).then(|| values.iter().sum());
        }
        summary
            .get(&(system.to_string(), n, metric.to_string()))
            .copied()
    };
    let mut sizes: Vec<usize> = summary.keys().map(|(_, n, _)| *n).collect();
    sizes.dedup();
    sizes.sort_unstable();
    sizes.dedup();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => {
            format!("{:.2}", a / b)
        }
        _ => "–".to_string(),
    };
    // Shoal run with Serf's push-pull interval, when the run has it.
    let alike = "shoal-serf-intervals";
    let with_alike = summary.keys().any(|(system, _, _)| system == alike);
    let mut out = String::new();
    for n in sizes {
        writeln!(out, "### N = {n}\n")?;
        if with_alike {
            writeln!(
                out,
                "| metric | Shoal | Shoal, Serf's intervals | Serf | Shoal / Serf | Shoal (Serf's intervals) / Serf |"
            )?;
            writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
        } else {
            writeln!(out, "| metric | Shoal | Serf | Shoal / Serf |")?;
            writeln!(out, "|---|---:|---:|---:|")?;
        }
        for (label, metric, scale, decimals) in ROWS {
            let shoal = get("shoal", n, metric);
            let serf = get("serf", n, metric);
            let shoal_alike = get(alike, n, metric);
            if shoal.is_none() && serf.is_none() && shoal_alike.is_none() {
                continue;
            }
            if with_alike {
                writeln!(
                    out,
                    "| {label} | {} | {} | {} | {} | {} |",
                    cell(shoal, *scale, *decimals),
                    cell(shoal_alike, *scale, *decimals),
                    cell(serf, *scale, *decimals),
                    ratio(shoal, serf),
                    ratio(shoal_alike, serf)
                )?;
            } else {
                writeln!(
                    out,
                    "| {label} | {} | {} | {} |",
                    cell(shoal, *scale, *decimals),
                    cell(serf, *scale, *decimals),
                    ratio(shoal, serf)
                )?;
            }
        }
        writeln!(out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_keeps_complete_cells_and_drops_an_interrupted_one() {
        let dir = std::env::temp_dir().join(format!("shoal-bench-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut written = Report::default();
        for (system, n) in [("shoal", 10), ("serf", 10), ("shoal", 50)] {
            written.summary(system, n, "load_average_at_start", 0.5, "");
            written.sample(system, n, "join", 0, "a1", 12.0);
            written.summary(system, n, "join_all_ms", 40.0, "ms");
            // The interrupted cell stops before its last figure.
            if (system, n) != ("shoal", 50) {
                written.summary(system, n, "load_average_at_end", 0.6, "");
            }
        }
        written.write(&dir).unwrap();

        let (loaded, complete) = Report::load_complete(&dir).unwrap();
        let cells: Vec<(&str, usize)> = complete.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        assert_eq!(cells, [("serf", 10), ("shoal", 10)]);
        assert_eq!(loaded.samples.len(), 2);
        assert_eq!(loaded.summary.len(), 6);
        assert!(
            loaded
                .summary
                .iter()
                .all(|row| !row.starts_with("shoal,50,"))
        );

        // Nothing there yet: nothing complete, nothing kept.
        let (empty, none) = Report::load_complete(&dir.join("missing")).unwrap();
        assert!(none.is_empty() && empty.summary.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
