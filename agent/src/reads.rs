//! What a reader read: which parts of the published snapshot (the
//! cluster, the KV store, the user events) an answer, a render or a watch
//! depends on, and whether a newer snapshot changed any of them.
//!
//! Every snapshot carries, for each part, the index at which that part last
//! changed ([`Indexes`]). A reader records the parts it read ([`Reads`]);
//! its result is stale once one of those indexes moved
//! ([`Reads::changed`]). Blocking queries wait on it, the lookup cache keeps
//! an answer with it ([`ReadAt`]), templates render again on it, watches run
//! their handler on it. Plain values: nothing here knows the snapshot.

/// A snapshot's indexes: at which each part last changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Indexes {
    /// Membership and node records (services, checks, tags).
    pub cluster: u64,
    /// The KV store (KV entries and flags).
    pub kv: u64,
    /// The user events this agent received.
    pub events: u64,
}

/// Which parts of the snapshot a reader read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// Members, services, checks: catalog and health endpoints, the
    /// templates' `service`, `services`, `nodes`, `flag`.
    pub cluster: bool,
    /// KV entries: KV and flag endpoints, the templates' `key`, `tree`,
    /// `flag`.
    pub kv: bool,
    /// The user events: `/v1/event/list`, `event` watches.
    pub events: bool,
}

impl Reads {
    pub const NOTHING: Reads = Reads {
        cluster: false,
        kv: false,
        events: false,
    };
    pub const CLUSTER: Reads = Reads {
        cluster: true,
        ..Reads::NOTHING
    };
    pub const KV: Reads = Reads {
        kv: true,
        ..Reads::NOTHING
    };
    pub const EVENTS: Reads = Reads {
        events: true,
        ..Reads::NOTHING
    };

    /// What either read.
    pub const fn and(self, other: Reads) -> Reads {
        Reads {
            cluster: self.cluster || other.cluster,
            kv: self.kv || other.kv,
            events: self.events || other.events,
        }
    }

    /// Whether a part read moved between `then` and `now`.
    pub fn changed(&self, then: &Indexes, now: &Indexes) -> bool {
        (self.cluster && then.cluster != now.cluster)
            || (self.kv && then.kv != now.kv)
            || (self.events && then.events != now.events)
    }

    /// These reads, made at `indexes`.
    pub fn at(self, indexes: Indexes) -> ReadAt {
        ReadAt {
            reads: self,
            at: indexes,
        }
    }

    /// For `/v1/agent/self`: `["cluster", "kv"]`.
    pub fn names(&self) -> Vec<&'static str> {
        [
            ("cluster", self.cluster),
            ("kv", self.kv),
            ("events", self.events),
        ]
        .into_iter()
        .filter_map(|(name, read)| read.then_some(name))
        .collect()
    }
}

/// What a result was computed from: the parts read, and the snapshot's
/// indexes then (the stamp of a cached answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadAt {
    pub reads: Reads,
    pub at: Indexes,
}

impl ReadAt {
    /// Whether the result is still what a snapshot at `now` gives.
    pub fn is_current(&self, now: &Indexes) -> bool {
        !self.reads.changed(&self.at, now)
    }

    /// Whether a part both read was read earlier here than in `newer`:
    /// then this result can never be current again once `newer` is.
    pub fn is_behind(&self, newer: &ReadAt) -> bool {
        let both = |mine: bool, theirs: bool| mine && theirs;
        (both(self.reads.cluster, newer.reads.cluster) && self.at.cluster < newer.at.cluster)
            || (both(self.reads.kv, newer.reads.kv) && self.at.kv < newer.at.kv)
            || (both(self.reads.events, newer.reads.events) && self.at.events < newer.at.events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THEN: Indexes = Indexes {
        cluster: 5,
        kv: 7,
        events: 2,
    };

    #[test]
    fn only_a_part_read_makes_a_change() {
        let kv_moved = Indexes { kv: 9, ..THEN };
        assert!(Reads::KV.changed(&THEN, &kv_moved));
        assert!(!Reads::CLUSTER.changed(&THEN, &kv_moved));
        assert!(!Reads::EVENTS.changed(&THEN, &kv_moved));
        assert!(Reads::CLUSTER.and(Reads::KV).changed(&THEN, &kv_moved));
        assert!(!Reads::NOTHING.changed(&THEN, &kv_moved));
        let events_moved = Indexes { events: 3, ..THEN };
        assert!(Reads::EVENTS.changed(&THEN, &events_moved));
        assert!(Reads::KV.at(THEN).is_current(&events_moved));
        assert!(!Reads::KV.at(THEN).is_current(&kv_moved));
        assert_eq!(Reads::CLUSTER.and(Reads::KV).names(), ["cluster", "kv"]);
    }

    #[test]
    fn a_result_is_behind_only_in_a_part_both_read() {
        let newer = Reads::KV.at(Indexes { kv: 9, ..THEN });
        assert!(Reads::KV.at(THEN).is_behind(&newer));
        assert!(Reads::KV.and(Reads::CLUSTER).at(THEN).is_behind(&newer));
        assert!(!Reads::CLUSTER.at(THEN).is_behind(&newer));
        assert!(!newer.is_behind(&Reads::KV.at(THEN)));
    }
}
