//! Member lines: what changed in the membership table between two
//! published snapshots, as the lines an operator reads (joined, suspected,
//! refuted, leaving, left, failed, reaped), each with the member's name and
//! address as fields.
//!
//! Levels: a failed member is a `WARN` (someone should look); a joined,
//! leaving, left or reaped member is `INFO`. A suspicion and its
//! refutation are `INFO` too: under packet loss or a busy host most
//! suspicions are refuted within seconds, so a `WARN` would teach operators
//! to ignore warnings, while at `DEBUG` the first sign of a flapping member
//! would be hidden at the default level. memberlist logs its suspicions at
//! `INFO` as well.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_protocol::{MemberStatus, MemberView};
use tracing::Level;

/// How long a joined member's line waits for its record (its name),
/// which anti-entropy brings within a second or two; after that it is
/// logged under its address.
pub const NAME_WAIT: Duration = Duration::from_secs(5);

/// What happened to a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChange {
    Joined,
    Suspected,
    Refuted,
    Leaving,
    Left,
    Failed,
    /// Dropped from the member list (after `remove_down_after`).
    Reaped,
}

impl MemberChange {
    pub fn level(self) -> Level {
        match self {
            MemberChange::Failed => Level::WARN,
            _ => Level::INFO,
        }
    }

    /// The line's text, about the member `who` ("name (address)").
    pub fn message(self, who: &str) -> String {
        match self {
            MemberChange::Joined => format!("member {who} joined"),
            MemberChange::Suspected => format!(
                "member {who} is suspected: it missed its probes, and is declared failed unless it refutes in time"
            ),
            MemberChange::Refuted => format!("member {who} refuted the suspicion: alive"),
            MemberChange::Leaving => format!("member {who} is leaving"),
            MemberChange::Left => format!("member {who} left"),
            MemberChange::Failed => {
                format!("member {who} failed: no answer to probes, the cluster declared it down")
            }
            MemberChange::Reaped => format!("member {who} reaped: removed from the member list"),
        }
    }

    /// The `event` field: one word per change, for filters.
    pub fn event(self) -> &'static str {
        match self {
            MemberChange::Joined => "joined",
            MemberChange::Suspected => "suspected",
            MemberChange::Refuted => "refuted",
            MemberChange::Leaving => "leaving",
            MemberChange::Left => "left",
            MemberChange::Failed => "failed",
            MemberChange::Reaped => "reaped",
        }
    }
}

/// One member line to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEvent {
    pub change: MemberChange,
    pub name: String,
    pub addr: SocketAddr,
    /// The status it had before (for reaped members: the last one).
    pub was: Option<MemberStatus>,
}

struct Known {
    status: MemberStatus,
    name: String,
    /// A joined member whose name is not known yet: since when.
    unnamed_since: Option<Instant>,
}

/// The membership table as last logged, keyed by address.
#[derive(Default)]
pub struct MemberDiff {
    known: HashMap<SocketAddr, Known>,
    local: Option<SocketAddr>,
}

