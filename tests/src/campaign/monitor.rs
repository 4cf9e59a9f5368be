//! Invariant (c): no healthy agent is ever reported failed by a majority.
//!
//! A thread polls `/v1/agent/members` on every running, unfrozen agent
//! every 500 ms and keeps what each saw. Afterwards each poll round is
//! checked: an agent that was not killed, frozen or on the minority side of
//! a partition recently must not be `failed` in the views of a majority
//! (3 of 5) of the agents. An observer that was on the other side of a
//! partition from the agent recently doesn't count: it could not reach it.
//!
//! "Recently" is a grace window after the fault ended ([`GRACE`], 15 s),
//! cut short once every agent polled sees the agent plainly `alive` again,
//! but never shorter than [`SETTLE`] (5 s): after that the cluster agrees
//! it is back, and a later failure report is a real false alarm.
//!
//! [`GRACE`]: super::GRACE
//! [`SETTLE`]: super::SETTLE

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use super::client::call;
use super::{AGENTS, Impairment, Partition, Shared};

/// One member as an agent reported it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub name: String,
    /// `StatusText`: alive, suspect, leaving, left or failed.
    pub status: String,
    pub generation: u64,
}

/// What one agent reported.
pub type View = Vec<Seen>;

/// One sweep over the agents.
#[derive(Clone, Debug)]
pub struct Round {
    pub start: Duration,
    pub end: Duration,
    /// `(observer, what it saw)` for the agents that answered.
    pub views: Vec<(usize, View)>,
}

/// Polls until `shared.stop_monitor` is set; returns every round.
pub fn spawn_monitor(addrs: Vec<SocketAddr>, shared: Arc<Shared>) -> JoinHandle<Vec<Round>> {
    std::thread::spawn(move || {
        let mut rounds = Vec::new();
        while !shared.stop_monitor.load(Ordering::Relaxed) {
            let start = shared.now();
            let mut views = Vec::new();
            for (observer, addr) in addrs.iter().enumerate() {
                {
                    let state = shared.state();
                    if state.down[observer] || state.paused[observer] {
                        continue;
                    }
                }
                let timeout = Duration::from_millis(1500);
                if let Ok((200, body)) = call("GET", *addr, "/v1/agent/members", None, timeout) {
                    views.push((observer, parse_view(&body)));
                }
            }
            let end = shared.now();
            rounds.push(Round { start, end, views });
            let next = start + Duration::from_millis(500);
            std::thread::sleep(next.saturating_sub(shared.now()));
        }
        rounds
    })
}

fn parse_view(body: &serde_json::Value) -> View {
    body.as_array()
        .into_iter()
        .flatten()
        .map(|member| Seen {
            name: member["Name"].as_str().unwrap_or_default().to_string(),
            status: member["StatusText"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            generation: member["Generation"].as_u64().unwrap_or_default(),
        })
        .collect()
}

/// The status of `name` in a view: its newest generation's.
fn status_of<'a>(view: &'a View, name: &str) -> Option<&'a str> {
    view.iter()
        .filter(|seen| seen.name == name)
        .max_by_key(|seen| seen.generation)
        .map(|seen| seen.status.as_str())
}

/// The outcome of checking every round.
#[derive(Debug, Default)]
pub struct MembershipReport {
    /// (round, agent) pairs checked: the agent counted as healthy.
    pub checked: u64,
    /// (round, agent) pairs skipped: the agent was recently faulted.
    pub excluded: u64,
    /// Single reports of a healthy agent as failed by a healthy observer
    /// (not a violation alone; a sign of false suspicion).
    pub lone_false_reports: u64,
    /// (round, agent) pairs where a faulted agent was seen failed by a
    /// majority: the faults were real and the detector saw them.
    pub faulted_seen_failed: u64,
    pub violations: Vec<String>,
}

/// When an agent counts as faulted: from a fault's start to the end of
/// its grace window.
struct Window {
    agent: usize,
    from: Duration,
    until: Option<Duration>,
}

/// The windows of every fault, each cut short at the first round (at least
/// `settle` after the fault) in which every observer polled sees the agent
/// plainly alive.
fn windows(
    rounds: &[Round],
    impairments: &[Impairment],
    grace: Duration,
    settle: Duration,
) -> Vec<Window> {
    let majority = AGENTS / 2 + 1;
    impairments
        .iter()
        .map(|fault| {
            let name = format!("node-{}", fault.agent);
            let until = fault.end.map(|end| {
                let recovered = rounds
                    .iter()
                    .filter(|round| round.start >= end + settle)
                    .find(|round| {
                        round.views.len() >= majority
                            && round
                                .views
                                .iter()
                                .all(|(_, view)| status_of(view, &name) == Some("alive"))
                    })
                    .map(|round| round.end);
                recovered.map_or(end + grace, |at| at.min(end + grace))
            });
            Window {
                agent: fault.agent,
                from: fault.start,
                until,
            }
        })
        .collect()
}

