//! Members' network coordinates (see [`crate::coordinate`]) as their
//! `Coordinate` rumors bring them: soft state, not part of anti-entropy.
//! Each member publishes its own every so often, so a missed rumor is
//! repaired by the next one.

use std::collections::HashMap;

use super::ClusterState;
use crate::coordinate::{Coordinate, CoordinateConfig, WIRE_VALUES};
use crate::identity::NodeId;

/// Coordinates held at most beyond one per record: rumors about identities
/// we hold no record of (yet) are bounded by this.
const SPARE: usize = 256;

/// One member's coordinate and the stamp that orders its publications.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldCoordinate {
    pub stamp: u64,
    pub coordinate: Coordinate,
}

#[derive(Debug, Default)]
pub(super) struct Coordinates {
    by_id: HashMap<NodeId, HeldCoordinate>,
    /// Rumors refused: out of range, or a bound reached.
    refused: u64,
}

impl ClusterState {
    /// A member's coordinate arrived (`stamp` orders its publications):
    /// whether it is news. Out-of-range values are refused and counted.
    pub fn offer_coordinate(
        &mut self,
        id: NodeId,
        stamp: u64,
        values: &[u32; WIRE_VALUES],
    ) -> bool {
        if id == self.local().id {
            return false;
        }
        if self
            .coordinates
            .by_id
            .get(&id)
            .is_some_and(|held| held.stamp >= stamp)
        {
            return false;
        }
        let Ok(coordinate) = Coordinate::from_wire(values, &CoordinateConfig::default()) else {
            self.coordinates.refused += 1;
            return false;
        };
        let bound = self.len() + SPARE;
        if !self.coordinates.by_id.contains_key(&id) && self.coordinates.by_id.len() >= bound {
            self.coordinates.refused += 1;
            return false;
        }
        self.coordinates
            .by_id
            .insert(id, HeldCoordinate { stamp, coordinate });
        true
    }

    /// The last coordinate `id` published, if one reached us.
    pub fn coordinate_of(&self, id: &NodeId) -> Option<&HeldCoordinate> {
        self.coordinates.by_id.get(id)
    }

    /// Coordinate rumors refused so far.
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
    fn newer_stamps_win_and_bad_values_are_refused() {
        let mut state = ClusterState::new(NodeRecord::new(id(1), "a"));
        let config = CoordinateConfig::default();
        let mut coordinate = Coordinate::new(&config);
        coordinate.vec[0] = 0.004;
        let values = coordinate.to_wire();
        assert!(state.offer_coordinate(id(2), 5, &values));
        assert!(!state.offer_coordinate(id(2), 5, &values), "not news");
        assert!(!state.offer_coordinate(id(2), 4, &Coordinate::new(&config).to_wire()));
        assert_eq!(state.coordinate_of(&id(2)).unwrap().stamp, 5);
        assert!(!state.offer_coordinate(id(1), 9, &values), "our own");
        let mut bad = values;
        bad[2] = f32::NAN.to_bits();
        assert!(!state.offer_coordinate(id(2), 6, &bad));
        assert_eq!(state.coordinates_refused(), 1);
        assert_eq!(state.coordinate_of(&id(2)).unwrap().stamp, 5, "unchanged");
        // No record holds id(2): pruned.
        state.prune_coordinates();
        assert!(state.coordinate_of(&id(2)).is_none());
    }

    #[test]
    fn identities_without_records_are_bounded() {
        let mut state = ClusterState::new(NodeRecord::new(id(1), "a"));
        let values = Coordinate::new(&CoordinateConfig::default()).to_wire();
        let mut accepted = 0;
        for port in 0..2_000u16 {
            let stranger = NodeId {
                addr: SocketAddr::from(([10, 0, 0, 1], port)),
                generation: 1,
            };
            accepted += usize::from(state.offer_coordinate(stranger, 1, &values));
        }
        assert_eq!(accepted, 1 + SPARE);
        assert_eq!(state.coordinates_refused(), 2_000 - (1 + SPARE) as u64);
    }
}
