//! A per-source-IP rate limit for anti-entropy exchanges accepted over TCP:
//! a peer that opens them faster than any honest agent would is closed and
//! counted, so it can't keep the gossip loop busy merging its data.
//!
//! An honest agent opens one exchange per `push_pull_interval` (jittered),
//! one when a member comes up, and one per large record it pulls: a burst
//! of [`BURST`] and [`PER_SECOND`] sustained leave room for all of that.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Exchanges one source IP may open at once after a quiet spell.
pub const BURST: f64 = 10.0;
/// Exchanges per second one source IP may open, sustained.
pub const PER_SECOND: f64 = 2.0;
/// Source IPs remembered; past this, those with a full bucket are
/// forgotten (they would be allowed anyway), so memory stays bounded.
const MAX_TRACKED: usize = 4096;

/// A token bucket per source IP. Owned by the accept loop: no locking.
#[derive(Debug, Default)]
pub struct PeerRateLimit {
    buckets: HashMap<IpAddr, (f64, Instant)>,
    /// Exchanges refused so far.
    pub refused: u64,
}

impl PeerRateLimit {
    /// Whether `ip` may open an exchange at `now`; takes a token if so.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&ip) {
            self.buckets.retain(|_, (tokens, last)| {
                *tokens + now.saturating_duration_since(*last).as_secs_f64() * PER_SECOND < BURST
            });
        }
        let (tokens, last) = self.buckets.entry(ip).or_insert((BURST, now));
        *tokens =
            (*tokens + now.saturating_duration_since(*last).as_secs_f64() * PER_SECOND).min(BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_holds_per_ip() {
        let mut limit = PeerRateLimit::default();
        let start = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let allowed = (0..100).filter(|_| limit.allow(a, start)).count();
        assert_eq!(allowed, BURST as usize);
        assert_eq!(limit.refused, 100 - BURST as u64);
        assert!(limit.allow(b, start), "another peer is not affected");
        // One second later, PER_SECOND more.
        let later = start + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| limit.allow(a, later)).count();
        assert_eq!(allowed, PER_SECOND as usize);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut limit = PeerRateLimit::default();
        let start = Instant::now();
        for i in 0..(MAX_TRACKED as u32 * 3) {
            let ip = IpAddr::from(i.to_be_bytes());
            limit.allow(ip, start + Duration::from_secs(u64::from(i)));
        }
        assert!(limit.buckets.len() <= MAX_TRACKED + 1);
    }
}
