//! Gossip tuning, and foca's configuration derived from it.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use foca::PeriodicParams;

use crate::codec::MAX_DATAGRAM;
use crate::envelope::{HEADER_LEN, TRAILER_LEN};
use crate::keyring::SEAL_OVERHEAD;

/// Gossip tuning. Defaults follow memberlist's LAN profile.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Addresses to announce to when joining, and again whenever this node
    /// is alone, or (every `seed_reannounce`) out of touch with a seed.
    pub seeds: Vec<SocketAddr>,
    /// How often a random member is probed. Fixed for the node's lifetime.
    pub probe_period: Duration,
    /// How long a direct probe waits for its ack before asking others to
    /// probe indirectly. Must be below `probe_period`.
    pub probe_rtt: Duration,
    /// How often pending updates are pushed to `gossip_fanout` members.
    pub gossip_interval: Duration,
    /// Members each gossip round goes to.
    pub gossip_fanout: NonZeroUsize,
    /// Suspicion timeout multiplier: a suspect is declared down after
    /// `suspicion_mult * max(1, log10(n)) * probe_period` (`Min`) once
    /// `ceil(suspicion_mult - 2)` other members confirmed it, later before
    /// (see [`crate::suspicion`]). Default 3.5 (`DEFAULT_SUSPICION_MULT`).
    pub suspicion_mult: f64,
    /// A suspicion starts at this many times the timeout above and
    /// shrinks to it as other members confirm it (Lifeguard's dynamic
    /// suspicion, see [`crate::suspicion`]); 1 keeps it fixed.
    pub suspicion_max_mult: u32,
    /// Mean time between anti-entropy exchanges with a random peer
    /// (jittered ±50%) in a cluster of up to 32 members; above that it is
    /// stretched as memberlist's push-pull is (see
    /// [`GossipConfig::anti_entropy_mean`]).
    pub anti_entropy_interval: Duration,
    /// First and largest delay between join attempts while alone.
    pub rejoin_min: Duration,
    pub rejoin_max: Duration,
    /// How often a connected node tries to reach the members it holds as
    /// down (one at random) and the seeds it is not in touch with (all of
    /// them), so that the two sides of a healed partition find each other
    /// again: Serf's reconnect. Seeds that are live members are left
    /// alone, so they carry no more traffic than anyone else.
    pub seed_reannounce: Duration,
    /// How long a leaving node keeps gossiping its "left" record before it
    /// declares itself down.
    pub leave_spread: Duration,
    /// How long a member declared down without leaving is kept (listed as
    /// failed, and tried now and then in case a partition heals) before it
    /// is forgotten: Consul's `reconnect_timeout`, default 72 h.
    pub reconnect_timeout: Duration,
    /// How long a member that left (on its own, or by force-leave) stays
    /// listed as left before it is forgotten: Serf's `TombstoneTimeout`,
    /// default 24 h, counted from when this node saw it leave.
    pub tombstone_timeout: Duration,
    /// Lifeguard-style local health awareness: a node that misses acks,
    /// has to refute suspicions or lags behind stretches its own probe and
    /// suspicion timers (up to 8x) instead of declaring healthy peers down.
    /// Default on; see [`crate::lifeguard`].
    pub local_health: bool,
    /// Send foca's `TurnUndead` to members declared down. Keep it false:
    /// foca 2.0.0 sends it even after the member refuted the suspicion,
    /// which makes healthy nodes rejoin under packet loss. It is a field
    /// only so the simulator's regression scenario can show the defect.
    pub notify_down_members: bool,
    /// A node with seeds checks, in the first anti-entropy exchange it
    /// completes, that no live member holds its node name before it offers
    /// its record, and refuses to join when one does (see
    /// [`crate::node::NameEvent`]). Default on; the simulator turns it off:
    /// its nodes have distinct names, and a converged bootstrap skips the
    /// exchanges the check waits for.
    pub check_name: bool,
    /// How far ahead of this node's clock a peer's KV write times and
    /// record generations may be (default 30 s); anything further is
    /// refused and counted. Raise it only if hosts' clocks really drift
    /// that much: an entry from the future beats every later write until
    /// its time comes. See [`crate::clock`].
    pub max_clock_drift: Duration,
    /// The most bytes (keys plus values, tombstones' keys included) the KV
    /// store holds; local writes past it fail, peers' entries past it are
    /// refused and counted. Default [`crate::state::DEFAULT_KV_MAX_BYTES`].
    pub kv_max_bytes: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            seeds: Vec::new(),
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(500),
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: NonZeroUsize::new(3).expect("3 > 0"),
            suspicion_mult: DEFAULT_SUSPICION_MULT,
            suspicion_max_mult: crate::suspicion::DEFAULT_MAX_MULT,
            anti_entropy_interval: Duration::from_secs(15),
            rejoin_min: Duration::from_secs(1),
            rejoin_max: Duration::from_secs(30),
            seed_reannounce: Duration::from_secs(30),
            leave_spread: Duration::from_millis(500),
            reconnect_timeout: DEFAULT_RECONNECT_TIMEOUT,
            tombstone_timeout: DEFAULT_TOMBSTONE_TIMEOUT,
            local_health: true,
            notify_down_members: false,
            check_name: true,
            max_clock_drift: crate::clock::DEFAULT_MAX_CLOCK_DRIFT,
            kv_max_bytes: crate::state::DEFAULT_KV_MAX_BYTES,
        }
    }
}

