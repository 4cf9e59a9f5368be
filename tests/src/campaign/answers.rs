//! Rule (e): a KV write answered `200 false` must be justified by a
//! concurrent newer write; otherwise the agent refused a write it had no
//! reason to refuse, and the client was told something untrue. Flag
//! writes are KV writes (of `_shoal/flags/<name>`) for this rule.
//!
//! An agent answers `false` in two cases (`agent/src/kv/mod.rs`):
//!
//! - **Superseded** (a PUT or DELETE, with or without `?cas=`): between
//!   stamping the write and applying it, the agent received a write to the
//!   same key with a newer (HLC, writer) order. Justified when another
//!   client's KV write X of the same key could be that write: X is not
//!   refused (acknowledged or without a usable answer), X was sent before
//!   the refused write P was answered (`X.issued < P.done`, else it cannot
//!   have reached P's agent in time), and X does not definitely precede P
//!   ([`precedes`]: X settled before P was sent), else X is older and
//!   cannot supersede it.
//! - **CAS mismatch** (`?cas=N`): the key's ModifyIndex on that agent was
//!   no longer N (or another local write of the key was in flight). The
//!   campaign read N on the same agent just before; the index moves only
//!   when that agent applies a write newer than the one the read saw.
//!   Justified when another KV write X of the same key could be that
//!   write: X is not refused, X was sent before the CAS was answered,
//!   X is not the write the read saw, and X does not definitely precede
//!   the write the read saw (if the read saw the key absent, any such X).
//!   A write acknowledged elsewhere before the read can still arrive after
//!   it: that is why the CAS itself is not the reference point.
//!
//! X may come from any client, the refused write's own included: a
//! client's write acknowledged by another agent just before its CAS can
//! reach the CAS's agent between the index read and the CAS (the campaign
//! saw it, seed 1002). For a plain write the rule excludes the client's own
//! earlier writes by itself: they precede it.

use super::history::{Op, OpKind, Outcome};
use super::verdict::{KilledAfter, precedes};

/// What the rule found.
#[derive(Debug, Default)]
pub struct FalseAnswers {
    pub justified: u64,
    pub unjustified: u64,
    pub violations: Vec<String>,
}

/// Judges every `false` answer in `ops` (all operations, in any order).
pub fn check_false_answers(
    ops: &[Op],
    killed_after: KilledAfter,
    describe: &dyn Fn(&Op) -> String,
) -> FalseAnswers {
    let mut found = FalseAnswers::default();
    for refused in ops.iter().filter(|op| op.said_false) {
        let justifiers: Vec<&Op> = ops
            .iter()
            .filter(|other| justifies(other, refused, ops, killed_after))
            .collect();
        if !justifiers.is_empty() {
            found.justified += 1;
            continue;
        }
        found.unjustified += 1;
        let rule = if refused.kind == OpKind::KvCas {
            "no write sent before the answer could have moved the index the CAS read"
        } else {
            "no write sent before the answer could be newer"
        };
        let before: Vec<&Op> = ops
            .iter()
            .filter(|op| op.target == refused.target && op.kind.writes_the_store())
            .filter(|op| op.issued <= refused.done)
            .collect();
        let nearby: Vec<String> = before[before.len().saturating_sub(12)..]
            .iter()
            .map(|op| format!("    {}", describe(op)))
            .collect();
        found.violations.push(format!(
            "(e) #{} {} of {} on node-{} was answered false, but {rule}:\n    {}\n  the last writes \
             of the key until then:\n{}",
            refused.id,
            refused.kind.name(),
            refused.target,
            refused.agent,
            describe(refused),
            nearby.join("\n")
        ));
    }
    found
}

