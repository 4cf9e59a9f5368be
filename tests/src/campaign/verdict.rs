//! Invariant (b): the state a key (or a registration) ended in must be one
//! that the acknowledged history allows.
//!
//! Shoal's KV is last-writer-wins on (HLC time, writer), and that order is
//! not visible through the API. What is checkable from real time alone: a
//! write W is *definitely superseded* when another acknowledged write or
//! delete of the same target was issued after W was acknowledged (all
//! agents share this host's clock, so the later one carries the larger
//! HLC time). The final state must come from a write or delete that is not
//! definitely superseded. An operation without a usable answer may still
//! take effect; it counts as settled only once its agent was killed (a
//! frozen agent acts on a request when it resumes), until then it can
//! never be superseded.

use std::time::Duration;

use super::history::{Effect, Op, Outcome};

/// A function giving, for an operation, the first time its agent was
/// killed at or after the operation was issued.
pub type KilledAfter<'a> = &'a dyn Fn(&Op) -> Option<Duration>;

/// When an operation's effect is settled: its acknowledgement, or for an
/// operation without a usable answer the first kill of its agent after it
/// was issued (until then a frozen agent may still act on it); `None`
/// while it may still take effect.
pub fn settled(op: &Op, killed_after: KilledAfter) -> Option<Duration> {
    match op.outcome {
        Outcome::Applied => Some(op.done),
        _ => killed_after(op),
    }
}

/// Whether `earlier` *definitely precedes* `later` in the KV's
/// last-writer-wins order: `earlier` was settled before `later` was sent.
/// All agents share this host's clock, so `later` carries the larger HLC
/// time wherever it is stamped. When neither precedes the other, they are
/// concurrent and either may win.
pub fn precedes(earlier: &Op, later: &Op, killed_after: KilledAfter) -> bool {
    settled(earlier, killed_after).is_some_and(|at| at < later.issued)
}

/// Checks the final state of one target (`Some(marker)` if present,
/// `None` if absent) against every operation on it. `killed_after(op)` is
/// the first time the op's agent was killed at or after the op was issued.
pub fn check_final(
    ops: &[&Op],
    final_marker: Option<&str>,
    killed_after: KilledAfter,
) -> Result<(), String> {
    let effective: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|op| op.kind.effect() != Effect::None && op.outcome != Outcome::NotApplied)
        .collect();
    let applied: Vec<&Op> = effective
        .iter()
        .copied()
        .filter(|op| op.outcome == Outcome::Applied)
        .collect();
    let superseders = |op: &Op| -> Vec<&Op> {
        applied
            .iter()
            .copied()
            .filter(|later| later.id != op.id && precedes(op, later, killed_after))
            .collect()
    };
    let candidates: Vec<&Op> = effective
        .iter()
        .copied()
        .filter(|op| superseders(op).is_empty())
        .collect();
    let allowed = match final_marker {
        None => {
            applied.is_empty()
                || candidates
                    .iter()
                    .any(|op| op.kind.effect() == Effect::Remove)
        }
        Some(marker) => candidates
            .iter()
            .any(|op| op.kind.effect() == Effect::Write && op.marker == marker),
    };
    if allowed {
        return Ok(());
    }
    let list = |ops: &[&Op]| {
        ops.iter()
            .map(|op| {
                format!(
                    "#{} {} on node-{} issued +{:.3}s answered +{:.3}s {:?}",
                    op.id,
                    op.kind.name(),
                    op.agent,
                    op.issued.as_secs_f64(),
                    op.done.as_secs_f64(),
                    op.outcome
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut message = match final_marker {
        None => "ended absent, but every acknowledged delete was superseded".to_string(),
        Some(marker) => format!("ended as {marker}"),
    };
    if let Some(marker) = final_marker {
        match ops.iter().find(|op| op.marker == marker) {
            None => message.push_str(", which no operation of the campaign wrote"),
            Some(op) if op.outcome == Outcome::NotApplied => message.push_str(&format!(
                ", written by #{} which answered that it was not applied ({})",
                op.id, op.answer
            )),
            Some(op) => {
                let later = superseders(op);
                message.push_str(&format!(
                    ", written by #{} (answered +{:.3}s) but definitely superseded by: {}",
                    op.id,
                    op.done.as_secs_f64(),
                    list(&later)
                ));
                if later.iter().all(|d| d.kind.effect() == Effect::Remove) {
                    message.push_str(
                        " [only deletes superseded it: did a delete answer true without \
                         writing a tombstone?]",
                    );
                }
            }
        }
    }
    message.push_str(&format!(
        "; allowed final states came from: [{}]",
        list(&candidates)
    ));
    Err(message)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::check_final;
    use crate::campaign::history::{Op, OpKind, Outcome};

    fn op(id: u64, kind: OpKind, issued: u64, done: u64, outcome: Outcome) -> Op {
        Op {
            id,
            worker: 0,
            agent: 0,
            kind,
            target: "k".into(),
            marker: format!("op-{id}"),
            issued: Duration::from_millis(issued),
            done: Duration::from_millis(done),
            outcome,
            answer: String::new(),
            said_false: false,
            observed: None,
        }
    }

    fn never(_: &Op) -> Option<Duration> {
        None
    }

    #[test]
    fn the_last_acknowledged_write_is_allowed_and_an_overwritten_one_is_not() {
        let ops = [
            op(1, OpKind::KvPut, 0, 10, Outcome::Applied),
            op(2, OpKind::KvPut, 20, 30, Outcome::Applied),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        assert!(check_final(&refs, Some("op-2"), &never).is_ok());
        let error = check_final(&refs, Some("op-1"), &never).unwrap_err();
        assert!(error.contains("superseded by: #2"), "{error}");
        assert!(check_final(&refs, None, &never).is_err());
    }

    #[test]
    fn concurrent_writes_may_end_either_way() {
        let ops = [
            op(1, OpKind::KvPut, 0, 50, Outcome::Applied),
            op(2, OpKind::KvDelete, 10, 40, Outcome::Applied),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        assert!(check_final(&refs, Some("op-1"), &never).is_ok());
        assert!(check_final(&refs, None, &never).is_ok());
    }

    #[test]
    fn a_refused_cas_never_counts_and_an_unanswered_write_counts_until_a_kill() {
        let ops = [
            op(1, OpKind::KvPut, 0, 10, Outcome::Applied),
            op(2, OpKind::KvCas, 20, 30, Outcome::NotApplied),
            op(3, OpKind::KvPut, 40, 2040, Outcome::Unknown),
            op(4, OpKind::KvPut, 3000, 3010, Outcome::Applied),
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        assert!(check_final(&refs, Some("op-2"), &never).is_err());
        assert!(check_final(&refs, Some("op-3"), &never).is_ok());
        let killed = |_: &Op| Some(Duration::from_millis(2500));
        assert!(check_final(&refs, Some("op-3"), &killed).is_err());
        assert!(check_final(&refs, Some("op-4"), &killed).is_ok());
        assert!(check_final(&refs, None, &never).is_err());
    }

    #[test]
    fn a_key_nobody_acknowledged_may_be_absent() {
        let ops = [op(1, OpKind::KvPut, 0, 10, Outcome::Unknown)];
        let refs: Vec<&Op> = ops.iter().collect();
        assert!(check_final(&refs, None, &never).is_ok());
        assert!(check_final(&refs, Some("op-1"), &never).is_ok());
        assert!(check_final(&[], None, &never).is_ok());
        assert!(check_final(&[], Some("op-9"), &never).is_err());
    }
}
