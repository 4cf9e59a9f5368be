//! Pulls of what a digest rumor announced: a node record or a KV write too
//! large to gossip, which the node fetches over TCP with an anti-entropy
//! exchange.
//!
//! A digest rumor costs one datagram to forge, so what it makes a node do
//! is bounded:
//!
//! - it is news once: seen again while its pull is pending, or after the
//!   pull gave up, it is not handed back to foca, so a digest that nobody
//!   can serve dies out after foca's retransmissions instead of circulating
//!   forever (foca restarts the count of every item handed back to it);
//! - the address in the payload is a hint, used only when it is a member
//!   the node holds active (see `Node`); otherwise the node asks the member
//!   that gossiped the rumor, or any active member;
//! - at most [`MAX_ATTEMPTS`] pulls per digest, [`BACKOFF_TICKS`] apart,
//!   then it gives up (periodic anti-entropy still fetches it if anyone
//!   holds it) and remembers that for [`FORGET_AFTER_TICKS`];
//! - at most [`MAX_PENDING`] digests are tracked; past that, new ones are
//!   not news and wait for periodic anti-entropy.
//!
//! Time is counted in ticks of [`PULL_TICK`], delivered by the node's
//! `Pulls` timer, so that nothing here reads a clock.

use std::net::SocketAddr;
use std::time::Duration;

use foca::Invalidates;

use crate::rumor::RumorKey;

/// Pulls per digest before giving up.
pub const MAX_ATTEMPTS: u8 = 4;
/// Ticks to wait after attempt `n` (1-based) before the next one.
pub const BACKOFF_TICKS: [u32; MAX_ATTEMPTS as usize - 1] = [2, 4, 8];
/// How long a digest that could not be pulled stays "not news", in ticks.
pub const FORGET_AFTER_TICKS: u32 = 300;
/// Digests tracked at once (pending or given up).
pub const MAX_PENDING: usize = 256;
/// One tick.
pub const PULL_TICK: Duration = Duration::from_secs(1);

/// Where a pull may go: the payload's hint and the member that gossiped
/// the digest to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PullSource {
    /// The address the payload names (the writer or the record's owner).
    pub hint: SocketAddr,
    /// The member foca received the rumor from.
    pub sender: SocketAddr,
    /// 0 for the first pull, 1 for the first retry, ...
    pub attempt: u8,
}

#[derive(Debug)]
struct Pending {
    key: RumorKey,
    hint: SocketAddr,
    sender: SocketAddr,
    /// Pulls made so far; `MAX_ATTEMPTS` once given up.
    attempts: u8,
    /// Ticks until the next pull (or, given up, until it is forgotten).
    wait: u32,
}

/// The digests this node is pulling or gave up on.
#[derive(Debug, Default)]
pub struct PendingPulls {
    pending: Vec<Pending>,
    /// Pulls to start now (first attempts), taken by the node.
    due: Vec<PullSource>,
}

impl PendingPulls {
    /// A digest rumor announced `key`, which we lack. Returns whether it is
    /// news (a pull starts, and foca should spread the rumor on): false
    /// when the same or a newer version of it is already tracked, or when
    /// too many are.
    pub fn offer(&mut self, key: RumorKey, hint: SocketAddr, sender: SocketAddr) -> bool {
        if let Some(known) = self.pending.iter_mut().find(|p| p.key.same_subject(&key)) {
            if known.key.invalidates(&key) {
                return false;
            }
            // A newer version: pull again from scratch.
            *known = Pending {
                key,
                hint,
                sender,
                attempts: 1,
                wait: BACKOFF_TICKS[0],
            };
        } else {
            if self.pending.len() >= MAX_PENDING {
                return false;
            }
            self.pending.push(Pending {
                key,
                hint,
                sender,
                attempts: 1,
                wait: BACKOFF_TICKS[0],
            });
        }
        self.due.push(PullSource {
            hint,
            sender,
            attempt: 0,
        });
        true
    }

    /// Pulls to start now.
    pub fn take_due(&mut self) -> Vec<PullSource> {
        std::mem::take(&mut self.due)
    }

    /// Whether anything is tracked (the node keeps its tick timer running).
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// How many digests are tracked.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// One tick passed: drops what is no longer `wanted` (it arrived), and
    /// returns the retries that are due; gives up after [`MAX_ATTEMPTS`].
    pub fn tick(&mut self, wanted: impl Fn(&RumorKey) -> bool) -> Vec<PullSource> {
        let mut due = Vec::new();
        self.pending.retain_mut(|pull| {
            let given_up = pull.attempts >= MAX_ATTEMPTS;
            if !given_up && !wanted(&pull.key) {
                return false;
            }
            pull.wait = pull.wait.saturating_sub(1);
            if pull.wait > 0 {
                return true;
            }
            if given_up {
                return false;
            }
            due.push(PullSource {
                hint: pull.hint,
                sender: pull.sender,
                attempt: pull.attempts,
            });
            pull.attempts += 1;
            pull.wait = if pull.attempts >= MAX_ATTEMPTS {
                FORGET_AFTER_TICKS
            } else {
                BACKOFF_TICKS[usize::from(pull.attempts) - 1]
            };
            true
        });
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, time: u64) -> RumorKey {
        RumorKey::Kv {
            key: key.into(),
            order: (time, "w".into()),
        }
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 7946))
    }

    #[test]
    fn a_digest_is_news_once_and_pulled_a_bounded_number_of_times() {
        let mut pulls = PendingPulls::default();
        assert!(pulls.offer(kv("k", 5), addr(9), addr(1)));
        assert_eq!(pulls.take_due().len(), 1, "the first pull starts at once");
        // Re-received, from anyone, in any version not newer: not news.
        assert!(!pulls.offer(kv("k", 5), addr(9), addr(2)));
        assert!(!pulls.offer(kv("k", 4), addr(9), addr(2)));
        assert!(pulls.take_due().is_empty());

        let mut attempts = 1;
        for _ in 0..FORGET_AFTER_TICKS + 100 {
            attempts += pulls.tick(|_| true).len();
            if !pulls.is_empty() {
                assert!(!pulls.offer(kv("k", 5), addr(9), addr(1)));
            }
        }
        assert_eq!(attempts, usize::from(MAX_ATTEMPTS));
        assert!(pulls.is_empty(), "forgotten after a while");
    }

    #[test]
    fn a_newer_version_is_news_and_an_arrival_ends_the_pull() {
        let mut pulls = PendingPulls::default();
        assert!(pulls.offer(kv("k", 5), addr(9), addr(1)));
        assert!(pulls.offer(kv("k", 6), addr(9), addr(1)));
        assert_eq!(pulls.take_due().len(), 2);
        assert_eq!(pulls.len(), 1);
        assert!(pulls.tick(|_| false).is_empty());
        assert!(pulls.is_empty());
    }

    #[test]
    fn the_number_tracked_is_bounded() {
        let mut pulls = PendingPulls::default();
        let news = (0..MAX_PENDING as u64 * 2)
            .filter(|&i| pulls.offer(kv(&format!("k{i}"), 1), addr(9), addr(1)))
            .count();
        assert_eq!(news, MAX_PENDING);
        assert_eq!(pulls.take_due().len(), MAX_PENDING);
    }
}
