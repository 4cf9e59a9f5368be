//! This node's network coordinate (see [`crate::coordinate`]): fed by the
//! round trips of its own direct probes against the coordinate the probed
//! member sent in its ack.
//!
//! As memberlist does for Serf, every ack to a peer that speaks wire
//! version 2 carries the sender's current coordinate (the envelope's
//! [`crate::envelope::COORDINATE`] trailer, 44 bytes): a probe's sample
//! pairs the round trip with the probed member's coordinate of that
//! moment, and each node learns a member's coordinate whenever it probes
//! it (once per round of probes). Nothing else carries coordinates: a
//! gossiped coordinate would cost every agent bytes in proportion to the
//! cluster's size, an ack's costs each agent one trailer a probe.

use super::Node;
use crate::coordinate::{Coordinate, CoordinateConfig, WIRE_LEN};
use crate::identity::NodeId;

impl Node {
    /// Our own network coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        self.vivaldi.coordinate()
    }

    /// What the coordinate client has done so far.
    pub fn coordinate_stats(&self) -> &crate::coordinate::VivaldiStats {
        self.vivaldi.stats()
    }

    /// Every node's last coordinate we hold, by node name, ours included.
    pub fn coordinates(&self) -> Vec<(String, Coordinate)> {
        let state = self.lock_state();
        let local = state.local().id;
        let mut all: Vec<(String, Coordinate)> = state
            .records()
            .filter(|record| record.id != local)
            .filter_map(|record| {
                state
                    .coordinate_of(&record.id)
                    .map(|coordinate| (record.name.clone(), coordinate.clone()))
            })
            .collect();
        all.push((
            state.local().name.clone(),
            self.vivaldi.coordinate().clone(),
        ));
        all
    }

    /// A datagram carried its sender's coordinate: held until the next.
    pub(super) fn note_sender_coordinate(&mut self, payload: &[u8], trailer: &[u8; WIRE_LEN]) {
        use foca::Codec;
        let mut rest = payload;
        let Ok(header) = crate::codec::SwimCodec.decode_header(&mut rest) else {
            return;
        };
        if self.lock_state().note_coordinate(header.src, trailer) {
            self.counters.coordinates_received += 1;
        }
    }

    /// Takes the round trips measured since the last step into our
    /// coordinate, and hands the result to the acks we send.
    pub(super) fn update_coordinate(&mut self) {
        if self.effects.rtt_samples.is_empty() {
            return;
        }
        for (peer, rtt) in std::mem::take(&mut self.effects.rtt_samples) {
            let theirs = self
                .lock_state()
                .coordinate_of(&peer)
                .cloned()
                .unwrap_or_else(|| Coordinate::new(&CoordinateConfig::default()));
            // Refused samples (over 10 s) are counted by the client.
            let _ = self.vivaldi.update(&peer, &theirs, rtt);
        }
        self.effects.coordinate = self.vivaldi.coordinate().to_wire();
    }

    /// A member went down: its latency filter is forgotten.
    pub(super) fn forget_coordinate(&mut self, id: &NodeId) {
        self.vivaldi.forget(id);
    }
}
