//! What peers can make nodes do and hold: a forged digest rumor (which
//! must not start a pull storm) and name churn (which must not grow every
//! node's records, and so every digest, forever).

use std::net::SocketAddr;

use foca::{Codec, Header, Message};
use shoal_protocol::codec::{self, SwimCodec};
use shoal_protocol::rumor::Rumor;
use shoal_protocol::{Node, NodeId, PayloadKind};

use crate::kv::ntp64;
use crate::metrics::Sample;
use crate::sim::{Event, RANK_OTHER, Simulation};

/// Where the forged rumors say to fetch what they announce: an address
/// outside the cluster (TEST-NET-3).
const ELSEWHERE: ([u8; 4], u16) = ([203, 0, 113, 7], 17999);

impl Simulation {
    /// Node `index` receives one forged datagram that claims to come from
    /// the next live node and carries digest rumors nobody can serve.
    pub(crate) fn spoof_digest(&mut self, index: usize) {
        let count = self.slots.len();
        let Some(target) = self.slots[index].node.as_ref().map(Node::identity) else {
            return;
        };
        let Some(sender) = (1..count)
            .map(|step| (index + step) % count)
            .find_map(|other| self.slots[other].node.as_ref().map(Node::identity))
        else {
            return;
        };
        let elsewhere = SocketAddr::from(ELSEWHERE);
        let rumors = [
            Rumor::KvDigest {
                key: "spoofed/nowhere".into(),
                time: ntp64(self.now) + 1,
                writer: "spoofer".into(),
                from: elsewhere,
            },
            Rumor::NodeDigest {
                name: "spoofer".into(),
                id: NodeId {
                    addr: elsewhere,
                    generation: 1,
                },
                version: 1,
            },
        ];
        let header = Header {
            src: sender,
            src_incarnation: 0,
            dst: target,
            message: Message::Broadcast,
        };
        let mut payload = Vec::new();
        SwimCodec
            .encode_header(&header, &mut payload)
            .expect("encoding into a Vec");
        for rumor in &rumors {
            let bytes = codec::encode(rumor);
            payload.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            payload.extend_from_slice(&bytes);
        }
        let packet = self.envelope.seal(PayloadKind::Swim, &payload, [0; 24]);
        let now = self.now;
        self.push(
            now,
            RANK_OTHER,
            Event::Datagram {
                to: index,
                packet,
                arrived: now,
                slowed: false,
            },
        );
    }

    /// Node `index` stops and starts again under a new name.
    pub(crate) fn rename(&mut self, index: usize) {
        if self.slots[index].node.is_none() {
            return;
        }
        self.crash(index);
        let slot = &mut self.slots[index];
        slot.name = format!("node-{index:05}-g{}", slot.generation + 1);
        self.restart(index);
    }

    /// The most node records any live node holds.
    pub(crate) fn max_records(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|slot| slot.node.as_ref())
            .map(|node| node.records().len())
            .max()
            .unwrap_or(0)
    }

    /// The time series sampled so far (every `sample_s`).
    pub fn samples(&self) -> &[Sample] {
        &self.metrics.samples
    }
}