/// Whether `other` could be the concurrent newer write that made the
/// agent answer `refused` with `false` (the rules in the module's doc).
fn justifies(other: &Op, refused: &Op, ops: &[Op], killed_after: KilledAfter) -> bool {
    if other.id == refused.id
        || other.target != refused.target
        || !other.kind.writes_the_store()
        || other.outcome == Outcome::NotApplied
        || other.issued >= refused.done
    {
        return false;
    }
    let superseded = !precedes(other, refused, killed_after);
    if refused.kind != OpKind::KvCas {
        return superseded;
    }
    let seen = refused.observed.as_ref().and_then(|o| o.value.as_deref());
    let moved_index = match seen.and_then(|marker| ops.iter().find(|op| op.marker == marker)) {
        // The read saw the key absent (or a value no operation wrote):
        // any write may have come since.
        None => true,
        Some(read_write) => other.id != read_write.id && !precedes(other, read_write, killed_after),
    };
    superseded || moved_index
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::check_false_answers;
    use crate::campaign::history::{Observed, Op, OpKind, Outcome};

    fn op(id: u64, worker: usize, kind: OpKind, span: (u64, u64), outcome: Outcome) -> Op {
        Op {
            id,
            worker,
            agent: 0,
            kind,
            target: "k".into(),
            marker: format!("op-{id}"),
            issued: Duration::from_millis(span.0),
            done: Duration::from_millis(span.1),
            outcome,
            answer: String::new(),
            said_false: false,
            observed: None,
        }
    }

    fn refused(id: u64, kind: OpKind, span: (u64, u64), saw: Option<&str>) -> Op {
        let mut op = op(id, 0, kind, span, Outcome::NotApplied);
        op.said_false = true;
        op.observed = Some(Observed {
            value: saw.map(str::to_string),
            at: Duration::from_millis(span.0 + 5),
        });
        op
    }

    fn never(_: &Op) -> Option<Duration> {
        None
    }

    fn judge(ops: &[Op]) -> (u64, u64) {
        let found = check_false_answers(ops, &never, &|op| format!("#{}", op.id));
        (found.justified, found.unjustified)
    }

    #[test]
    fn a_put_refused_without_any_concurrent_write_is_a_violation() {
        let ops = [
            op(1, 1, OpKind::KvPut, (0, 10), Outcome::Applied),
            refused(2, OpKind::KvPut, (100, 110), None),
        ];
        assert_eq!(judge(&ops), (0, 1));
    }

    #[test]
    fn a_put_refused_while_another_client_wrote_is_justified() {
        let ops = [
            op(1, 1, OpKind::KvPut, (95, 130), Outcome::Applied),
            refused(2, OpKind::KvPut, (100, 110), None),
        ];
        assert_eq!(judge(&ops), (1, 0));
        // A write sent only after the answer cannot explain it.
        let late = [
            op(1, 1, OpKind::KvPut, (120, 130), Outcome::Applied),
            refused(2, OpKind::KvPut, (100, 110), None),
        ];
        assert_eq!(judge(&late), (0, 1));
        // Nor can a refused one, nor the client's own earlier write.
        let own = [
            op(1, 0, OpKind::KvPut, (80, 90), Outcome::Applied),
            op(3, 1, OpKind::KvPut, (95, 130), Outcome::NotApplied),
            refused(2, OpKind::KvPut, (100, 110), None),
        ];
        assert_eq!(judge(&own), (0, 1));
    }

    /// Flags live in the KV store: a flag delete answered false because a
    /// concurrent flag delete of the same flag landed first (campaign seed
    /// 868099237) is justified by it, as a KV delete would be.
    #[test]
    fn a_flag_write_refused_while_another_client_wrote_the_flag_is_justified() {
        let ops = [
            op(1, 1, OpKind::FlagPut, (0, 10), Outcome::Applied),
            refused(2, OpKind::FlagDelete, (20, 80), None),
            op(3, 2, OpKind::FlagDelete, (30, 50), Outcome::Applied),
        ];
        assert_eq!(judge(&ops), (1, 0));
        let alone = [
            op(1, 1, OpKind::FlagPut, (0, 10), Outcome::Applied),
            refused(2, OpKind::FlagDelete, (20, 80), None),
        ];
        assert_eq!(judge(&alone), (0, 1));
    }

    #[test]
    fn a_cas_may_lose_to_a_write_acknowledged_elsewhere_before_its_read_arrived() {
        // #1 is what the read saw; #3 was acknowledged on another agent
        // before the CAS was sent but after #1: it may arrive in between.
        let ops = [
            op(1, 1, OpKind::KvPut, (0, 10), Outcome::Applied),
            op(3, 2, OpKind::KvPut, (20, 30), Outcome::Applied),
            refused(2, OpKind::KvCas, (40, 60), Some("op-1")),
        ];
        assert_eq!(judge(&ops), (1, 0));
        // The same holds when #3 is the same client's write (seed 1002).
        let mut own = ops.clone();
        own[1].worker = 0;
        assert_eq!(judge(&own), (1, 0));
        // If the read already saw #3, only older writes remain: unjustified.
        let ops = [
            op(1, 1, OpKind::KvPut, (0, 10), Outcome::Applied),
            op(3, 2, OpKind::KvPut, (20, 30), Outcome::Applied),
            refused(2, OpKind::KvCas, (40, 60), Some("op-3")),
        ];
        assert_eq!(judge(&ops), (0, 1));
    }
}
