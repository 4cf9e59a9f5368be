//! What the agents said during a fault run: every agent's membership view
//! (polled), Shoal's own counters (Prometheus text) and Serf's log lines.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::task::JoinSet;

use crate::system::{Agent, Client, Status, System};

/// One line of a Serf agent's log (`-log-level=info`) that the fault run
/// counts. The strings are Serf 0.8.2's (memberlist's and serf's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerfLine {
    /// `[INFO] memberlist: Suspect X has failed, no acks received`: this
    /// agent's probe of X failed and it started a suspicion.
    Suspected(String),
    /// `[INFO] memberlist: Marking X as failed, suspect timeout reached (N
    /// peer confirmations)`: this agent's suspicion of X ran out.
    SuspicionTimedOut(String),
    /// `[INFO] serf: EventMemberFailed: X addr`: X went failed in this
    /// agent's view (by its own timer or a peer's dead message).
    MemberFailed(String),
    /// `[WARN] memberlist: Refuting a suspect message (from: Y)`.
    RefutedSuspect,
    /// `[WARN] memberlist: Refuting a dead message (from: Y)`: this agent
    /// learned that it had been declared dead.
    RefutedDead,
}

pub fn parse_serf_line(line: &str) -> Option<SerfLine> {
    let word_after = |marker: &str| -> Option<String> {
        let rest = &line[line.find(marker)? + marker.len()..];
        rest.split_whitespace().next().map(str::to_string)
    };
    if line.contains("Refuting a suspect message") {
        Some(SerfLine::RefutedSuspect)
    } else if line.contains(SERF_REFUTED_DEAD) {
        Some(SerfLine::RefutedDead)
    } else if line.contains("has failed, no acks received") {
        word_after("memberlist: Suspect ").map(SerfLine::Suspected)
    } else if line.contains("suspect timeout reached") {
        word_after("memberlist: Marking ").map(SerfLine::SuspicionTimedOut)
    } else {
        word_after("serf: EventMemberFailed: ").map(SerfLine::MemberFailed)
    }
}

/// Shoal's counters that the fault run reads, from one agent's
/// `/v1/agent/metrics?format=prometheus` (see docs/metrics.md).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ShoalCounters {
    /// `shoal_swim_probes_failed_total`: each starts a suspicion, like
    /// memberlist's "Suspect X has failed, no acks received".
    pub probes_failed: f64,
    /// `shoal_swim_suspicions_total`: members marked suspect, by own probe or gossip.
    pub suspicions: f64,
    pub refutations: f64,
    /// `shoal_gossip_members_down_total`: members this agent saw go down.
    pub members_down: f64,
}

impl ShoalCounters {
    pub fn parse(exposition: &str) -> Self {
        let mut counters = Self::default();
        for line in exposition.lines() {
            let Some((name, value)) = line.split_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            match name {
                "shoal_swim_probes_failed_total" => counters.probes_failed = value,
                "shoal_swim_suspicions_total" => counters.suspicions = value,
                "shoal_swim_refutations_total" => counters.refutations = value,
                "shoal_gossip_members_down_total" => counters.members_down = value,
                _ => {}
            }
        }
        counters
    }

    pub fn minus(self, before: Self) -> Self {
        Self {
            probes_failed: self.probes_failed - before.probes_failed,
            suspicions: self.suspicions - before.suspicions,
            refutations: self.refutations - before.refutations,
            members_down: self.members_down - before.members_down,
        }
    }
}

/// What memberlist logs (WARN) when it learns it was declared dead.
pub const SERF_REFUTED_DEAD: &str = "Refuting a dead message";

/// The line a Shoal agent logs (WARN) when it learns the cluster declared
/// it down and it rejoined under a new identity.
pub const SHOAL_DECLARED_DOWN: &str = "the cluster declared this node down";

/// Polls every agent's membership view; remembers, per observer, which
/// members it lists as failed, and every time one newly appears there.
pub struct Views {
    clients: Vec<Option<Client>>,
    index_by_name: HashMap<String, usize>,
    failed: Vec<HashSet<usize>>,
    /// `(observer, subject)`, once per new failed listing.
    pub declarations: Vec<(usize, usize)>,
}

/// A poll slower than this counts as no answer (a stopped agent answers
/// nothing until it is continued).
const POLL_TIMEOUT: Duration = Duration::from_millis(1500);

