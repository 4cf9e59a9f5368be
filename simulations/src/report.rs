//! The outcome of one run: figures, a printed report and CSV files.

use std::fmt;
use std::io::Write;
use std::path::Path;

use crate::metrics::Metrics;
use crate::network::Micros;
use crate::sim::{SECOND, Simulation};

/// Dissemination of one state change, delays in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Dissemination {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub p100: Option<f64>,
    /// Fraction of the nodes up at the time that got it.
    pub coverage: f64,
}

/// Detection of one crash, delays in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub first: Option<f64>,
    /// The median observer (of those that declared it down).
    pub p50: Option<f64>,
    pub all: Option<f64>,
    pub observers: usize,
    pub expected: usize,
}

/// Every figure of one run. Equal seeds give equal reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub name: String,
    pub seed: u64,
    pub nodes: usize,
    pub duration_s: f64,
    pub local_health: bool,
    pub loss: f64,
    pub events: u64,
    pub dissemination: Vec<Dissemination>,
    pub detection: Vec<Detection>,
    /// Healthy, never-faulted nodes declared down by anyone / a majority.
    pub false_positives: usize,
    pub false_positives_majority: usize,
    /// Paused or slowed nodes declared down (by anyone).
    pub faulted_declared_down: usize,
    pub partition_downs: u64,
    pub partition_downs_by_minority: u64,
    /// Healthy nodes that learned they were declared down and rejoined.
    pub renewals: u64,
    pub refutations: u64,
    pub probe_failures: u64,
    /// Suspicions started, summed over the nodes (each node that marks a
    /// member suspect counts once).
    pub suspicions: u64,
    pub max_health_score: u32,
    pub messages_per_node_s: f64,
    pub bytes_per_node_s: f64,
    pub datagrams_lost: u64,
    pub heal_convergence_s: Option<f64>,
    /// Anti-entropy exchanges opened, and the bytes of all their messages.
    pub sync_exchanges: u64,
    pub sync_bytes: u64,
    /// Exchanges nodes asked for with addresses outside the cluster (a
    /// forged rumor's, say).
    pub syncs_outside: u64,
    /// Exchanges refused by a responder at its limit (`max_exchanges`).
    pub syncs_refused: u64,
    /// After each start of every node at once (the join, a mass restart):
    /// seconds until every healthy node held every healthy node's current
    /// record (name, services), or `None` if that never happened.
    pub records_complete_s: Vec<Option<f64>>,
    /// The most node records a live node holds at the end (its digest has
    /// one entry per record).
    pub max_records: usize,
    pub kv: KvOutcome,
    /// Per-agent traffic: median and busiest agent.
    pub traffic: crate::traffic::Traffic,
}

/// Whether the KV store converged. All zero / `None` when nothing was
/// written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KvOutcome {
    /// Writes accepted, and writes refused (their node was down, paused
    /// or gone).
    pub writes: u64,
    pub refused: u64,
    /// Distinct keys written.
    pub keys: usize,
    /// At the end, every healthy node holds the last-writer-wins map of
    /// every accepted write. `None` without writes.
    pub converged: Option<bool>,
    /// From the last write, heal or restart to the moment every healthy
    /// node held that map.
    pub convergence_s: Option<f64>,
    /// Keys whose winner some healthy node does not serve at the end (a
    /// write it lacks, or a delete it still serves a value for).
    pub missing_keys: usize,
    /// Tombstones collected, over all nodes.
    pub collected: u64,
}

impl KvOutcome {
    fn of(sim: &Simulation) -> Self {
        let kv = &sim.metrics.kv;
        if kv.writes == 0 {
            return Self {
                refused: kv.refused,
                ..Self::default()
            };
        }
        let missing_keys = sim.kv_missing_keys();
        Self {
            writes: kv.writes,
            refused: kv.refused,
            keys: kv.expected.len(),
            converged: Some(missing_keys == 0 && sim.kv_converged()),
            convergence_s: kv
                .converged_at
                .map(|at| seconds(at.saturating_sub(kv.disturbed_at))),
            missing_keys,
            collected: kv.collected,
        }
    }
}

fn seconds(micros: Micros) -> f64 {
    micros as f64 / SECOND as f64
}

