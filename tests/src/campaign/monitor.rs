//! Invariant (c): no healthy agent is ever reported failed, by anyone.
//!
//! A thread polls `/v1/agent/members` on every running, unfrozen agent
//! every 500 ms and keeps what each saw. Afterwards each poll round is
//! checked: an agent that is *healthy* must not be `failed` in the view of
//! any agent that could reach it. One such report is a violation.
//!
//! *Healthy*: not killed (or crashed, or restarted between phases), not
//! frozen, not on the minority side of a partition, at any time from the
//! start of such a fault to the end of its grace window. Lossy links and
//! hostile API load don't make an agent unhealthy: an agent behind them
//! still answers its probes, and one that doesn't was falsely accused.
//!
//! *Could reach it*: an observer that was on the other side of a partition
//! from the agent (in either direction, the majority side included) at any
//! time from the start of the partition to the end of its grace window
//! doesn't count: it could not tell the agent from a dead one. Every other
//! observer counts, whether or not it was faulted itself: a false
//! declaration spreads, whoever made it first.
//!
//! The grace window ([`Timing::grace`], per fault, from the timings in
//! force when the fault began) is cut short once every agent polled sees
//! the agent plainly `alive` again, but is never shorter than [`SETTLE`]
//! (5 s): after that the cluster agrees it is back, and a later failure
//! report is a real false alarm.
//!
//! [`Timing::grace`]: super::timing::Timing::grace
//! [`SETTLE`]: super::SETTLE

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use super::client::call;
use super::{AGENTS, Impairment, Partition, Shared};
use crate::campaign::Load;

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
                if let Some(view) = members(*addr) {
                    views.push((observer, view));
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

/// One agent's `/v1/agent/members`, if it answers within 1.5 s.
pub fn members(addr: SocketAddr) -> Option<View> {
    match call(
        "GET",
        addr,
        "/v1/agent/members",
        None,
        Duration::from_millis(1500),
    ) {
        Ok((200, body)) => Some(parse_view(&body)),
        _ => None,
    }
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
pub fn status_of<'a>(view: &'a View, name: &str) -> Option<&'a str> {
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
    /// (round, observer, agent) triples where an observer that could reach
    /// a healthy agent reported it failed: each is a violation (grouped
    /// into one per agent and run of consecutive polls).
    pub false_reports: u64,
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
fn windows(rounds: &[Round], impairments: &[Impairment], settle: Duration) -> Vec<Window> {
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
                recovered.map_or(end + fault.grace, |at| at.min(end + fault.grace))
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

/// Checks every round against the faults that were injected; `loads`
/// (hostile API load) only annotate the findings.
pub fn check_rounds(
    rounds: &[Round],
    impairments: &[Impairment],
    partitions: &[Partition],
    loads: &[Load],
    settle: Duration,
) -> MembershipReport {
    let mut report = MembershipReport::default();
    let windows = windows(rounds, impairments, settle);
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
                        partition.separated(observer, target, round.start, round.end)
                    })
                })
                .collect();
            if impaired(&windows, target, round.start, round.end) {
                report.excluded += 1;
                if reporters.len() >= majority {
                    report.faulted_seen_failed += 1;
                }
                close(open, target, loads, &mut report.violations);
                continue;
            }
            report.checked += 1;
            report.false_reports += reporters.len() as u64;
            if reporters.is_empty() {
                close(open, target, loads, &mut report.violations);
                continue;
            }
            let finding = open.get_or_insert(Finding {
                first: round.start,
                last: round.end,
                polls: 0,
                most: 0,
                reporters: Vec::new(),
            });
            finding.last = round.end;
            finding.polls += 1;
            finding.most = finding.most.max(reporters.len());
            for reporter in reporters {
                if !finding.reporters.contains(&reporter) {
                    finding.reporters.push(reporter);
                }
            }
        }
    }
    for (target, finding) in open.iter_mut().enumerate() {
        close(finding, target, loads, &mut report.violations);
    }
    report
}

/// A healthy agent reported failed in consecutive polls.
#[derive(Clone, Debug)]
struct Finding {
    first: Duration,
    last: Duration,
    polls: usize,
    /// The most observers reporting it in one poll.
    most: usize,
    reporters: Vec<usize>,
}