impl MemberDiff {
    /// The lines that lead from the last table to `members` (ourselves
    /// excluded: our own joins and leaves have lines of their own).
    pub fn observe(
        &mut self,
        members: &[MemberView],
        local: SocketAddr,
        now: Instant,
    ) -> Vec<MemberEvent> {
        self.local = Some(local);
        let mut events = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        for member in members {
            let addr = member.id.addr;
            if addr == local {
                continue;
            }
            seen.insert(addr);
            let status = member.status;
            let named = member.record.is_some();
            let name = member.name();
            let previous = self.known.get(&addr);
            let was = previous.map(|known| known.status);
            let change = match (was, status) {
                (
                    None | Some(MemberStatus::Failed | MemberStatus::Left),
                    MemberStatus::Alive | MemberStatus::Suspect,
                ) => Some(MemberChange::Joined),
                (Some(MemberStatus::Alive), MemberStatus::Suspect) => Some(MemberChange::Suspected),
                (Some(MemberStatus::Suspect), MemberStatus::Alive) => Some(MemberChange::Refuted),
                (Some(before), MemberStatus::Leaving) if before != MemberStatus::Leaving => {
                    Some(MemberChange::Leaving)
                }
                (Some(before), MemberStatus::Left) if before != MemberStatus::Left => {
                    Some(MemberChange::Left)
                }
                (Some(before), MemberStatus::Failed) if before != MemberStatus::Failed => {
                    Some(MemberChange::Failed)
                }
                // First seen already down (a join's feed of old members):
                // nothing happened while we watched; or no change.
                _ => None,
            };
            // A joined member is logged with its name once its record is
            // here, or under its address after `NAME_WAIT`.
            let pending = previous.and_then(|known| known.unnamed_since);
            match change {
                Some(MemberChange::Joined) if !named => {
                    self.known.insert(
                        addr,
                        Known {
                            status,
                            name: name.clone(),
                            unnamed_since: Some(now),
                        },
                    );
                    continue;
                }
                None if pending.is_some() => {
                    let waited =
                        pending.is_some_and(|since| now.duration_since(since) >= NAME_WAIT);
                    if named || waited {
                        events.push(MemberEvent {
                            change: MemberChange::Joined,
                            name: name.clone(),
                            addr,
                            was: None,
                        });
                        self.known.insert(
                            addr,
                            Known {
                                status,
                                name,
                                unnamed_since: None,
                            },
                        );
                    }
                    continue;
                }
                _ => {}
            }
            if let Some(change) = change {
                events.push(MemberEvent {
                    change,
                    name: name.clone(),
                    addr,
                    was,
                });
            }
            let name = if named {
                name
            } else {
                previous.map(|known| known.name.clone()).unwrap_or(name)
            };
            self.known.insert(
                addr,
                Known {
                    status,
                    name,
                    unnamed_since: None,
                },
            );
        }
        let reaped: Vec<SocketAddr> = self
            .known
            .keys()
            .filter(|addr| !seen.contains(*addr))
            .copied()
            .collect();
        for addr in reaped {
            // A member gone before its name came was never logged as joined.
            if let Some(known) = self.known.remove(&addr)
                && known.unnamed_since.is_none()
            {
                events.push(MemberEvent {
                    change: MemberChange::Reaped,
                    name: known.name,
                    addr,
                    was: Some(known.status),
                });
            }
        }
        events
    }

    /// Whether a joined member still waits for its name (the caller
    /// looks again after [`NAME_WAIT`] even if nothing changes).
    pub fn waiting_for_names(&self) -> bool {
        self.known
            .values()
            .any(|known| known.unnamed_since.is_some())
    }
}

/// At most `per_second` member lines a second; the rest are counted and
/// summed up in one line when the second is over (see [`LineBudget::flush`]).
pub struct LineBudget {
    per_second: u32,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
    /// The most severe level among the suppressed lines.
    suppressed_level: Level,
}