impl Report {
    pub fn from_simulation(sim: &Simulation) -> Self {
        let metrics: &Metrics = &sim.metrics;
        let scenario = &sim.scenario;
        let live = sim.slots.iter().filter(|slot| slot.node.is_some()).count();
        let (false_positives, false_positives_majority) =
            metrics.false_positive_counts(live, false);
        let (faulted_declared_down, _) = metrics.false_positive_counts(live, true);
        let (mut datagrams, mut bytes, mut refutations, mut probe_failures, mut max_score) =
            (0u64, 0u64, 0u64, 0u64, 0u32);
        let mut suspicions = 0u64;
        for slot in &sim.slots {
            datagrams += slot.datagrams_out;
            bytes += slot.bytes_out;
            if let Some(node) = &slot.node {
                datagrams += node.counters().datagrams_out;
                bytes += node.counters().bytes_out;
                let stats = node.local_health().stats();
                refutations += stats.refutations;
                probe_failures += stats.probe_failures;
                suspicions += stats.suspicions;
                max_score = max_score.max(stats.max_score);
            }
        }
        let node_seconds = scenario.nodes as f64 * scenario.duration_s;
        Self {
            name: scenario.name.clone(),
            seed: scenario.seed,
            nodes: scenario.nodes,
            duration_s: scenario.duration_s,
            local_health: scenario.local_health,
            loss: scenario.network.loss,
            events: sim.events,
            dissemination: metrics
                .changes
                .iter()
                .map(|change| Dissemination {
                    p50: change.time_to(0.5).map(seconds),
                    p99: change.time_to(0.99).map(seconds),
                    p999: change.time_to(0.999).map(seconds),
                    p100: change.time_to(1.0).map(seconds),
                    coverage: change.arrivals.len() as f64 / change.audience.max(1) as f64,
                })
                .collect(),
            detection: metrics
                .crashes
                .iter()
                .map(|crash| Detection {
                    first: crash.first.map(seconds),
                    p50: (!crash.delays.is_empty())
                        .then(|| seconds(crash.delays[crash.delays.len() / 2])),
                    all: crash.all.map(seconds),
                    observers: crash.observers,
                    expected: crash.expected,
                })
                .collect(),
            false_positives,
            false_positives_majority,
            faulted_declared_down,
            partition_downs: metrics.partition_downs,
            partition_downs_by_minority: metrics.partition_downs_by_minority,
            renewals: metrics.renewals,
            refutations,
            probe_failures,
            suspicions,
            max_health_score: max_score,
            messages_per_node_s: datagrams as f64 / node_seconds,
            bytes_per_node_s: bytes as f64 / node_seconds,
            datagrams_lost: sim.network.lost,
            heal_convergence_s: metrics.converged_after_heal.map(seconds),
            sync_exchanges: metrics.sync_exchanges,
            sync_bytes: metrics.sync_bytes,
            syncs_outside: metrics.syncs_outside,
            syncs_refused: metrics.syncs_refused,
            records_complete_s: metrics
                .cold_starts
                .iter()
                .map(|start| start.complete_after.map(seconds))
                .collect(),
            max_records: sim.max_records(),
            kv: KvOutcome::of(sim),
            traffic: crate::traffic::Traffic::of(sim),
        }
    }

    /// Mean over the changes of one dissemination percentile.
    pub fn mean_dissemination(&self, pick: impl Fn(&Dissemination) -> Option<f64>) -> Option<f64> {
        mean(self.dissemination.iter().map(pick))
    }

    /// Mean over the crashes of one detection delay.
    pub fn mean_detection(&self, pick: impl Fn(&Detection) -> Option<f64>) -> Option<f64> {
        mean(self.detection.iter().map(pick))
    }

    /// Column names of [`Report::csv_row`].
    pub const CSV_HEADER: &'static str = "name,seed,nodes,duration_s,local_health,loss,events,\
        changes,dissem_p50_s,dissem_p99_s,dissem_p999_s,dissem_p100_s,min_coverage,\
        crashes,detect_first_s,detect_p50_s,detect_all_s,false_positives,false_positives_majority,\
        faulted_declared_down,partition_downs,renewals,refutations,probe_failures,\
        max_health_score,messages_per_node_s,bytes_per_node_s,datagrams_lost,heal_convergence_s,\
        sync_exchanges,sync_bytes,kv_writes,kv_keys,kv_converged,kv_convergence_s,kv_missing_keys,\
        agent_udp_bytes_s_median,agent_udp_bytes_s_max,agent_udp_datagrams_s_median,\
        agent_udp_datagrams_s_max,agent_tcp_bytes_s_median,agent_tcp_bytes_s_max,\
        agent_tcp_messages_s_median,agent_tcp_messages_s_max,agent_bytes_s_median,\
        agent_bytes_s_max,busiest_agent,busiest_is_seed,suspicions,syncs_refused,\
        records_complete_s";

