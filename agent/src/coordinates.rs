//! Members' network coordinates as the API shows them and sorts by them
//! (`/v1/coordinate/*`, `?near=`, `shoal rtt`), published by the core loop
//! every couple of seconds (coordinates move with every probe; they wake
//! no blocking query).

use std::collections::HashMap;
use std::time::Duration;

use shoal_protocol::coordinate::Coordinate;

/// The coordinates this agent holds, by node name, its own included.
#[derive(Clone, Debug, Default)]
pub struct NodeCoordinates {
    local: String,
    by_name: HashMap<String, Coordinate>,
}

impl NodeCoordinates {
    pub fn new(local: String, all: Vec<(String, Coordinate)>) -> Self {
        Self {
            local,
            by_name: all.into_iter().collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Coordinate> {
        self.by_name.get(name)
    }

    /// Every `(name, coordinate)`, sorted by name.
    pub fn sorted(&self) -> Vec<(&str, &Coordinate)> {
        let mut all: Vec<(&str, &Coordinate)> = self
            .by_name
            .iter()
            .map(|(name, coordinate)| (name.as_str(), coordinate))
            .collect();
        all.sort_unstable_by_key(|(name, _)| *name);
        all
    }

    /// The estimated round trip between two nodes, when both have a
    /// coordinate (`_agent` is this agent).
    pub fn rtt(&self, from: &str, to: &str) -> Option<Duration> {
        let from = self.get(self.resolve(from))?;
        let to = self.get(self.resolve(to))?;
        Some(from.distance_to(to))
    }

    fn resolve<'a>(&'a self, name: &'a str) -> &'a str {
        if name == "_agent" { &self.local } else { name }
    }

    /// What `?near=NODE` sorts by: `None` when the node (or `_agent`) has
    /// no coordinate, and Consul then leaves the answer unsorted.
    pub fn near(&self, node: &str) -> Option<Near> {
        let origin = self.get(self.resolve(node))?;
        Some(Near {
            distances: self
                .by_name
                .iter()
                .map(|(name, coordinate)| (name.clone(), origin.distance_to(coordinate)))
                .collect(),
        })
    }
}

/// Estimated round trips from one node to every node with a coordinate.
#[derive(Clone, Debug)]
pub struct Near {
    distances: HashMap<String, Duration>,
}

impl Near {
    /// Sorts `items` nearest first by the node `node_of` names, stably
    /// (items of one node keep their order), nodes without a coordinate
    /// last: Consul's rules for `?near=`.
    pub fn sort<T>(&self, items: &mut [T], node_of: impl Fn(&T) -> &str) {
        items.sort_by_key(|item| {
            self.distances
                .get(node_of(item))
                .copied()
                .unwrap_or(Duration::MAX)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::coordinate::CoordinateConfig;

    fn at(x: f64) -> Coordinate {
        let mut coordinate = Coordinate::new(&CoordinateConfig::default());
        coordinate.vec[0] = x;
        coordinate
    }

    #[test]
    fn near_sorts_nearest_first_stably_and_unknown_nodes_last() {
        let coordinates = NodeCoordinates::new(
            "a".into(),
            vec![
                ("a".into(), at(0.0)),
                ("b".into(), at(0.050)),
                ("c".into(), at(0.010)),
            ],
        );
        let near = coordinates.near("_agent").expect("a has one");
        let mut items = vec![("b", 1), ("x", 2), ("c", 3), ("a", 4), ("b", 5)];
        near.sort(&mut items, |(node, _)| node);
        assert_eq!(items, [("a", 4), ("c", 3), ("b", 1), ("b", 5), ("x", 2)]);
        assert!(coordinates.near("x").is_none(), "no coordinate: unsorted");
        let rtt = coordinates.rtt("b", "c").unwrap();
        assert!(rtt.abs_diff(Duration::from_micros(40_020)) < Duration::from_micros(1));
        assert_eq!(
            coordinates.rtt("_agent", "a"),
            Some(Duration::from_micros(20))
        );
        assert_eq!(coordinates.rtt("a", "x"), None);
    }
}
