//! Members' network coordinates as their acks bring them (the
//! [`crate::envelope::COORDINATE`] trailer): soft state, not part of
//! anti-entropy, replaced by each newer ack.

use std::collections::HashMap;

use super::ClusterState;
use crate::coordinate::{Coordinate, CoordinateConfig, WIRE_LEN};
use crate::identity::NodeId;

/// Coordinates held at most beyond one per record: trailers from
/// identities we hold no record of (yet) are bounded by this.
const SPARE: usize = 256;

#[derive(Debug, Default)]
pub(super) struct Coordinates {
    by_id: HashMap<NodeId, Coordinate>,
    /// Trailers refused: out of range, or the bound reached.
    refused: u64,
}

impl ClusterState {
    /// A member's coordinate arrived: held until the next one. Out-of-range
    /// values are refused and counted, and so are newcomers past the
    /// bound once identities without a record are dropped.
    pub fn note_coordinate(&mut self, id: NodeId, bytes: &[u8; WIRE_LEN]) -> bool {
        if id == self.local().id {
            return false;
        }
        let Ok(coordinate) = Coordinate::from_wire(bytes, &CoordinateConfig::default()) else {
            self.coordinates.refused += 1;
            return false;
        };
        let bound = self.len() + SPARE;
        if !self.coordinates.by_id.contains_key(&id) && self.coordinates.by_id.len() >= bound {
            self.prune_coordinates();
            if self.coordinates.by_id.len() >= bound {
                self.coordinates.refused += 1;
                return false;
            }
        }
        self.coordinates.by_id.insert(id, coordinate);
        true
    }

    /// The last coordinate `id` sent us, if one reached us.
    pub fn coordinate_of(&self, id: &NodeId) -> Option<&Coordinate> {
        self.coordinates.by_id.get(id)
    }

    /// Trailers refused so far.
    pub fn coordinates_refused(&self) -> u64 {
        self.coordinates.refused
    }

    /// Drops the coordinates of identities no record holds any more (a
    /// member that restarted, or was forgotten).
    pub fn prune_coordinates(&mut self) {
        let current: std::collections::HashSet<NodeId> =
            self.records.values().map(|record| record.id).collect();
        self.coordinates.by_id.retain(|id, _| current.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::record::NodeRecord;

    fn id(last: u8) -> NodeId {
        NodeId {
            addr: SocketAddr::from(([127, 0, 0, last], 7946)),
            generation: 1,
        }
    }

    #[test]
    fn the_last_coordinate_wins_and_bad_values_are_refused() {
        let mut state = ClusterState::new(NodeRecord::new(id(1), "a"));
        let config = CoordinateConfig::default();
        let mut coordinate = Coordinate::new(&config);
        coordinate.vec[0] = 0.004;
        assert!(state.note_coordinate(id(2), &Coordinate::new(&config).to_wire()));
        assert!(state.note_coordinate(id(2), &coordinate.to_wire()));
        assert_eq!(state.coordinate_of(&id(2)).unwrap().vec[0], 0.004f32 as f64);
        assert!(
            !state.note_coordinate(id(1), &coordinate.to_wire()),
            "our own"
        );
        let mut bad = coordinate.to_wire();
        bad[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(!state.note_coordinate(id(2), &bad));
        assert_eq!(state.coordinates_refused(), 1);
        assert_eq!(
            state.coordinate_of(&id(2)).unwrap().vec[0],
            0.004f32 as f64,
            "unchanged"
        );
        // No record holds id(2): pruned.
        state.prune_coordinates();
        assert!(state.coordinate_of(&id(2)).is_none());
    }

    #[test]
    fn identities_without_records_are_bounded() {
        let mut state = ClusterState::new(NodeRecord::new(id(1), "a"));
        let values = Coordinate::new(&CoordinateConfig::default()).to_wire();
        for port in 0..2_000u16 {
            let stranger = NodeId {
                addr: SocketAddr::from(([10, 0, 0, 1], port)),
                generation: 1,
            };
            state.note_coordinate(stranger, &values);
            assert!(state.coordinates.by_id.len() <= 1 + SPARE);
        }
        // A member with a record is held beside them.
        let member = id(3);
        state.merge(NodeRecord::new(member, "m"));
        assert!(state.note_coordinate(member, &values));
        assert!(state.coordinate_of(&member).is_some());
    }
}