    /// One CSV row; missing figures are empty cells.
    pub fn csv_row(&self) -> String {
        let cell = |value: Option<f64>| value.map(|v| format!("{v:.4}")).unwrap_or_default();
        let min_coverage = self
            .dissemination
            .iter()
            .map(|d| d.coverage)
            .fold(None, |acc: Option<f64>, c| {
                Some(acc.map_or(c, |a| a.min(c)))
            });
        [
            self.name.clone(),
            self.seed.to_string(),
            self.nodes.to_string(),
            self.duration_s.to_string(),
            self.local_health.to_string(),
            self.loss.to_string(),
            self.events.to_string(),
            self.dissemination.len().to_string(),
            cell(self.mean_dissemination(|d| d.p50)),
            cell(self.mean_dissemination(|d| d.p99)),
            cell(self.mean_dissemination(|d| d.p999)),
            cell(self.mean_dissemination(|d| d.p100)),
            cell(min_coverage),
            self.detection.len().to_string(),
            cell(self.mean_detection(|d| d.first)),
            cell(self.mean_detection(|d| d.p50)),
            cell(self.mean_detection(|d| d.all)),
            self.false_positives.to_string(),
            self.false_positives_majority.to_string(),
            self.faulted_declared_down.to_string(),
            self.partition_downs.to_string(),
            self.renewals.to_string(),
            self.refutations.to_string(),
            self.probe_failures.to_string(),
            self.max_health_score.to_string(),
            format!("{:.3}", self.messages_per_node_s),
            format!("{:.1}", self.bytes_per_node_s),
            self.datagrams_lost.to_string(),
            cell(self.heal_convergence_s),
            self.sync_exchanges.to_string(),
            self.sync_bytes.to_string(),
            self.kv.writes.to_string(),
            self.kv.keys.to_string(),
            self.kv.converged.map(|c| c.to_string()).unwrap_or_default(),
            cell(self.kv.convergence_s),
            self.kv.missing_keys.to_string(),
        ]
        .into_iter()
        .chain(self.traffic_cells())
        .collect::<Vec<_>>()
        .join(",")
    }

    fn traffic_cells(&self) -> Vec<String> {
        let t = &self.traffic;
        let mut cells = Vec::new();
        for spread in [
            t.udp_bytes,
            t.udp_datagrams,
            t.tcp_bytes,
            t.tcp_messages,
            t.bytes,
        ] {
            cells.push(format!("{:.2}", spread.median));
            cells.push(format!("{:.2}", spread.max));
        }
        cells.push(t.busiest.to_string());
        cells.push(t.busiest_is_seed.to_string());
        cells.push(self.suspicions.to_string());
        cells.push(self.syncs_refused.to_string());
        // One figure per start of every node (`;`-separated; empty: never).
        let starts: Vec<String> = self
            .records_complete_s
            .iter()
            .map(|t| t.map(|t| format!("{t:.2}")).unwrap_or_default())
            .collect();
        cells.push(starts.join(";"));
        cells
    }
}

fn mean(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let values: Vec<Option<f64>> = values.collect();
    if values.is_empty() || values.iter().any(Option::is_none) {
        return None;
    }
    Some(values.iter().flatten().sum::<f64>() / values.len() as f64)
}