fn close(
    finding: &mut Option<Finding>,
    target: usize,
    loads: &[Load],
    violations: &mut Vec<String>,
) {
    let Some(finding) = finding.take() else {
        return;
    };
    // Hostile load on anyone around then, since it is the likeliest cause.
    let around: Vec<String> = loads
        .iter()
        .filter(|load| {
            load.start <= finding.last
                && load
                    .end
                    .is_none_or(|end| end + Duration::from_secs(15) >= finding.first)
        })
        .map(|load| {
            format!(
                "{} on node-{} from +{:.3}s",
                load.kind,
                load.agent,
                load.start.as_secs_f64()
            )
        })
        .collect();
    violations.push(format!(
        "(c) node-{target} was healthy (no fault on it for the grace window) but was reported \
         failed from +{:.3}s to +{:.3}s ({} polls, by up to {} agents at once; reporters: {}){}",
        finding.first.as_secs_f64(),
        finding.last.as_secs_f64(),
        finding.polls,
        finding.most,
        finding
            .reporters
            .iter()
            .map(|o| format!("node-{o}"))
            .collect::<Vec<_>>()
            .join(", "),
        if around.is_empty() {
            String::new()
        } else {
            format!("; hostile load then: {}", around.join(", "))
        }
    ));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Round, Seen, check_rounds};
    use crate::campaign::{Impairment, Partition};

    /// A round in which every agent sees the `failed` ones (but itself)
    /// failed and the rest alive.
    fn round(at: u64, failed: &[&str]) -> Round {
        let view = |observer: usize| -> Vec<Seen> {
            (0..5)
                .map(|i| {
                    let name = format!("node-{i}");
                    let failed = i != observer && failed.contains(&name.as_str());
                    Seen {
                        name,
                        status: if failed { "failed" } else { "alive" }.into(),
                        generation: 1,
                    }
                })
                .collect()
        };
        Round {
            start: Duration::from_secs(at),
            end: Duration::from_secs(at),
            views: (0..5).map(|o| (o, view(o))).collect(),
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
        let report = check_rounds(&rounds, &[], &[], &[], settle);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        let paused = Impairment {
            agent: 2,
            kind: "pause",
            start: Duration::from_secs(1),
            end: Some(Duration::from_secs(5)),
            grace,
        };
        let report = check_rounds(&rounds, std::slice::from_ref(&paused), &[], &[], settle);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(report.excluded, 2);
        // Observers cut off from node-2 don't count: here all of them.
        let partition = Partition {
            minority: vec![2],
            start: Duration::from_secs(2),
            end: Some(Duration::from_secs(4)),
            grace,
        };
        let report = check_rounds(&rounds, &[], &[partition], &[], settle);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        // Seen plainly alive by all 6 s after the pause: the grace ends
        // there, and the failure reports at 12 s and 13 s count.
        let mut seen_back = vec![
            round(11, &[]),
            round(12, &["node-2"]),
            round(13, &["node-2"]),
        ];
        seen_back[0].start = Duration::from_secs(11);
        let report = check_rounds(&seen_back, &[paused], &[], &[], settle);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
    }

    #[test]
    fn one_observer_reporting_a_healthy_agent_failed_is_a_violation() {
        let settle = Duration::from_secs(5);
        let mut lone = round(10, &[]);
        lone.views[3].1[1].status = "failed".into();
        let rounds = [round(9, &[]), lone, round(11, &[])];
        let report = check_rounds(&rounds, &[], &[], &[], settle);
        assert_eq!(report.false_reports, 1);
        assert_eq!(report.violations.len(), 1, "{:?}", report.violations);
        assert!(
            report.violations[0].contains("node-1") && report.violations[0].contains("node-3"),
            "{:?}",
            report.violations
        );
        // Unless the observer was on the other side of a partition from it
        // recently (here node-3 alone, cut off until 8 s: the grace runs).
        let partition = Partition {
            minority: vec![3],
            start: Duration::from_secs(1),
            end: Some(Duration::from_secs(8)),
            grace: Duration::from_secs(15),
        };
        let report = check_rounds(&rounds, &[], &[partition], &[], settle);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
    }
}