impl LineBudget {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window_start: None,
            used: 0,
            suppressed: 0,
            suppressed_level: Level::INFO,
        }
    }

    /// Whether a line at `level` may be logged now; if not, it is counted.
    pub fn allow(&mut self, level: Level, now: Instant) -> bool {
        let fresh = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if fresh && self.suppressed == 0 {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used < self.per_second && self.suppressed == 0 {
            self.used += 1;
            return true;
        }
        self.suppressed += 1;
        // Level: ERROR < WARN < INFO in tracing's order (more verbose is greater).
        if level < self.suppressed_level {
            self.suppressed_level = level;
        }
        false
    }

    /// Once the second of a suppression is over: how many lines were
    /// suppressed and their most severe level, and a fresh window.
    pub fn flush(&mut self, now: Instant) -> Option<(u64, Level)> {
        let over = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if self.suppressed == 0 || !over {
            return None;
        }
        let summary = (self.suppressed, self.suppressed_level);
        self.suppressed = 0;
        self.suppressed_level = Level::INFO;
        self.window_start = Some(now);
        self.used = 0;
        Some(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::{NodeId, NodeRecord};

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 7946))
    }

    fn member(last: u8, status: MemberStatus, named: bool) -> MemberView {
        let id = NodeId {
            addr: addr(last),
            generation: 1,
        };
        MemberView {
            id,
            status,
            record: named.then(|| NodeRecord::new(id, format!("node-{last}"))),
        }
    }

    fn changes(events: &[MemberEvent]) -> Vec<(MemberChange, String)> {
        events.iter().map(|e| (e.change, e.name.clone())).collect()
    }

    #[test]
    fn each_transition_is_one_line_with_name_and_address() {
        let mut diff = MemberDiff::default();
        let t = Instant::now();
        let me = addr(1);
        assert!(
            diff.observe(&[member(1, MemberStatus::Alive, true)], me, t)
                .is_empty()
        );
        let up = diff.observe(
            &[
                member(1, MemberStatus::Alive, true),
                member(2, MemberStatus::Alive, true),
            ],
            me,
            t,
        );
        assert_eq!(changes(&up), vec![(MemberChange::Joined, "node-2".into())]);
        assert_eq!(up[0].addr, addr(2));
        let steps = [
            (MemberStatus::Suspect, Some(MemberChange::Suspected)),
            (MemberStatus::Alive, Some(MemberChange::Refuted)),
            (MemberStatus::Alive, None),
            (MemberStatus::Failed, Some(MemberChange::Failed)),
            (MemberStatus::Alive, Some(MemberChange::Joined)),
            (MemberStatus::Leaving, Some(MemberChange::Leaving)),
            (MemberStatus::Left, Some(MemberChange::Left)),
        ];
        for (status, expected) in steps {
            let events = diff.observe(&[member(2, status, true)], me, t);
            assert_eq!(events.first().map(|e| e.change), expected, "to {status:?}");
        }
        let gone = diff.observe(&[], me, t);
        assert_eq!(
            changes(&gone),
            vec![(MemberChange::Reaped, "node-2".into())]
        );
        assert_eq!(gone[0].was, Some(MemberStatus::Left));
    }

    #[test]
    fn a_joined_member_waits_for_its_name_a_bounded_time() {
        let mut diff = MemberDiff::default();
        let t = Instant::now();
        let me = addr(1);
        assert!(
            diff.observe(&[member(2, MemberStatus::Alive, false)], me, t)
                .is_empty()
        );
        assert!(diff.waiting_for_names());
        let named = diff.observe(
            &[member(2, MemberStatus::Alive, true)],
            me,
            t + Duration::from_millis(300),
        );
        assert_eq!(
            changes(&named),
            vec![(MemberChange::Joined, "node-2".into())]
        );
        assert!(!diff.waiting_for_names());

        assert!(
            diff.observe(
                &[
                    member(2, MemberStatus::Alive, true),
                    member(3, MemberStatus::Alive, false)
                ],
                me,
                t
            )
            .is_empty()
        );
        let late = diff.observe(
            &[
                member(2, MemberStatus::Alive, true),
                member(3, MemberStatus::Alive, false),
            ],
            me,
            t + NAME_WAIT,
        );
        assert_eq!(
            changes(&late),
            vec![(MemberChange::Joined, addr(3).to_string())]
        );
    }

    #[test]
    fn members_already_down_in_a_join_feed_are_not_news() {
        let mut diff = MemberDiff::default();
        let events = diff.observe(
            &[
                member(2, MemberStatus::Failed, true),
                member(3, MemberStatus::Left, true),
            ],
            addr(1),
            Instant::now(),
        );
        assert!(events.is_empty());
    }

    #[test]
    fn the_budget_suppresses_past_its_rate_and_sums_up_with_the_worst_level() {
        let mut budget = LineBudget::new(3);
        let t = Instant::now();
        let allowed = (0..3).filter(|_| budget.allow(Level::INFO, t)).count();
        assert_eq!(allowed, 3);
        assert!(!budget.allow(Level::INFO, t));
        assert!(!budget.allow(Level::WARN, t + Duration::from_millis(10)));
        assert_eq!(
            budget.flush(t + Duration::from_millis(500)),
            None,
            "not before the second is over"
        );
        assert_eq!(
            budget.flush(t + Duration::from_secs(1)),
            Some((2, Level::WARN))
        );
        assert_eq!(budget.flush(t + Duration::from_secs(2)), None);
        assert!(budget.allow(Level::INFO, t + Duration::from_secs(1)));
    }
}