fn show(value: Option<f64>) -> String {
    value.map_or_else(|| "never".into(), |v| format!("{v:.3}s"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {} | seed {} | {} nodes | {} virtual s | loss {} | local health {}",
            self.name,
            self.seed,
            self.nodes,
            self.duration_s,
            self.loss,
            if self.local_health { "on" } else { "off" }
        )?;
        for (index, d) in self.dissemination.iter().enumerate() {
            writeln!(
                f,
                "  change {index}: 50% {} | 99% {} | 99.9% {} | 100% {} | coverage {:.4}",
                show(d.p50),
                show(d.p99),
                show(d.p999),
                show(d.p100),
                d.coverage
            )?;
        }
        for (index, d) in self.detection.iter().enumerate() {
            writeln!(
                f,
                "  crash {index}: first observer {} | median {} | all observers {} ({}/{})",
                show(d.first),
                show(d.p50),
                show(d.all),
                d.observers,
                d.expected
            )?;
        }
        writeln!(
            f,
            "  false positives: {} healthy nodes declared down ({} by a majority); \
             {} faulted (paused/slow) nodes declared down; {} rejoins of healthy nodes",
            self.false_positives,
            self.false_positives_majority,
            self.faulted_declared_down,
            self.renewals
        )?;
        writeln!(
            f,
            "  suspicions {} | refutations {} | failed probes {} | max local health score {} | \
             downs across the partition {} ({} by the smaller side)",
            self.suspicions,
            self.refutations,
            self.probe_failures,
            self.max_health_score,
            self.partition_downs,
            self.partition_downs_by_minority
        )?;
        writeln!(
            f,
            "  traffic: {:.2} datagrams and {:.0} bytes per node per second; {} datagrams lost",
            self.messages_per_node_s, self.bytes_per_node_s, self.datagrams_lost
        )?;
        if let Some(heal) = self.heal_convergence_s {
            writeln!(f, "  converged {heal:.3}s after the partition healed")?;
        }
        writeln!(
            f,
            "  anti-entropy: {} exchanges, {} bytes ({:.0} per node per second)",
            self.sync_exchanges,
            self.sync_bytes,
            self.sync_bytes as f64 / (self.nodes as f64 * self.duration_s)
        )?;
        let t = &self.traffic;
        writeln!(
            f,
            "  per agent ({} agents), median / busiest: UDP {:.0} / {:.0} B/s, {:.2} / {:.2} datagrams/s; \
             TCP {:.0} / {:.0} B/s, {:.3} / {:.3} messages/s; all {:.0} / {:.0} B/s ({:.2}x; busiest node {}{})",
            t.agents,
            t.udp_bytes.median,
            t.udp_bytes.max,
            t.udp_datagrams.median,
            t.udp_datagrams.max,
            t.tcp_bytes.median,
            t.tcp_bytes.max,
            t.tcp_messages.median,
            t.tcp_messages.max,
            t.bytes.median,
            t.bytes.max,
            t.bytes.ratio(),
            t.busiest,
            if t.busiest_is_seed { ", a seed" } else { "" }
        )?;
        writeln!(
            f,
            "  peers: {} exchanges asked for outside the cluster; at most {} records on a node",
            self.syncs_outside, self.max_records
        )?;
        if !self.records_complete_s.is_empty() {
            let times: Vec<String> = self
                .records_complete_s
                .iter()
                .map(|time| time.map_or("never".into(), |t| format!("{t:.2}s")))
                .collect();
            writeln!(
                f,
                "  cold start: every record on every node after {} ({} exchanges refused)",
                times.join(", "),
                self.syncs_refused
            )?;
        }
        if let Some(converged) = self.kv.converged {
            writeln!(
                f,
                "  KV: {} writes to {} keys ({} refused); converged: {} ({} after the last \
                 write or heal); {} keys missing on some node; {} tombstones collected",
                self.kv.writes,
                self.kv.keys,
                self.kv.refused,
                if converged { "yes" } else { "no" },
                show(self.kv.convergence_s),
                self.kv.missing_keys,
                self.kv.collected
            )?;
        }
        writeln!(f, "  {} events simulated", self.events)
    }
}

/// Writes `<name>-summary.csv` and `<name>-timeline.csv` into `dir`.
pub fn write_csv(sim: &Simulation, report: &Report, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut summary = std::fs::File::create(dir.join(format!("{}-summary.csv", report.name)))?;
    writeln!(summary, "{}", Report::CSV_HEADER)?;
    writeln!(summary, "{}", report.csv_row())?;
    let mut timeline = std::fs::File::create(dir.join(format!("{}-timeline.csv", report.name)))?;
    writeln!(
        timeline,
        "time_s,live,min_view,max_view,datagrams,bytes,false_downs,change_coverage,max_health_score"
    )?;
    for s in &sim.metrics.samples {
        writeln!(
            timeline,
            "{:.3},{},{},{},{},{},{},{:.4},{}",
            seconds(s.time),
            s.live,
            if s.min_view == usize::MAX {
                0
            } else {
                s.min_view
            },
            s.max_view,
            s.datagrams,
            s.bytes,
            s.false_downs,
            s.change_coverage,
            s.max_health_score
        )?;
    }
    Ok(())
}
