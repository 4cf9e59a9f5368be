//! Rule (r): reads during the run. Every KV read the workers make (a
//! `GET`, or the index read a CAS starts with) is an observation by one
//! client (worker) on one agent, and two guarantees are checked:
//!
//! - **Read-your-writes on the acknowledging agent.** Let P be the client's
//!   last KV write (put, CAS or delete) of the key on that agent that was
//!   acknowledged before the read was sent. The read must see P (its
//!   value; absent for a delete) or a write X of the key that may be newer
//!   than P: X not refused, sent before the read was answered, and not
//!   definitely preceding P ([`precedes`]). Absent counts when such an X is
//!   a delete.
//! - **Monotonic reads per (client, agent, key).** When one read saw the
//!   value of write X1 and the client's next read of the key on the same
//!   agent saw the value of X2, X2 must not definitely precede X1; if it
//!   saw the key absent, some delete that does not definitely precede X1
//!   (sent before that read was answered) must explain it. A read that saw
//!   the key absent is no reference point: the agent may simply not have
//!   received anything yet.
//!
//! Besides, a read may only see values some operation wrote and that were
//! not refused (a write answered `false`, a 4xx or a refused connection
//! surely did not happen).

use std::collections::BTreeMap;

use super::history::{Effect, Op, Outcome};
use super::verdict::{KilledAfter, precedes};

/// What the rule found.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// Reads answered (200 or 404) during the run.
    pub observations: u64,
    /// Reads that followed an acknowledged write of the same client, key
    /// and agent.
    pub ryw_checked: u64,
    /// Reads that followed a read of a value by the same client, key and
    /// agent.
    pub monotonic_checked: u64,
    pub violations: Vec<String>,
}

