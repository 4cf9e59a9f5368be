//! This node's network coordinate (see [`crate::coordinate`]): fed by the
//! round trips of its own direct probes, published as a `Coordinate` rumor
//! every so often.
//!
//! Serf carries each member's coordinate in its acks; foca's acks carry no
//! payload of ours, so a member's coordinate reaches the others as a rumor
//! of its own instead, and a probe's sample uses the last coordinate the
//! probed member published (the origin, unsure, until one arrives: what a
//! new member's is anyway). Publications are spaced as Consul spaces the
//! coordinate updates its agents send to the servers (every 15 s at least,
//! and no more than 64 a second across the cluster), more often over the
//! first 30 samples (every 2 s, 256 a second), so that a new cluster
//! converges within a minute.

use std::time::Duration;

use super::Node;
use crate::coordinate::{Coordinate, CoordinateConfig};
use crate::identity::NodeId;
use crate::rumor::Rumor;

/// Shortest interval between two publications over the first
/// [`UNSURE_SAMPLES`] samples, and the cluster-wide rate it keeps to.
const PUBLISH_UNSURE: Duration = Duration::from_secs(2);
const RATE_UNSURE: f64 = 256.0;
/// The same afterwards: Consul's `SyncCoordinateIntervalMin` and
/// `SyncCoordinateRateTarget`.
const PUBLISH_SETTLED: Duration = Duration::from_secs(15);
const RATE_SETTLED: f64 = 64.0;
/// Samples (one a probe period) after which a coordinate is published at
/// the settled pace. Counted, not judged by the coordinate's own error
/// estimate: on a network the model fits badly the error hovers, and the
/// pace with it.
const UNSURE_SAMPLES: u64 = 30;

impl Node {
    /// Our own network coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        self.vivaldi.coordinate()
    }

    /// What the coordinate client has done so far.
    pub fn coordinate_stats(&self) -> &crate::coordinate::VivaldiStats {
        self.vivaldi.stats()
    }

    /// Every node's last published coordinate we hold, by node name, ours
    /// included.
    pub fn coordinates(&self) -> Vec<(String, Coordinate)> {
        let state = self.lock_state();
        let local = state.local().id;
        let mut all: Vec<(String, Coordinate)> = state
            .records()
            .filter(|record| record.id != local)
            .filter_map(|record| {
                state
                    .coordinate_of(&record.id)
                    .map(|held| (record.name.clone(), held.coordinate.clone()))
            })
            .collect();
        all.push((
            state.local().name.clone(),
            self.vivaldi.coordinate().clone(),
        ));
        all
    }

    /// Takes the round trips measured since the last step into our
    /// coordinate, then publishes it if due.
    pub(super) fn update_coordinate(&mut self) {
        for (peer, rtt) in std::mem::take(&mut self.effects.rtt_samples) {
            let theirs = self
                .lock_state()
                .coordinate_of(&peer)
                .map(|held| held.coordinate.clone())
                .unwrap_or_else(|| Coordinate::new(&CoordinateConfig::default()));
            // Refused samples (over 10 s) are counted by the client.
            let _ = self.vivaldi.update(&peer, &theirs, rtt);
        }
        self.publish_coordinate();
    }

    /// A member went down: its latency filter is forgotten.
    pub(super) fn forget_coordinate(&mut self, id: &NodeId) {
        self.vivaldi.forget(id);
    }

    fn publish_coordinate(&mut self) {
        let Some(now) = self.effects.now else {
            return;
        };
        if now < self.coordinate_due || self.vivaldi.stats().samples == 0 {
            return;
        }
        let members = self.swim.num_members() as f64 + 1.0;
        let (least, rate) = if self.vivaldi.stats().samples < UNSURE_SAMPLES {
            (PUBLISH_UNSURE, RATE_UNSURE)
        } else {
            (PUBLISH_SETTLED, RATE_SETTLED)
        };
        let mean = least.max(Duration::from_secs_f64(members / rate));
        self.coordinate_due = now + self.jittered(mean);
        // Rumor kinds a 0.1.0 agent doesn't know make it drop the rest of
        // the datagram (see `all_read_accusations`).
        if self.swim.num_members() == 0 || !self.all_read_accusations() {
            return;
        }
        let stamp = (now.as_millis() as u64).max(self.coordinate_stamp + 1);
        self.coordinate_stamp = stamp;
        let rumor = Rumor::Coordinate {
            id: self.identity(),
            stamp,
            values: self.vivaldi.coordinate().to_wire(),
        };
        // Refused only when our own rumor fails to encode.
        let _ = self.swim.add_broadcast(&crate::codec::encode(&rumor));
        self.counters.coordinates_published += 1;
        self.lock_state().prune_coordinates();
    }
}
