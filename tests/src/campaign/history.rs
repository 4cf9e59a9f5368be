//! The history of every operation the campaign sent: to which agent, what,
//! the answer, and when (offsets from the campaign's start, plus the wall
//! clock of that start so they can be matched with the agents' logs).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    KvPut,
    /// `PUT /v1/kv/key?cas=N` after reading the key's ModifyIndex.
    KvCas,
    KvDelete,
    FlagPut,
    FlagDelete,
    Register,
    Deregister,
    TtlPass,
    /// `GET /v1/kv/key`: a read, checked by [`super::reads`].
    KvGet,
}

/// How an operation changes its target, if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Writes the operation's marker (a KV value, a flag, a registration).
    Write,
    /// Removes the target.
    Remove,
    /// Changes nothing the invariants look at.
    None,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::KvPut => "kv_put",
            OpKind::KvCas => "kv_cas",
            OpKind::KvDelete => "kv_delete",
            OpKind::FlagPut => "flag_put",
            OpKind::FlagDelete => "flag_delete",
            OpKind::Register => "register",
            OpKind::Deregister => "deregister",
            OpKind::TtlPass => "ttl_pass",
            OpKind::KvGet => "kv_get",
        }
    }

    pub fn effect(self) -> Effect {
        match self {
            OpKind::KvPut | OpKind::KvCas | OpKind::FlagPut | OpKind::Register => Effect::Write,
            OpKind::KvDelete | OpKind::FlagDelete | OpKind::Deregister => Effect::Remove,
            OpKind::TtlPass | OpKind::KvGet => Effect::None,
        }
    }

    /// A KV write or delete: these take part in the read checks and in
    /// the rule for answers of `false`.
    pub fn is_kv_write(self) -> bool {
        matches!(self, OpKind::KvPut | OpKind::KvCas | OpKind::KvDelete)
    }

    /// A write of the KV store, flags included (a flag is a KV key,
    /// `_shoal/flags/<name>`): what can supersede another write of the
    /// same key (rule (e)).
    pub fn writes_the_store(self) -> bool {
        self.is_kv_write() || matches!(self, OpKind::FlagPut | OpKind::FlagDelete)
    }
}

/// What a read saw: the marker of the value (`op-<id>`, or whatever text
/// was stored), or `None` for a key that was absent (404).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub value: Option<String>,
    /// When the read's answer came (the read was sent at the op's `issued`).
    pub at: Duration,
}

/// What the answer says about the operation's effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Acknowledged: it happened (`true`, or 200 where there is no body).
    Applied,
    /// It surely did not happen: `false`, a 4xx, or a refused connection.
    NotApplied,
    /// No usable answer (timeout, reset, 5xx): it may have happened, now
    /// or later (a frozen agent acts on a request when it resumes).
    Unknown,
}

/// One operation and its answer.
#[derive(Clone, Debug)]
pub struct Op {
    pub id: u64,
    pub worker: usize,
    pub agent: usize,
    pub kind: OpKind,
    /// The KV key (flags: their KV key), or `service:<node>/<id>`.
    pub target: String,
    /// What a write leaves behind to recognise it: `op-<id>` as the KV
    /// value, the flag's description, or a service tag.
    pub marker: String,
    /// When the request was sent and when the answer came, from the start.
    pub issued: Duration,
    pub done: Duration,
    pub outcome: Outcome,
    pub answer: String,
    /// The write was answered `200 false` (a CAS that lost, or a write a
    /// newer one superseded): judged by [`super::answers`].
    pub said_false: bool,
    /// A read's answer (a `KvGet`, or the index read a `KvCas` starts
    /// with), when the agent answered 200 or 404.
    pub observed: Option<Observed>,
}

/// Every operation of one campaign, shared by the workers.
pub struct History {
    pub start: Instant,
    pub start_wall: SystemTime,
    next_id: AtomicU64,
    ops: Mutex<Vec<Op>>,
}

impl History {
    pub fn new(start: Instant) -> History {
        History {
            start,
            start_wall: SystemTime::now() - start.elapsed(),
            next_id: AtomicU64::new(1),
            ops: Mutex::new(Vec::new()),
        }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().expect("history lock").push(op);
    }

    /// Every operation, in the order they were issued.
    pub fn ops(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().expect("history lock").clone();
        ops.sort_by_key(|op| (op.issued, op.id));
        ops
    }

    /// Counts by kind, and by outcome (of the writes: reads are counted
    /// by [`super::reads`]).
    pub fn counts(&self) -> (BTreeMap<&'static str, u64>, BTreeMap<Outcome, u64>) {
        let mut by_kind = BTreeMap::new();
        let mut by_outcome = BTreeMap::new();
        for op in self.ops.lock().expect("history lock").iter() {
            *by_kind.entry(op.kind.name()).or_default() += 1;
            if op.kind != OpKind::KvGet {
                *by_outcome.entry(op.outcome).or_default() += 1;
            }
        }
        (by_kind, by_outcome)
    }

    /// One line per operation, for the record kept with a failing seed.
    pub fn describe(&self, op: &Op) -> String {
        let seen = match &op.observed {
            None => String::new(),
            Some(Observed { value, at }) => format!(
                " [read +{:.3}s: {}]",
                at.as_secs_f64(),
                value.as_deref().unwrap_or("absent")
            ),
        };
        format!(
            "#{} +{:.3}s..+{:.3}s ({}) w{} node-{} {} {} {} -> {:?} ({}){seen}",
            op.id,
            op.issued.as_secs_f64(),
            op.done.as_secs_f64(),
            wall_clock(self.start_wall + op.issued),
            op.worker,
            op.agent,
            op.kind.name(),
            op.target,
            op.marker,
            op.outcome,
            op.answer
        )
    }
}

/// `HH:MM:SS.mmm` UTC, as the agents' logs print times.
pub fn wall_clock(time: SystemTime) -> String {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since_epoch.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        since_epoch.subsec_millis()
    )
}
