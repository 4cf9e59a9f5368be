//! Join policy: announcing to the seeds (with backoff while alone, and
//! periodically to the seeds we are out of touch with, so that healed
//! partitions find each other), telling members we hold as down, and
//! leaving gracefully.
//!
//! A connected node never announces to a seed that is a live member: each
//! announce is answered with a packet-sized member feed, and when every
//! node re-announced to the seeds, the seeds sent a feed per node per
//! period (25x the median agent's traffic at 100 agents). memberlist and
//! Serf don't re-announce either; Serf instead tries to reconnect to failed
//! members, which is what foca's announce to down members does here (see
//! `GossipConfig::swim_config`). The seeds we are out of touch with are
//! tried too, because down members are forgotten after
//! `reconnect_timeout`: a partition that outlasts it still heals through
//! the seeds.

use std::time::Duration;

use foca::{Identity, Runtime};

use super::{Node, NodeTimer, Phase};
use crate::codec::SwimCodec;
use crate::identity::NodeId;

impl Node {
    /// When a datagram comes from an identity we hold as down, foca drops it
    /// unread, and the sender never learns why: after a partition heals,
    /// both sides would ignore each other until `reconnect_timeout`. So we
    /// tell it with foca's own `TurnUndead`, which makes it renew its
    /// identity and rejoin. This is the receive path of foca's
    /// `notify_down_members`, without its suspect->down timer path, which
    /// also fires for members that refuted the suspicion (see
    /// [`GossipConfig::swim_config`](super::GossipConfig::swim_config)).
    ///
    /// Also: a datagram addressed to an earlier identity of ours (we
    /// restarted while the sender was cut off from us) is dropped by foca
    /// too, and the sender keeps probing an identity that no longer
    /// answers. We announce ourselves to it (at most once a second per
    /// address), so it learns the identity we have now, and we the one it
    /// has. Without it, an agent cut off alone while the others restarted
    /// took until an anti-entropy exchange to be taken back after the heal.
    pub(super) fn tell_if_declared_down(&mut self, payload: &[u8]) {
        use foca::Codec;
        let mut rest = payload;
        let Ok(header) = SwimCodec.decode_header(&mut rest) else {
            return;
        };
        self.answer_stale_suspicion(&header, rest);
        let me = self.identity();
        if header.dst.addr == me.addr && header.dst.generation < me.generation {
            self.announce_to_stale(header.src);
        }
        if self.down.is_empty() || self.down.get(&header.src.addr) != Some(&header.src) {
            return;
        }
        let reply = foca::Header {
            src: self.identity(),
            src_incarnation: 0,
            dst: header.src,
            message: foca::Message::TurnUndead,
        };
        let mut bytes = Vec::new();
        if SwimCodec.encode_header(&reply, &mut bytes).is_ok() {
            self.effects.send_to(header.src, &bytes);
        }
    }

    pub(super) fn announce_to_stale(&mut self, peer: NodeId) {
        let Some(now) = self.effects.now else {
            return;
        };
        if self
            .stale_told
            .get(&peer.addr)
            .is_some_and(|at| now.saturating_sub(*at) < Duration::from_secs(1))
        {
            return;
        }
        if self.stale_told.len() >= 1024 {
            self.stale_told.clear();
        }
        self.stale_told.insert(peer.addr, now);
        let _ = self.swim.announce(peer, &mut self.effects);
    }

    /// Starts a graceful leave: gossip a "left" record, then, after
    /// `leave_spread`, declare ourselves down. See [`Node::has_left`].
    pub fn begin_leave(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        self.update_local(|record| record.left = true);
        self.phase = Phase::Leaving;
        let spread = if self.swim.num_members() == 0 {
            Duration::ZERO
        } else {
            let _ = self.swim.gossip(&mut self.effects);
            self.config.leave_spread
        };
        self.effects.timers.push((spread, NodeTimer::FinishLeave));
        self.after_swim();
    }

    /// Whether the leave finished: the driver may stop once the last
    /// datagrams are out.
    pub fn has_left(&self) -> bool {
        self.phase == Phase::Left
    }

    /// Announces to the seeds (all of them while alone or just renewed,
    /// else those that are not live members) and schedules the next announce: with doubling
    /// backoff while alone, every `seed_reannounce` (jittered) once
    /// connected.
    pub(super) fn rejoin(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let me = self.identity().addr();
        let alone = self.swim.num_members() == 0;
        let all = std::mem::take(&mut self.announce_all_seeds);
        let live: std::collections::HashSet<std::net::SocketAddr> = if alone || all {
            std::collections::HashSet::new()
        } else {
            self.swim.iter_members().map(|m| m.id().addr).collect()
        };
        for seed in self.config.seeds.clone() {
            if seed != me && !live.contains(&seed) {
                let _ = self.swim.announce(NodeId::seed(seed), &mut self.effects);
            }
        }
        let next = if alone {
            let next = self.rejoin_backoff;
            self.rejoin_backoff = (self.rejoin_backoff * 2).min(self.config.rejoin_max);
            next
        } else {
            self.rejoin_backoff = self.config.rejoin_min;
            // Jittered, so that the nodes of a cluster started together
            // don't all knock at the same instant (and a healed partition
            // waits a fraction of the period, not all of it).
            self.jittered(self.config.seed_reannounce)
        };
        self.effects
            .timers
            .push((next, NodeTimer::Rejoin(self.rejoin_token)));
    }

    /// Announces to `addr` (`shoal join`): foca's answer is a feed of its
    /// members. The address is not kept as a seed: as with Consul's
    /// `join`, add it to `join` in the config to rejoin through it.
    pub fn announce_to(&mut self, addr: std::net::SocketAddr) {
        if self.phase != Phase::Running || addr == self.identity().addr {
            return;
        }
        let _ = self.swim.announce(NodeId::seed(addr), &mut self.effects);
        self.after_swim();
    }

    /// Supersedes any pending rejoin with one due `after`, backoff reset.
    pub(super) fn rejoin_after(&mut self, after: Duration) {
        self.rejoin_token = self.rejoin_token.wrapping_add(1);
        self.rejoin_backoff = self.config.rejoin_min;
        self.effects
            .timers
            .push((after, NodeTimer::Rejoin(self.rejoin_token)));
    }
}
