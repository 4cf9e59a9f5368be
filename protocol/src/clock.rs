//! The time the driver passes in, and the bounds it puts on what peers
//! claim.
//!
//! The core reads no clock: the agent (wall clock) and the simulator
//! (virtual clock) call `Node::set_clock` before each call into the node.
//! Times from peers are then bounded by `now + max_clock_drift`: a KV entry
//! written "in the future" would win every later write (an entry at
//! `u64::MAX` could never be replaced), and a record generation from the
//! future would hold its node name forever. uhlc refuses timestamps past
//! its own drift bound for the same reason.

use std::time::Duration;

/// Default bound on how far ahead of our clock a peer's times may be.
pub const DEFAULT_MAX_CLOCK_DRIFT: Duration = Duration::from_secs(30);

/// A duration since the Unix epoch as NTP64, the KV stores' time format:
/// seconds in the high 32 bits, the fraction in the low 32 (as uhlc).
/// Saturates instead of wrapping past the year 2106.
pub fn ntp64(since_epoch: Duration) -> u64 {
    let Ok(seconds) = u32::try_from(since_epoch.as_secs()) else {
        return u64::MAX;
    };
    let fraction = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (u64::from(seconds) << 32) | fraction
}

/// The current time as the driver last gave it, and the drift allowed to
/// peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Time since the Unix epoch; `None` until the driver sets it (no
    /// bounds are enforced then: every driver sets it, the agent and the
    /// simulator before every call).
    now: Option<Duration>,
    max_drift: Duration,
}

impl Clock {
    pub fn new(max_drift: Duration) -> Self {
        Self {
            now: None,
            max_drift,
        }
    }

    pub fn set(&mut self, now: Duration) {
        self.now = Some(now);
    }

    /// The current time, if the driver gave one.
    pub fn now(&self) -> Option<Duration> {
        self.now
    }

    /// The current time as NTP64, if known.
    pub fn now_ntp64(&self) -> Option<u64> {
        self.now.map(ntp64)
    }

    /// The latest KV write time accepted from a peer (NTP64).
    pub fn max_kv_time(&self) -> u64 {
        self.now
            .map_or(u64::MAX, |now| ntp64(now.saturating_add(self.max_drift)))
    }

    /// The largest record generation accepted from a peer: generations are
    /// Unix milliseconds at the agent's start (`persist::next_generation`).
    pub fn max_generation(&self) -> u64 {
        self.now.map_or(u64::MAX, |now| {
            u64::try_from(now.saturating_add(self.max_drift).as_millis()).unwrap_or(u64::MAX)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp64_matches_uhlc_layout_and_saturates() {
        assert_eq!(ntp64(Duration::from_secs(1)), 1 << 32);
        assert_eq!(ntp64(Duration::from_millis(1500)), (1 << 32) | (1 << 31));
        assert_eq!(
            ntp64(Duration::from_secs(u64::from(u32::MAX) + 1)),
            u64::MAX
        );
    }

    #[test]
    fn bounds_follow_the_clock_and_the_drift() {
        let mut clock = Clock::new(Duration::from_secs(30));
        assert_eq!(clock.max_kv_time(), u64::MAX, "unset: unbounded");
        clock.set(Duration::from_secs(1_000));
        assert_eq!(clock.max_kv_time(), ntp64(Duration::from_secs(1_030)));
        assert_eq!(clock.max_generation(), 1_030_000);
    }
}