/// Whether `agent` counted as faulted at any time in `[from, to]`.
fn impaired(windows: &[Window], agent: usize, from: Duration, to: Duration) -> bool {
    windows.iter().any(|window| {
        window.agent == agent && window.from <= to && window.until.is_none_or(|until| until >= from)
    })
}

/// Checks every round against the faults that were injected.
pub fn check_rounds(
    rounds: &[Round],
    impairments: &[Impairment],
    partitions: &[Partition],
    grace: Duration,
    settle: Duration,
) -> MembershipReport {
    let mut report = MembershipReport::default();
    let windows = windows(rounds, impairments, grace, settle);
    // Consecutive rounds with the same finding make one violation.
    let mut open: Vec<Option<Finding>> = vec![None; AGENTS];
    let majority = AGENTS / 2 + 1;
    for round in rounds {
        for (target, open) in open.iter_mut().enumerate() {
            let name = format!("node-{target}");
            let reporters: Vec<usize> = round
                .views
                .iter()
                .filter(|(_, view)| status_of(view, &name) == Some("failed"))
                .map(|(observer, _)| *observer)
                .filter(|&observer| {
                    !partitions.iter().any(|partition| {
                        partition.separated(observer, target, round.start, round.end, grace)
                    })
                })
                .collect();
            if impaired(&windows, target, round.start, round.end) {
                report.excluded += 1;
                if reporters.len() >= majority {
                    report.faulted_seen_failed += 1;
                }
                close(open, target, &mut report.violations);
                continue;
            }
            report.checked += 1;
            let healthy_reporters = reporters
                .iter()
                .filter(|&&o| !impaired(&windows, o, round.start, round.end))
                .count();
            report.lone_false_reports += healthy_reporters as u64;
            if reporters.len() >= majority {
                let finding = open.get_or_insert(Finding {
                    first: round.start,
                    last: round.end,
                    polls: 0,
                    reporters,
                });
                finding.last = round.end;
                finding.polls += 1;
            } else {
                close(open, target, &mut report.violations);
            }
        }
    }
    for (target, finding) in open.iter_mut().enumerate() {
        close(finding, target, &mut report.violations);
    }
    report
}

/// A healthy agent seen failed by a majority in consecutive polls.
#[derive(Clone, Debug)]
struct Finding {
    first: Duration,
    last: Duration,
    polls: usize,
    reporters: Vec<usize>,
}

fn close(finding: &mut Option<Finding>, target: usize, violations: &mut Vec<String>) {
    if let Some(finding) = finding.take() {
        violations.push(format!(
            "(c) node-{target} was healthy (no fault on it for the grace window) but a majority \
             reported it failed from +{:.3}s to +{:.3}s ({} polls; first reporters: {})",
            finding.first.as_secs_f64(),
            finding.last.as_secs_f64(),
            finding.polls,
            finding
                .reporters
                .iter()
                .map(|o| format!("node-{o}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Round, Seen, check_rounds};
    use crate::campaign::{Impairment, Partition};

    fn round(at: u64, failed: &[&str]) -> Round {
        let view: Vec<Seen> = (0..5)
            .map(|i| {
                let name = format!("node-{i}");
                let failed = failed.contains(&name.as_str());
                Seen {
                    name,
                    status: if failed { "failed" } else { "alive" }.into(),
                    generation: 1,
                }
            })
            .collect();
        Round {
            start: Duration::from_secs(at),
            end: Duration::from_secs(at),
            views: (0..5).map(|o| (o, view.clone())).collect(),
        }
    }

    #[test]
    fn a_healthy_agent_seen_failed_by_all_is_a_violation_unless_recently_faulted() {
        let (grace, settle) = (Duration::from_secs(15), Duration::from_secs(5));
        let rounds = [
            round(10, &["node-2"]),
            round(11, &["node-2"]),
            round(40, &[]),
        ];
        let report = check_rounds(&rounds, &[], &[], grace, settle);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        let paused = Impairment {
            agent: 2,
            kind: "pause",
            start: Duration::from_secs(1),
            end: Some(Duration::from_secs(5)),
        };
        let report = check_rounds(&rounds, std::slice::from_ref(&paused), &[], grace, settle);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(report.excluded, 2);
        // Three observers cut off from node-2 don't count; two remain.
        let partition = Partition {
            minority: vec![0, 1, 3],
            start: Duration::from_secs(2),
            end: Some(Duration::from_secs(4)),
        };
        let report = check_rounds(&rounds, &[], &[partition], grace, settle);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        // Seen plainly alive by all 6 s after the pause: the grace ends
        // there, and the failure reports at 10 s and 11 s count.
        let mut seen_back = vec![
            round(11, &[]),
            round(12, &["node-2"]),
            round(13, &["node-2"]),
        ];
        seen_back[0].start = Duration::from_secs(11);
        let report = check_rounds(&seen_back, &[paused], &[], grace, settle);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    }
}
