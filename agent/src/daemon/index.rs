//! `X-Consul-Index` that never goes back, not even across a restart.
//!
//! Consul clients (Prometheus, py-consul, consul-template) keep the last
//! index they saw and block with `?index=N` until the agent's index passes
//! N. An agent that started again at 1 left them waiting their whole
//! `wait` with stale data. So an agent starts at
//!
//! `max(persisted ceiling, unix seconds << 20)`
//!
//! - **the clock term**: between two starts `t0 < t1`, the previous run
//!   could only have passed `t1 << 20` by making more than 2^20 (about a
//!   million) changes a second on average. It also covers a data dir that
//!   was wiped. `2^20 × unix seconds` is about 1.9 × 10^15 today: exact in
//!   the JSON numbers (doubles) some clients parse indexes into until the
//!   year 2242.
//! - **the persisted ceiling** covers the rest (a clock set back, a burst
//!   of changes): the agent writes `index + RESERVE` to the data dir
//!   before its index gets there, like a sequence that hands out numbers
//!   in blocks, so an index it has answered with is never above what is
//!   on disk. It writes again when its index is within half a reserve of
//!   the ceiling: about once per 500,000 changes, off the core loop.
//!
//! The KV store's own index (`ModifyIndex`, `CreateIndex`) is raised to
//! the start before anything is restored into it, so writes of this run,
//! entries written ahead before a crash included, get indexes no earlier
//! run gave out; and `X-Consul-Index` follows the KV's index whenever it
//! is ahead ([`IndexClock::advance`]).

use std::time::{SystemTime, UNIX_EPOCH};

/// How far ahead of the index the persisted ceiling is kept.
pub const RESERVE: u64 = 1 << 20;

/// The agent's index and the ceiling persisted for it.
#[derive(Debug)]
pub struct IndexClock {
    current: u64,
    ceiling: u64,
}

impl IndexClock {
    /// The first index of this start (see the module docs), and the
    /// ceiling to persist before answering with it.
    pub fn start(persisted_ceiling: u64, unix_seconds: u64) -> Self {
        let current = persisted_ceiling
            .max(unix_seconds.saturating_mul(RESERVE))
            .max(1);
        Self {
            current,
            ceiling: current.saturating_add(RESERVE),
        }
    }

    /// [`IndexClock::start`] with the system clock.
    pub fn start_now(persisted_ceiling: u64) -> Self {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        Self::start(persisted_ceiling, seconds)
    }

    pub fn current(&self) -> u64 {
        self.current
    }

    /// The ceiling to persist.
    pub fn ceiling(&self) -> u64 {
        self.ceiling
    }

    /// Moves to the next index, and at least to `at_least` (the KV's
    /// index, so `X-Consul-Index` is never below a `ModifyIndex` it answers
    /// with). Returns a new ceiling when it is time to persist one.
    pub fn advance(&mut self, at_least: u64) -> Option<u64> {
        self.current = self.current.saturating_add(1).max(at_least);
        if self.current.saturating_add(RESERVE / 2) < self.ceiling {
            return None;
        }
        self.ceiling = self.current.saturating_add(RESERVE);
        Some(self.ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_starts_above_everything_the_previous_run_answered() {
        // First start: from the clock.
        const NOW: u64 = 1_700_000_000;
        let mut first = IndexClock::start(0, NOW);
        assert_eq!(first.current(), NOW << 20);
        let mut persisted = first.ceiling();
        // A burst far beyond a million changes a second.
        for _ in 0..3 * RESERVE {
            if let Some(ceiling) = first.advance(0) {
                persisted = ceiling;
            }
        }
        let last = first.current();
        assert!(
            last <= persisted,
            "answered {last} above the ceiling {persisted}"
        );
        // Restarted one second later, and with a clock set back a day.
        for seconds in [NOW + 1, NOW - 86_400] {
            let again = IndexClock::start(persisted, seconds);
            assert!(again.current() > last, "{} after {last}", again.current());
        }
        // A wiped data dir a minute later: the clock alone suffices at
        // fewer than a million changes a second.
        assert!(IndexClock::start(0, NOW + 60).current() > last);
    }

    #[test]
    fn the_index_follows_the_kv_and_never_goes_back() {
        let mut clock = IndexClock::start(0, 10);
        let before = clock.current();
        clock.advance(0);
        assert_eq!(clock.current(), before + 1);
        clock.advance(before + 100);
        assert_eq!(clock.current(), before + 100);
        clock.advance(5);
        assert_eq!(clock.current(), before + 101);
    }
}
