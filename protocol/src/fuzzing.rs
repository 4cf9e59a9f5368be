//! Entry points for the fuzz targets in `fuzz/` and for the replay of their
//! saved inputs in `tests/fuzz_regressions.rs`. Each takes arbitrary bytes
//! and must never panic, hang or allocate without bound: the fuzzer and the
//! normal test run drive exactly the same code.
//!
//! Inputs are split into length-prefixed chunks (see [`chunks`]) so that the
//! fuzzer can build sequences (an announce, then gossip about it).

use std::net::SocketAddr;

use std::sync::{Arc, Mutex};

use foca::{BroadcastHandler, Codec};

use crate::anti_entropy::SyncMessage;
use crate::codec::{self, SwimCodec};
use crate::envelope::{Envelope, PayloadKind, cluster_id};
use crate::identity::NodeId;
use crate::keyring::{KEY_LEN, Keyring, NONCE_LEN};
use crate::node::{GossipConfig, Node};
use crate::record::NodeRecord;
use crate::rumor::{Rumor, RumorHandler};
use crate::state::ClusterState;

/// The cluster every fuzzed node belongs to.
pub const FUZZ_CLUSTER: &str = "fuzz";
/// The key of the sealed variant (the fuzzer can't forge seals; this checks
/// that trying never gets past the seal, and that opening never panics).
pub const FUZZ_KEY: [u8; KEY_LEN] = [7; KEY_LEN];

/// Splits `data` into chunks, each a little-endian `u16` length followed by
/// that many bytes (a short last chunk takes what is left).
pub fn chunks(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < 64 {
        let length = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let (chunk, tail) = rest.split_at(length.min(rest.len()));
        out.push(chunk);
        data = tail;
    }
    out
}

fn fresh_node(envelope: Envelope) -> Node {
    let id = NodeId {
        addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
        generation: 1,
    };
    let mut node = Node::new(
        NodeRecord::new(id, "fuzz"),
        GossipConfig::default(),
        envelope,
        42,
    );
    node.start();
    node
}

/// The packet path: the envelope, foca's header and member decoding, and
/// `Node::handle_datagram` on a fresh node, which is what a datagram from
/// the network reaches. The first byte picks how the chunks are wrapped:
/// as is (the fuzzer must forge the envelope), in a valid plain envelope,
/// or against a node with a keyring.
pub fn packet(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let plain = Envelope::new(cluster_id(FUZZ_CLUSTER));
    let sealed = Envelope::with_keyring(cluster_id(FUZZ_CLUSTER), Keyring::with_primary(FUZZ_KEY));
    let envelope = if mode & 4 == 0 {
        plain.clone()
    } else {
        sealed.clone()
    };
    let mut node = fresh_node(envelope.clone());
    for chunk in chunks(rest) {
        let _ = plain.open(chunk);
        let _ = sealed.open(chunk);
        let _ = SwimCodec.decode_header(&mut &chunk[..]);
        let _ = SwimCodec.decode_member(&mut &chunk[..]);
        let datagram = match mode & 3 {
            0 => chunk.to_vec(),
            _ => envelope.seal(PayloadKind::Swim, chunk, [mode; NONCE_LEN]),
        };
        let _ = node.handle_datagram(&datagram);
        drain(&mut node);
    }
    let _ = node.members();
    let _ = node.records();
}

/// Carries out what the node asked for, as a driver would, delivering
/// timers that are due at once (bounded: foca re-arms some of them).
fn drain(node: &mut Node) {
    for _ in 0..8 {
        let effects = node.effects();
        effects.datagrams.clear();
        effects.syncs.clear();
        let timers = std::mem::take(&mut effects.timers);
        let due: Vec<_> = timers
            .into_iter()
            .filter(|(after, _)| after.is_zero())
            .map(|(_, timer)| timer)
            .collect();
        if due.is_empty() {
            return;
        }
        for timer in due {
            node.handle_timer(timer);
        }
    }
}

/// The message decoders: a rumor as foca hands it to the broadcast
/// handler (decoded and merged by the real [`RumorHandler`]), and a sync
/// message as it arrives in a TCP frame, handled by a node as the agent's
/// core loop does for each kind.
pub fn messages(data: &[u8]) {
    let local = NodeRecord::new(
        NodeId {
            addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
            generation: 1,
        },
        "fuzz",
    );
    let sender = NodeId {
        addr: SocketAddr::from(([127, 0, 0, 2], 7946)),
        generation: 1,
    };
    let state = Arc::new(Mutex::new(ClusterState::new(local)));
    let mut handler = RumorHandler::new(
        state.clone(),
        Arc::new(Mutex::new(crate::event::EventLog::new())),
    );
    let _ = handler.receive_item(data, Some(&sender));
    if let Ok(rumor) = codec::decode_datagram::<Rumor>(data) {
        // The encoder must accept whatever the decoder produced.
        let _ = codec::encode(&rumor);
    }
    let _ = state.lock().map(|state| state.digest());

    let Ok(message) = codec::decode_frame::<SyncMessage>(data) else {
        return;
    };
    let _ = codec::encode(&message);
    let mut node = fresh_node(Envelope::new(cluster_id(FUZZ_CLUSTER)));
    let _ = node.on_sync(message);
    drain(&mut node);
    let _ = node.sync_open();
    let _ = node.members();
}
