//! KV writes and deletes on simulated nodes, and the check that every
//! healthy node ends up serving the same map: the last-writer-wins merge of
//! every write and delete that was accepted (a key whose winner is a
//! delete is served by nobody, whether its tombstone is still held or was
//! collected).
//!
//! Writes go through `Node::write_kv` exactly as the agent's
//! `KvState::handle` makes them: the time is the (virtual) clock in NTP64,
//! past anything the node knows of the key (`KvStore::latest_time`); the
//! writer is the node's name. They spread by the node's rumors and by
//! anti-entropy (`Node::on_sync`), as in the agent, and tombstones are
//! collected as the agent's housekeeping collects them
//! (`Node::collect_tombstones`, when `tombstone_grace_s` is set).

use std::sync::Arc;

use rand::RngExt;
use shoal_protocol::kv::KvEntry;

use crate::network::Micros;
use crate::sim::{Event, RANK_OTHER, SECOND, Simulation};

/// How often KV convergence is checked while it is pending.
const KV_CHECK: Micros = 100_000;
/// The agent's KV housekeeping period (`daemon::gossip`).
const KV_HOUSEKEEPING: Micros = 30 * SECOND;

/// The shape of a `kv_bulk` action.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bulk {
    pub writes: usize,
    pub keys: usize,
    pub over_s: f64,
    pub value_bytes: usize,
    /// The share of deletes.
    pub deletes: f64,
}

/// Virtual time as NTP64: seconds in the high 32 bits, fraction in the low.
pub(crate) fn ntp64(micros: Micros) -> u64 {
    let seconds = micros / SECOND;
    let fraction = ((micros % SECOND) << 32) / SECOND;
    (seconds << 32) | fraction
}

impl Simulation {
    /// Schedules `writes` writes (a share of them deletes) at random
    /// instants over `over_s` seconds.
    pub(crate) fn kv_bulk(&mut self, node: Option<usize>, prefix: &str, bulk: Bulk) {
        let Bulk {
            writes,
            keys,
            over_s,
            value_bytes,
            deletes,
        } = bulk;
        let span = (over_s * SECOND as f64) as Micros;
        for _ in 0..writes {
            let at = self.now
                + if span > 0 {
                    self.rng.random_range(0..span)
                } else {
                    0
                };
            let key = format!("{prefix}{}", self.rng.random_range(0..keys));
            self.kv_values += 1;
            let mut value = format!("w{}:", self.kv_values).into_bytes();
            value.resize(value_bytes.max(value.len()), b'.');
            let value = (self.rng.random::<f64>() >= deletes).then_some(value);
            self.push(at, RANK_OTHER, Event::KvWrite { node, key, value });
        }
    }

    /// The period of tombstone collection rounds.
    pub(crate) fn kv_housekeeping_period(&self) -> Micros {
        let grace = self.scenario.tombstone_grace_s.unwrap_or(f64::INFINITY);
        KV_HOUSEKEEPING
            .min((grace * SECOND as f64 / 2.0) as Micros)
            .max(1)
    }

    /// Every healthy node collects its tombstones older than the grace.
    pub(crate) fn kv_housekeeping(&mut self) {
        let Some(grace) = self.scenario.tombstone_grace_s else {
            return;
        };
        let grace = std::time::Duration::from_secs_f64(grace);
        let now = self.now;
        for index in 0..self.slots.len() {
            if !self.is_healthy(index) {
                continue;
            }
            let node = self.slots[index].node.as_mut().expect("healthy");
            node.set_clock(std::time::Duration::from_micros(now));
            let collected = node.collect_tombstones(grace);
            node.take_deletes_changed();
            node.take_kv_quarantined();
            self.metrics.kv.collected += collected.len() as u64;
        }
        let next = now + self.kv_housekeeping_period();
        self.push(next, RANK_OTHER + 1, Event::KvHousekeeping);
    }