impl GossipConfig {
    /// The WAN pool's timings: memberlist's `DefaultWANConfig`, which
    /// Consul's servers use on their WAN pool (probe every 5 s with a 3 s
    /// timeout, gossip every 500 ms to 4 members, suspicion multiplier 6,
    /// push-pull every 60 s). Links between datacenters are slower and
    /// lossier than a LAN's, and a WAN pool has a handful of members per
    /// datacenter, so it probes slowly and suspects patiently.
    pub fn wan() -> Self {
        Self {
            probe_period: Duration::from_secs(5),
            probe_rtt: Duration::from_secs(3),
            gossip_interval: Duration::from_millis(500),
            gossip_fanout: NonZeroUsize::new(4).expect("4 > 0"),
            suspicion_mult: 6.0,
            anti_entropy_interval: Duration::from_secs(60),
            ..Self::default()
        }
    }
}

/// `Min`'s multiplier: 3.5, below memberlist's 4, with memberlist's two
/// confirmations still needed to reach it (`ceil(3.5 - 2)`). Dynamic
/// suspicion and reminders to the suspect (Lifeguard's buddy system) give
/// a suspicion that only some members share far more time than 4 did
/// with a fixed timeout, so `Min` can be lower for a member every prober
/// lost: in the simulator (`sweep --only detect,faults`, 50 nodes, 60
/// seeds per fault) detection p50 is about 10 % faster than with 4 (7.9
/// against 8.7 s at 50 nodes, 5.2 against 5.8 s at 10), with healthy
/// nodes declared down in 1 of 60 runs under deaf bursts (0 with 4), 2 of
/// 60 under bursty loss (2), and none under starvation, starvation with
/// loss or one-way loss (none). 3 doubled the first (9 of 60).
/// Figures: `docs/figures/issue-23/min-tuning/`.
pub const DEFAULT_SUSPICION_MULT: f64 = 3.5;

/// Consul's default `reconnect_timeout`: a failed member is kept 72 h.
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = Duration::from_secs(72 * 3600);
/// Serf's default tombstone timeout: a member that left is kept 24 h.
pub const DEFAULT_TOMBSTONE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Cluster size up to which the anti-entropy interval is not stretched
/// (memberlist's `pushPullScaleThreshold`).
pub const ANTI_ENTROPY_SCALE_THRESHOLD: u32 = 32;

impl GossipConfig {
    /// The mean anti-entropy interval in a cluster of `cluster_size`
    /// members: `anti_entropy_interval` up to 32 members, then times
    /// `ceil(log2(n) - log2(32)) + 1` (2x from 33, 3x from 65, 4x from
    /// 129, ...), as memberlist scales its push-pull. Each node's exchanges
    /// reach all others in O(log n) rounds either way, and the rate of
    /// exchanges a node takes part in stays at two per interval.
    pub fn anti_entropy_mean(&self, cluster_size: u32) -> Duration {
        if cluster_size <= ANTI_ENTROPY_SCALE_THRESHOLD {
            return self.anti_entropy_interval;
        }
        let multiplier = (f64::from(cluster_size).log2()
            - f64::from(ANTI_ENTROPY_SCALE_THRESHOLD).log2())
        .ceil()
            + 1.0;
        self.anti_entropy_interval.mul_f64(multiplier)
    }

    /// foca's configuration for a cluster of about `cluster_size` members:
    /// `Config::new_lan` with our overrides, re-applied as the cluster grows.
    pub fn swim_config(&self, cluster_size: u32) -> foca::Config {
        let size = NonZeroU32::new(cluster_size.max(1)).expect("max(1) > 0");
        let mut config = foca::Config::new_lan(size);
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.suspect_to_down_after = self
            .probe_period
            .mul_f64(self.suspicion_mult * f64::from(cluster_size.max(1)).log10().max(1.0));
        // foca 2.0.0 sends TurnUndead from the suspect->down timer even when
        // the member refuted the suspicion, making healthy nodes rejoin under
        // packet loss. Partitions heal through seed re-announces and our own
        // receive-path TurnUndead (see `Node::tell_if_declared_down`).
        config.notify_down_members = self.notify_down_members;
        // Room for the envelope, its seal when encryption is on, and the
        // network coordinate acks carry.
        config.max_packet_size =
            NonZeroUsize::new(MAX_DATAGRAM - HEADER_LEN - SEAL_OVERHEAD - TRAILER_LEN)
                .expect("datagram larger than header");
        // The node forgets down members itself, failed and left ones on
        // schedules of their own (see `node::reap`); foca's single
        // `remove_down_after` can't tell them apart.
        config.remove_down_after = None;
        // memberlist's retransmit count, 4 * ceil(log10(n + 1)), but at
        // least 6 (below): foca's own
        // (floor of 4 * log10) sends each update too few times in small and
        // forming clusters, leaving stragglers for anti-entropy to fix. The
        // config is re-applied only when the size crosses a power of two, so
        // count for the top of that range.
        let top = cluster_size.max(1).next_power_of_two();
        let retransmits = 4.0 * f64::from(top + 1).log10().ceil();
        // A floor of 6: with foca counting one transmission per message, 4
        // left about one update in twenty to anti-entropy in clusters of 5
        // to 10 (measured: a 6.7 s straggler).
        config.max_transmissions =
            std::num::NonZeroU8::new(retransmits.clamp(6.0, 255.0) as u8).expect("at least 6");
        // Reconnecting to down members heals partitions (see
        // `seed_reannounce`); foca's periodic announce to a live member is
        // left out: its answer is a packet-sized member feed every 30 s per
        // node, and anti-entropy already repairs membership.
        config.periodic_announce = None;
        config.periodic_announce_to_down_members = Some(PeriodicParams {
            frequency: self.seed_reannounce,
            num_members: NonZeroUsize::new(1).expect("1 > 0"),
        });
        config.periodic_gossip = Some(PeriodicParams {
            frequency: self.gossip_interval,
            num_members: self.gossip_fanout,
        });
        config
    }
}
