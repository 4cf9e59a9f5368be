//! What a campaign did and found, and its summary: a human part, then one
//! machine-readable line that `scripts/campaign` adds up.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::history::Outcome;
use super::hostile::Tally;

/// What a campaign did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub fault_time: Duration,
    /// The enabled fault kinds and phases (`FaultMenu::describe`).
    pub menu: String,
    /// Seconds of faults per timing phase, in order (`default`, `quick`).
    pub phases: Vec<(&'static str, u64)>,
    pub ops_by_kind: BTreeMap<&'static str, u64>,
    pub outcomes: BTreeMap<Outcome, u64>,
    pub faults: BTreeMap<&'static str, u64>,
    pub hostile: BTreeMap<&'static str, Tally>,
    pub checks: BTreeMap<&'static str, u64>,
    pub converged_after: Option<Duration>,
    pub datagrams_dropped: u64,
    /// Reads answered during the run, and those checked by each rule.
    pub reads: u64,
    pub reads_ryw: u64,
    pub reads_monotonic: u64,
    /// KV writes answered `false`: justified by a concurrent newer write,
    /// or not.
    pub false_justified: u64,
    pub false_unjustified: u64,
    /// Failure reports about healthy agents (each a violation).
    pub false_reports: u64,
    pub faulted_seen_failed: u64,
    pub violations: Vec<String>,
    /// Where the history and logs were left, if there were violations.
    pub artifacts: Option<PathBuf>,
}

fn total<K>(map: &BTreeMap<K, u64>) -> u64 {
    map.values().sum()
}

fn list(map: &BTreeMap<&'static str, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Report {
    fn count(&self, kind: &str) -> u64 {
        self.faults.get(kind).copied().unwrap_or(0)
    }

    /// The human summary, then one machine-readable line for
    /// `scripts/campaign`.
    pub fn summary(&self) -> String {
        let outcome = |o| self.outcomes.get(&o).copied().unwrap_or(0);
        let faults: u64 = self
            .faults
            .iter()
            .filter(|(kind, _)| !kind.starts_with("skipped"))
            .map(|(_, n)| n)
            .sum();
        let hostile_sent: u64 = self.hostile.values().map(|t| t.sent).sum();
        let hostile = if self.hostile.is_empty() {
            "none".to_string()
        } else {
            self.hostile
                .iter()
                .map(|(kind, t)| format!("{kind} {} ({})", t.sent, t.describe()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let phase = |name| {
            self.phases
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, s)| s)
                .sum::<u64>()
        };
        let phases = self
            .phases
            .iter()
            .map(|(name, secs)| format!("{secs} s {name}"))
            .collect::<Vec<_>>()
            .join(", then ");
        let writes = self
            .ops_by_kind
            .iter()
            .filter(|(kind, _)| **kind != "kv_get")
            .map(|(_, n)| n)
            .sum::<u64>();
        format!(
            "campaign seed {seed}, {secs} s of faults\n\
             \x20 timings: {phases}; {menu}\n\
             \x20 operations: {ops} ({kinds})\n\
             \x20 answers to writes: {applied} acknowledged, {not} not applied, {unknown} unknown; \
             answered false: {fj} justified by a concurrent newer write, {fu} not\n\
             \x20 reads during the run: {reads} answered, {ryw} checked for read-your-writes, \
             {mono} for monotonic reads\n\
             \x20 faults: {faults} ({fault_kinds}); {dropped} datagrams dropped by lossy links\n\
             \x20 hostile requests: {hostile}\n\
             \x20 converged {converged} after the heal\n\
             \x20 invariant checks: {checks} ({check_kinds})\n\
             \x20 membership: faulted agents seen failed by a majority in {seen} polls; \
             false failure reports about healthy agents {false_reports}\n\
             \x20 violations: {violations}\n\
             CAMPAIGN-SUMMARY seed={seed} seconds={secs} default_seconds={default_secs} ops={writes} \
             acked={applied} reads={reads} ryw={ryw} monotonic={mono} false_justified={fj} \
             false_unjustified={fu} faults={faults} long_partitions={long} hostile={hostile_sent} \
             hostile_filter={hf} hostile_events={he} hostile_template={ht} checks={checks} \
             violations={violations}",
            seed = self.seed,
            secs = self.fault_time.as_secs(),
            menu = self.menu,
            ops = total(&self.ops_by_kind),
            kinds = list(&self.ops_by_kind),
            applied = outcome(Outcome::Applied),
            not = outcome(Outcome::NotApplied),
            unknown = outcome(Outcome::Unknown),
            fj = self.false_justified,
            fu = self.false_unjustified,
            reads = self.reads,
            ryw = self.reads_ryw,
            mono = self.reads_monotonic,
            fault_kinds = list(&self.faults),
            dropped = self.datagrams_dropped,
            converged = self
                .converged_after
                .map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
            checks = total(&self.checks),
            check_kinds = list(&self.checks),
            false_reports = self.false_reports,
            seen = self.faulted_seen_failed,
            violations = self.violations.len(),
            default_secs = phase("default"),
            long = self.count("long_partition"),
            hf = self.hostile.get("hostile_filter").map_or(0, |t| t.sent),
            he = self.hostile.get("hostile_events").map_or(0, |t| t.sent),
            ht = self.hostile.get("hostile_template").map_or(0, |t| t.sent),
        )
    }
}
