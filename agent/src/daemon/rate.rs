//! Per-source-IP limits on anti-entropy exchanges accepted over TCP:
//!
//! - [`PeerRateLimit`]: a peer that opens them faster than any honest agent
//!   would is closed and counted, so it can't keep the core loop busy
//!   merging its data. An honest agent opens one exchange per
//!   `push_pull_interval` (jittered), one when a member comes up, and a few
//!   per large record or KV write it pulls: a burst of [`BURST`] and
//!   [`PER_SECOND`] sustained leave room for all of that.
//! - [`PeerSlots`]: at most [`MAX_PER_PEER`] exchanges from one source IP
//!   at once, so one address can't hold every slot (an honest agent runs
//!   one or two with us at a time).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
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

/// Exchanges one source IP may hold open at once.
pub const MAX_PER_PEER: usize = 2;

/// How many exchanges each source IP holds open. Shared by the accept loop
/// and the tasks serving exchanges (a slot is given back when its
/// [`PeerSlot`] drops); the lock is held for one map update.
#[derive(Debug)]
pub struct PeerSlots {
    open: Mutex<HashMap<IpAddr, usize>>,
    /// Slots one source IP may hold.
    max: usize,
}

impl Default for PeerSlots {
    fn default() -> Self {
        Self::with_max(MAX_PER_PEER)
    }
}

/// One exchange's slot, given back on drop.
#[derive(Debug)]
pub struct PeerSlot {
    slots: Arc<PeerSlots>,
    ip: IpAddr,
}

impl PeerSlots {
    /// Slots of which one source IP may hold `max` at once.
    pub fn with_max(max: usize) -> Self {
        Self {
            open: Mutex::default(),
            max,
        }
    }

    /// A slot for one more exchange from `ip`, unless it holds the most
    /// ([`MAX_PER_PEER`] by default) already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut open = self.open.lock().expect("peer slots lock");
        let count = open.entry(ip).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("peer slots lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
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
    fn one_address_holds_a_bounded_number_of_slots() {
        let slots = Arc::new(PeerSlots::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held: Vec<PeerSlot> = (0..10).filter_map(|_| slots.take(a)).collect();
        assert_eq!(held.len(), MAX_PER_PEER);
        assert!(slots.take(b).is_some(), "another address is not affected");
        drop(held);
        assert!(slots.take(a).is_some(), "slots come back when dropped");
        assert!(slots.open.lock().unwrap().len() <= 1, "no leftovers");
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