impl Views {
    pub fn new(system: &System, agents: &[Agent]) -> Self {
        Self {
            clients: agents.iter().map(|a| Some(system.client(a))).collect(),
            index_by_name: agents
                .iter()
                .enumerate()
                .map(|(i, a)| (a.name.clone(), i))
                .collect(),
            failed: vec![HashSet::new(); agents.len()],
            declarations: Vec::new(),
        }
    }

    /// Polls every view at once; returns how many agents listed every
    /// agent alive (convergence), and records new failed listings.
    pub async fn poll(&mut self, system: &System, agents: &[Agent]) -> usize {
        let mut polls = JoinSet::new();
        for (observer, slot) in self.clients.iter_mut().enumerate() {
            let mut client = slot
                .take()
                .unwrap_or_else(|| system.client(&agents[observer]));
            polls.spawn_local(async move {
                let members = tokio::time::timeout(POLL_TIMEOUT, client.members()).await;
                match members {
                    Ok(Ok(members)) => (observer, Some(client), Some(members)),
                    // A call cut off midway leaves a Serf RPC stream out of
                    // step: reconnect next time.
                    Ok(Err(_)) | Err(_) => (observer, None, None),
                }
            });
        }
        let mut all_alive = 0;
        while let Some(joined) = polls.join_next().await {
            let Ok((observer, client, members)) = joined else {
                continue;
            };
            self.clients[observer] = client;
            let Some(members) = members else { continue };
            let mut failed_now = HashSet::new();
            let mut alive = 0;
            for (name, status) in &members {
                let Some(&subject) = self.index_by_name.get(name) else {
                    continue;
                };
                match status {
                    // A member listed failed under any identity counts,
                    // even beside a newer alive one (Shoal's rejoin).
                    Status::Failed => {
                        failed_now.insert(subject);
                    }
                    Status::Alive => alive += 1,
                    Status::Other => {}
                }
            }
            for &subject in failed_now.difference(&self.failed[observer]) {
                self.declarations.push((observer, subject));
            }
            self.failed[observer] = failed_now;
            if alive >= agents.len() {
                all_alive += 1;
            }
        }
        all_alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serf_0_8_2s_log_lines_are_recognised() {
        let lines = [
            (
                "    2026/12/05 23:41:07 [INFO] memberlist: Suspect serf-7 has failed, no acks received",
                Some(SerfLine::Suspected("serf-7".into())),
            ),
            (
                "    2026/12/05 23:41:12 [INFO] memberlist: Marking serf-7 as failed, suspect timeout reached (2 peer confirmations)",
                Some(SerfLine::SuspicionTimedOut("serf-7".into())),
            ),
            (
                "    2026/12/05 23:41:12 [INFO] serf: EventMemberFailed: serf-7 127.120.0.8",
                Some(SerfLine::MemberFailed("serf-7".into())),
            ),
            (
                "    2026/12/05 23:41:08 [WARN] memberlist: Refuting a suspect message (from: serf-3)",
                Some(SerfLine::RefutedSuspect),
            ),
            (
                "    2026/12/05 23:41:13 [WARN] memberlist: Refuting a dead message (from: serf-3)",
                Some(SerfLine::RefutedDead),
            ),
            (
                "    2026/12/05 23:41:14 [INFO] serf: EventMemberJoin: serf-7 127.120.0.8",
                None,
            ),
            (
                "    2026/12/05 23:41:14 [DEBUG] memberlist: Failed ping: serf-7 (timeout reached)",
                None,
            ),
        ];
        for (line, expected) in lines {
            assert_eq!(parse_serf_line(line), expected, "{line}");
        }
    }

    #[test]
    fn shoal_counters_come_from_the_prometheus_text() {
        let text = "# HELP shoal_swim_probes_failed_total probes\n\
                    # TYPE shoal_swim_probes_failed_total counter\n\
                    shoal_swim_probes_failed_total 4\n\
                    shoal_swim_suspicions_total 9\n\
                    shoal_swim_refutations_total 2\n\
                    shoal_gossip_members_down_total 1\n\
                    shoal_members{status=\"alive\"} 20\n";
        let counters = ShoalCounters::parse(text);
        assert_eq!(
            counters,
            ShoalCounters {
                probes_failed: 4.0,
                suspicions: 9.0,
                refutations: 2.0,
                members_down: 1.0
            }
        );
        let before = ShoalCounters {
            probes_failed: 1.0,
            ..ShoalCounters::default()
        };
        assert_eq!(counters.minus(before).probes_failed, 3.0);
    }
}