/// Checks every read in `ops` (all operations, in issue order).
pub fn check_reads(
    ops: &[Op],
    killed_after: KilledAfter,
    describe: &dyn Fn(&Op) -> String,
) -> ReadReport {
    let mut report = ReadReport::default();
    let by_marker: BTreeMap<&str, &Op> = ops.iter().map(|op| (op.marker.as_str(), op)).collect();
    let by_target = {
        let mut map: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
        for op in ops.iter().filter(|op| op.kind.is_kv_write()) {
            map.entry(op.target.as_str()).or_default().push(op);
        }
        map
    };
    let mut violations = Vec::new();
    // The last value each (client, agent, key) read, and which op wrote it.
    let mut last_read: BTreeMap<(usize, usize, &str), (&Op, &Op)> = BTreeMap::new();
    for read in ops {
        let Some(observed) = &read.observed else {
            continue;
        };
        report.observations += 1;
        let writes: &[&Op] = by_target
            .get(read.target.as_str())
            .map_or(&[], Vec::as_slice);
        let mut fail = |what: String, related: &[&Op]| {
            let lines: Vec<String> = std::iter::once(read)
                .chain(related.iter().copied())
                .map(|op| format!("    {}", describe(op)))
                .collect();
            violations.push(format!(
                "(r) #{} read {} on node-{} (w{}): {what}\n{}",
                read.id,
                read.target,
                read.agent,
                read.worker,
                lines.join("\n")
            ));
        };
        // The write whose value the read saw (`None`: absent).
        let seen: Option<&Op> = match &observed.value {
            None => None,
            Some(marker) => match by_marker.get(marker.as_str()) {
                Some(&op) if op.kind.effect() == Effect::Write && op.target == read.target => {
                    if op.outcome == Outcome::NotApplied {
                        fail(
                            format!("saw {marker}, written by a write answered not applied"),
                            &[op],
                        );
                        continue;
                    }
                    Some(op)
                }
                _ => {
                    fail(
                        format!("saw `{marker}`, which no write of the key wrote"),
                        &[],
                    );
                    continue;
                }
            },
        };
        // Could `x` be what the read saw, given that it must not be older
        // than `reference`?
        let explains = |x: &Op, reference: &Op| {
            x.outcome != Outcome::NotApplied
                && x.issued < observed.at
                && (x.id == reference.id || !precedes(x, reference, killed_after))
        };
        let seen_ok = |reference: &Op| match seen {
            Some(x) => explains(x, reference),
            None => writes
                .iter()
                .any(|d| d.kind.effect() == Effect::Remove && explains(d, reference)),
        };
        let what_seen = || {
            observed
                .value
                .clone()
                .unwrap_or_else(|| "the key absent".into())
        };
        // Read-your-writes.
        let own_last = writes
            .iter()
            .copied()
            .filter(|w| {
                w.worker == read.worker
                    && w.agent == read.agent
                    && w.outcome == Outcome::Applied
                    && w.done < read.issued
            })
            .max_by_key(|w| w.done);
        if let Some(own) = own_last {
            report.ryw_checked += 1;
            if !seen_ok(own) {
                fail(
                    format!(
                        "read-your-writes: saw {} after this client's #{} was acknowledged by \
                         this agent (+{:.3}s), and that is older",
                        what_seen(),
                        own.id,
                        own.done.as_secs_f64()
                    ),
                    &seen.into_iter().chain([own]).collect::<Vec<_>>(),
                );
            }
        }
        // Monotonic reads.
        let key = (read.worker, read.agent, read.target.as_str());
        if let Some(&(previous_read, previous)) = last_read.get(&key) {
            report.monotonic_checked += 1;
            if !seen_ok(previous) {
                fail(
                    format!(
                        "monotonic reads: saw {} after #{} saw {} on this agent, which is newer",
                        what_seen(),
                        previous_read.id,
                        previous.marker
                    ),
                    &seen.into_iter().chain([previous]).collect::<Vec<_>>(),
                );
            }
        }
        if let Some(x) = seen {
            last_read.insert(key, (read, x));
        }
    }
    report.violations = violations;
    report
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::check_reads;
    use crate::campaign::history::{Observed, Op, OpKind, Outcome};

    fn op(id: u64, worker: usize, agent: usize, kind: OpKind, span: (u64, u64)) -> Op {
        Op {
            id,
            worker,
            agent,
            kind,
            target: "k".into(),
            marker: format!("op-{id}"),
            issued: Duration::from_millis(span.0),
            done: Duration::from_millis(span.1),
            outcome: Outcome::Applied,
            answer: String::new(),
            said_false: false,
            observed: None,
        }
    }

    fn read(id: u64, worker: usize, agent: usize, span: (u64, u64), saw: Option<u64>) -> Op {
        let mut op = op(id, worker, agent, OpKind::KvGet, span);
        op.marker = String::new();
        op.observed = Some(Observed {
            value: saw.map(|id| format!("op-{id}")),
            at: Duration::from_millis(span.1),
        });
        op
    }

    fn never(_: &Op) -> Option<Duration> {
        None
    }

    fn violations(ops: &[Op]) -> Vec<String> {
        check_reads(ops, &never, &|op| format!("#{}", op.id)).violations
    }

    #[test]
    fn a_read_on_the_acknowledging_agent_sees_the_write_or_a_newer_one() {
        let put = op(1, 0, 2, OpKind::KvPut, (0, 10));
        assert!(violations(&[put.clone(), read(2, 0, 2, (20, 25), Some(1))]).is_empty());
        // Absent after the acknowledged write: a lost write.
        let found = violations(&[put.clone(), read(2, 0, 2, (20, 25), None)]);
        assert!(found[0].contains("read-your-writes"), "{found:?}");
        // An older write seen instead: a violation too.
        let older = op(3, 1, 0, OpKind::KvPut, (0, 5));
        let mut before = older.clone();
        before.issued = Duration::ZERO;
        let put_after = op(1, 0, 2, OpKind::KvPut, (6, 10));
        let found = violations(&[before, put_after.clone(), read(2, 0, 2, (20, 25), Some(3))]);
        assert_eq!(found.len(), 1, "{found:?}");
        // A concurrent write of another client may be seen, and so may
        // its delete.
        let concurrent = op(4, 1, 0, OpKind::KvDelete, (8, 30));
        assert!(
            violations(&[put_after.clone(), concurrent, read(2, 0, 2, (20, 25), None)]).is_empty()
        );
        // On another agent, or by another client, nothing is promised.
        assert!(violations(&[put.clone(), read(2, 0, 3, (20, 25), None)]).is_empty());
        assert!(violations(&[put, read(2, 1, 2, (20, 25), None)]).is_empty());
    }

    #[test]
    fn reads_of_one_client_on_one_agent_never_go_back() {
        let first = op(1, 1, 0, OpKind::KvPut, (0, 10));
        let second = op(2, 1, 0, OpKind::KvPut, (20, 30));
        let forward = [
            first.clone(),
            second.clone(),
            read(3, 0, 4, (40, 45), Some(1)),
            read(4, 0, 4, (50, 55), Some(2)),
        ];
        assert!(violations(&forward).is_empty());
        let backward = [
            first.clone(),
            second.clone(),
            read(3, 0, 4, (40, 45), Some(2)),
            read(4, 0, 4, (50, 55), Some(1)),
        ];
        let found = violations(&backward);
        assert!(found[0].contains("monotonic"), "{found:?}");
        let vanished = [
            first,
            second,
            read(3, 0, 4, (40, 45), Some(2)),
            read(4, 0, 4, (50, 55), None),
        ];
        assert_eq!(violations(&vanished).len(), 1);
    }

    #[test]
    fn a_read_of_a_refused_or_unknown_value_is_a_violation() {
        let mut refused = op(1, 1, 0, OpKind::KvCas, (0, 10));
        refused.outcome = Outcome::NotApplied;
        assert_eq!(
            violations(&[refused, read(2, 0, 0, (20, 25), Some(1))]).len(),
            1
        );
        assert_eq!(violations(&[read(2, 0, 0, (20, 25), Some(7))]).len(), 1);
    }
}
