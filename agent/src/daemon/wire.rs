//! Wire versions at the agent's edges: the range this agent speaks, and
//! the log line for a peer whose packets it can't read (once per peer per
//! [`REFUSAL_LOG_INTERVAL`], never one per packet).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shoal_protocol::envelope::{WireRange, packet_version};

/// How often the refusal of one peer's packets is logged again.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Peers remembered for the interval; past it the memory starts over (a
/// few more lines, never unbounded memory).
const REMEMBERED_PEERS: usize = 1024;

/// Test-only: change the newest wire version this build speaks (the
/// negotiation tests make a build that pretends to speak version 3, or
/// only version 1, this way). Not a user setting.
const TEST_MAX_ENV: &str = "SHOAL_TEST_WIRE_MAX";
/// Test-only: raise the oldest wire version this build speaks.
const TEST_MIN_ENV: &str = "SHOAL_TEST_WIRE_MIN";

/// The wire versions this agent speaks ([`WireRange::THIS_BUILD`] unless a
/// test raised them).
pub fn local_range() -> WireRange {
    let read = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u8>().ok());
    let mut range = WireRange::THIS_BUILD;
    if let Some(max) = read(TEST_MAX_ENV) {
        range.max = max.max(range.min);
    }
    if let Some(min) = read(TEST_MIN_ENV) {
        range.min = min.min(range.max);
    }
    range
}

/// Logs, at most once per peer per interval, packets in a wire version
/// this agent does not speak.
#[derive(Debug)]
pub struct RefusalLog {
    ours: WireRange,
    logged: HashMap<IpAddr, Instant>,
}

impl RefusalLog {
    pub fn new(ours: WireRange) -> Self {
        Self {
            ours,
            logged: HashMap::new(),
        }
    }

    /// Looks at a packet from `from` before it is opened: a Shoal packet
    /// outside our range is logged (rate-limited), naming both sides'
    /// versions. `theirs` is what the peer advertises, when its record is
    /// known. Returns whether the packet is out of range.
    pub fn check(
        &mut self,
        from: SocketAddr,
        packet: &[u8],
        transport: &str,
        theirs: Option<WireRange>,
        now: Instant,
    ) -> bool {
        let Some(version) = packet_version(packet) else {
            return false;
        };
        if self.ours.contains(version) {
            return false;
        }
        self.note(from, version, transport, theirs, now);
        true
    }

    /// Logs (rate-limited) that `from` sent wire version `version`, which
    /// we don't speak.
    pub fn note(
        &mut self,
        from: SocketAddr,
        version: u8,
        transport: &str,
        theirs: Option<WireRange>,
        now: Instant,
    ) {
        let due = self
            .logged
            .get(&from.ip())
            .is_none_or(|last| now.duration_since(*last) >= REFUSAL_LOG_INTERVAL);
        if due {
            if self.logged.len() >= REMEMBERED_PEERS {
                self.logged.clear();
            }
            self.logged.insert(from.ip(), now);
            let advertised = theirs.map_or_else(
                || format!("wire version {version}"),
                |range| format!("wire versions {range}"),
            );
            tracing::warn!(
                peer = %from,
                transport,
                their_version = version,
                "refusing a peer that speaks {advertised}: this agent speaks wire versions {}; \
                 adjacent releases interoperate (docs/upgrading.md), so upgrade or roll back one \
                 side (logged once per {}s per peer)",
                self.ours,
                REFUSAL_LOG_INTERVAL.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::envelope::{Envelope, PayloadKind};

    #[test]
    fn a_peer_out_of_range_is_noted_once_per_interval() {
        let mut log = RefusalLog::new(WireRange { min: 1, max: 1 });
        let newer = Envelope::new(1).with_range(WireRange { min: 2, max: 2 });
        let packet = newer.seal(PayloadKind::Swim, b"x", [0; 24]);
        let peer: SocketAddr = "127.0.0.9:7946".parse().unwrap();
        let start = Instant::now();
        assert!(log.check(peer, &packet, "udp", None, start));
        assert_eq!(log.logged[&peer.ip()], start);
        let later = start + Duration::from_secs(1);
        assert!(log.check(peer, &packet, "udp", None, later));
        assert_eq!(log.logged[&peer.ip()], start, "not logged again yet");
        let much_later = start + REFUSAL_LOG_INTERVAL;
        assert!(log.check(peer, &packet, "udp", None, much_later));
        assert_eq!(log.logged[&peer.ip()], much_later);
        let ours = Envelope::new(1).seal(PayloadKind::Swim, b"x", [0; 24]);
        assert!(!log.check(peer, &ours, "udp", None, much_later));
        assert!(!log.check(peer, b"not shoal", "udp", None, much_later));
    }
}