    /// One write (or delete, `value` `None`) on `node` (a random healthy
    /// node when `None`).
    pub(crate) fn kv_write(&mut self, node: Option<usize>, key: String, value: Option<Vec<u8>>) {
        let index = match node {
            Some(index) if self.is_healthy(index) => index,
            None => match self.random_live_node() {
                Some(index) => index,
                None => {
                    self.metrics.kv.refused += 1;
                    return;
                }
            },
            Some(_) => {
                self.metrics.kv.refused += 1;
                return;
            }
        };
        let now = self.now;
        let node = self.slots[index].node.as_mut().expect("healthy");
        node.set_clock(std::time::Duration::from_micros(now));
        let previous = node.kv().latest_time(&key);
        let entry = KvEntry {
            key,
            deleted: value.is_none(),
            value: value.unwrap_or_default(),
            flags: 0,
            time: ntp64(now).max(previous.saturating_add(1)),
            writer: node.local_record().name,
        };
        match node.write_kv(entry.clone()) {
            Ok(_) => {
                self.metrics.kv.expected.apply(Arc::new(entry));
                self.metrics.kv.writes += 1;
            }
            Err(_) => self.metrics.kv.refused += 1,
        }
        self.after_call(index);
        self.kv_disturbed();
    }

    /// Something happened that may leave nodes with different maps (a
    /// write, a heal, a restart): time convergence from now.
    pub(crate) fn kv_disturbed(&mut self) {
        let now = self.now;
        let kv = &mut self.metrics.kv;
        if kv.writes == 0 {
            return;
        }
        kv.disturbed_at = now;
        kv.converged_at = None;
        if !kv.check_pending {
            kv.check_pending = true;
            self.push(now + KV_CHECK, RANK_OTHER, Event::KvCheck);
        }
    }

    pub(crate) fn kv_check(&mut self) {
        if self.kv_converged() {
            self.metrics.kv.converged_at = Some(self.now);
            self.metrics.kv.check_pending = false;
        } else {
            self.push(self.now + KV_CHECK, RANK_OTHER, Event::KvCheck);
        }
    }

    /// Whether every healthy node serves the expected map: compared by the
    /// root of the bucket hashes (as anti-entropy compares them), or, when
    /// that differs (tombstones collected or handed back), by the live
    /// entries.
    pub(crate) fn kv_converged(&self) -> bool {
        let expected = &self.metrics.kv.expected;
        let root = expected.root();
        (0..self.slots.len())
            .filter(|&index| self.is_healthy(index))
            .all(|index| {
                let kv = self.slots[index].node.as_ref().expect("healthy").kv();
                kv.root() == root
                    || kv
                        .prefix("")
                        .map(|s| &s.entry)
                        .eq(expected.prefix("").map(|s| &s.entry))
            })
    }

    /// Keys whose winner some healthy node does not serve: a winning write
    /// it lacks (it has an older entry or none: lost, or not yet arrived),
    /// or a winning delete it still serves a value for (resurrected, or
    /// not yet arrived).
    pub(crate) fn kv_missing_keys(&self) -> usize {
        let live: Vec<_> = (0..self.slots.len())
            .filter(|&index| self.is_healthy(index))
            .map(|index| self.slots[index].node.as_ref().expect("healthy").kv())
            .collect();
        self.metrics
            .kv
            .expected
            .iter()
            .filter(|winner| {
                live.iter().any(|kv| {
                    let held = kv.get(&winner.entry.key);
                    if winner.entry.deleted {
                        held.is_some_and(|held| !held.entry.deleted)
                    } else {
                        held.is_none_or(|held| held.entry != winner.entry)
                    }
                })
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp64_keeps_seconds_high_and_order() {
        assert_eq!(ntp64(0), 0);
        assert_eq!(ntp64(SECOND), 1 << 32);
        assert_eq!(ntp64(SECOND / 2), 1 << 31);
        assert_eq!(ntp64(3 * SECOND / 2), (1 << 32) | (1 << 31));
        assert!(ntp64(1) > ntp64(0));
        assert!(ntp64(2 * SECOND + 999_999) < ntp64(3 * SECOND));
    }
}
