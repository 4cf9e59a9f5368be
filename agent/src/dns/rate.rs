//! Response rate limiting of UDP answers, as BIND's RRL: a UDP source
//! address can be forged, so an agent that answers anyone could be made
//! to send large answers (an SRV of 200 instances with EDNS is ~87 times
//! its query) at a victim. Past `dns.rate_limit` answers in one second to
//! a client prefix (/24 for IPv4, /56 for IPv6, BIND's defaults: a victim
//! is a network, and one host of it can't be told from another), every
//! second query is dropped and the other answered with an empty reply with
//! TC set ("slip"): a real client retries over TCP, which can't be forged
//! and is not limited; a victim gets nothing larger than the query.
//!
//! Owned by the UDP loop: no locking.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Prefixes remembered. Past this, those not seen in the current second
/// are forgotten (one sweep a second at most: a flood of forged sources
/// must not make every query walk the table); when all were seen, a new
/// prefix is slipped at once (the table can't grow, and a real client
/// still gets TC and retries over TCP).
const MAX_TRACKED: usize = 16_384;

/// What to do with one UDP query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Answer,
    /// Answer empty with TC set.
    Slip,
    Drop,
}

/// Answers counted per client prefix in one-second windows.
#[derive(Debug)]
pub struct RateLimit {
    per_second: u32,
    started: Instant,
    /// Prefix -> (window, answers in it, queries past the limit in it).
    windows: HashMap<u128, (u64, u32, u32)>,
    /// The window of the last sweep of the full table.
    swept: Option<u64>,
    /// Sweeps made (for the tests).
    sweeps: u64,
}

impl RateLimit {
    /// `per_second` 0 answers everything.
    pub fn new(per_second: u32, started: Instant) -> Self {
        Self {
            per_second,
            started,
            windows: HashMap::new(),
            swept: None,
            sweeps: 0,
        }
    }

    /// Whether to answer a query from `client` at `now`.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> Verdict {
        if self.per_second == 0 {
            return Verdict::Answer;
        }
        let window = now.saturating_duration_since(self.started).as_secs();
        let key = prefix(client);
        if self.windows.len() >= MAX_TRACKED && !self.windows.contains_key(&key) {
            if self.swept != Some(window) {
                self.swept = Some(window);
                self.sweeps += 1;
                self.windows.retain(|_, (seen, _, _)| *seen == window);
            }
            if self.windows.len() >= MAX_TRACKED {
                return Verdict::Slip;
            }
        }
        let (seen, answered, over) = self.windows.entry(key).or_insert((window, 0, 0));
        if *seen != window {
            (*seen, *answered, *over) = (window, 0, 0);
        }
        if *answered < self.per_second {
            *answered += 1;
            return Verdict::Answer;
        }
        *over = over.wrapping_add(1);
        if *over % 2 == 1 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// The client's prefix as one number: /24 of IPv4, /56 of IPv6 (IPv4
/// mapped into IPv6 counts as IPv4).
fn prefix(client: IpAddr) -> u128 {
    match client.to_canonical() {
        IpAddr::V4(ip) => u128::from(u32::from(ip) & 0xffff_ff00),
        IpAddr::V6(ip) => (u128::from(ip) & (u128::MAX << 72)) | 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn past_the_limit_answers_alternate_slip_and_drop_per_prefix_and_second() {
        let start = Instant::now();
        let mut limit = RateLimit::new(3, start);
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..7).map(|_| limit.check(client, start)).collect();
        use Verdict::*;
        assert_eq!(verdicts, [Answer, Answer, Answer, Slip, Drop, Slip, Drop]);
        // Same /24: limited too; another /24 is not.
        assert_eq!(limit.check("192.0.2.99".parse().unwrap(), start), Slip);
        assert_eq!(limit.check("192.0.3.1".parse().unwrap(), start), Answer);
        // The next second starts afresh.
        let later = start + Duration::from_millis(1001);
        assert_eq!(limit.check(client, later), Answer);
        // Off answers everything.
        let mut off = RateLimit::new(0, start);
        assert!((0..1000).all(|_| off.check(client, start) == Answer));
    }

    #[test]
    fn the_table_stays_bounded_under_forged_sources() {
        let start = Instant::now();
        let mut limit = RateLimit::new(1, start);
        for n in 0..(MAX_TRACKED as u32 + 10) {
            let ip = IpAddr::V4((n << 8).into());
            limit.check(ip, start);
        }
        assert!(limit.windows.len() <= MAX_TRACKED);
        // Found in review: past the table's size, every new prefix walked
        // the whole table and was dropped. Now the table is swept once in
        // that second, and new prefixes are slipped (TC: a real client
        // retries over TCP).
        for n in 0..1000u32 {
            let ip = IpAddr::V4(((n + 100_000) << 8).into());
            assert_eq!(limit.check(ip, start), Verdict::Slip);
        }
        assert_eq!(limit.sweeps, 1);
        // Once the second is over, old prefixes make room.
        let later = start + Duration::from_secs(2);
        assert_eq!(
            limit.check("198.51.100.1".parse().unwrap(), later),
            Verdict::Answer
        );
        assert!(limit.windows.len() <= MAX_TRACKED);
    }
}
