//! Join policy: announcing to the seeds (with backoff while alone, and
//! periodically anyway so that healed partitions find each other), telling
//! members we hold as down, and leaving gracefully.

use std::time::Duration;

use foca::{Identity, Runtime};

use super::{Node, NodeTimer, Phase};
use crate::codec::SwimCodec;
use crate::identity::NodeId;

impl Node {
    /// When a datagram comes from an identity we hold as down, foca drops it
    /// unread, and the sender never learns why: after a partition heals,
    /// both sides would ignore each other until `remove_down_after`. So we
    /// tell it with foca's own `TurnUndead`, which makes it renew its
    /// identity and rejoin. This is the receive path of foca's
    /// `notify_down_members`, without its suspect->down timer path, which
    /// also fires for members that refuted the suspicion (see
    /// [`GossipConfig::swim_config`](super::GossipConfig::swim_config)).
    pub(super) fn tell_if_declared_down(&mut self, payload: &[u8]) {
        use foca::Codec;
        if self.down.is_empty() {
            return;
        }
        let Ok(header) = SwimCodec.decode_header(&mut &payload[..]) else {
            return;
        };
        if self.down.get(&header.src.addr) != Some(&header.src) {
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

    /// Announces to the seeds and schedules the next announce: with
    /// doubling backoff while alone, every `seed_reannounce` once connected.
    pub(super) fn rejoin(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let me = self.identity().addr();
        let alone = self.swim.num_members() == 0;
        for seed in self.config.seeds.clone() {
            if seed != me {
                let _ = self.swim.announce(NodeId::seed(seed), &mut self.effects);
            }
        }
        let next = if alone {
            let next = self.rejoin_backoff;
            self.rejoin_backoff = (self.rejoin_backoff * 2).min(self.config.rejoin_max);
            next
        } else {
            self.rejoin_backoff = self.config.rejoin_min;
            self.config.seed_reannounce
        };
        self.effects
            .timers
            .push((next, NodeTimer::Rejoin(self.rejoin_token)));
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
