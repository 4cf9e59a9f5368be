//! KV writes on simulated nodes, and the check that every healthy node
//! ends up with the same map: the last-writer-wins merge of every write
//! that was accepted.
//!
//! Writes go through `Node::write_kv` exactly as the agent's
//! `KvState::handle` makes them: the time is the (virtual) clock in NTP64,
//! past the key's current time; the writer is the node's name. They spread
//! by the node's rumors and by anti-entropy (`Node::on_sync`), as in the
//! agent.

use std::sync::Arc;

use rand::RngExt;
use shoal_protocol::kv::KvEntry;

use crate::network::Micros;
use crate::sim::{Event, RANK_OTHER, SECOND, Simulation};

/// How often KV convergence is checked while it is pending.
const KV_CHECK: Micros = 100_000;

/// Virtual time as NTP64: seconds in the high 32 bits, fraction in the low.
pub(crate) fn ntp64(micros: Micros) -> u64 {
    let seconds = micros / SECOND;
    let fraction = ((micros % SECOND) << 32) / SECOND;
    (seconds << 32) | fraction
}

impl Simulation {
    /// Schedules `writes` writes at random instants over `over_s` seconds.
    pub(crate) fn kv_bulk(
        &mut self,
        node: Option<usize>,
        writes: usize,
        keys: usize,
        over_s: f64,
        prefix: &str,
        value_bytes: usize,
    ) {
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
            self.push(at, RANK_OTHER, Event::KvWrite { node, key, value });
        }
    }

    /// One write on `node` (a random healthy node when `None`).
    pub(crate) fn kv_write(&mut self, node: Option<usize>, key: String, value: Vec<u8>) {
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
        let previous = node.kv().get(&key).map_or(0, |stored| stored.entry.time);
        let entry = KvEntry {
            key,
            value,
            flags: 0,
            time: ntp64(now).max(previous.saturating_add(1)),
            writer: node.local_record().name,
            deleted: false,
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

    /// Whether every healthy node holds the expected map (compared by the
    /// root of the bucket hashes, as anti-entropy compares them).
    pub(crate) fn kv_converged(&self) -> bool {
        let root = self.metrics.kv.expected.root();
        (0..self.slots.len())
            .filter(|&index| self.is_healthy(index))
            .all(|index| {
                let node = self.slots[index].node.as_ref().expect("healthy");
                node.kv().root() == root
            })
    }

    /// Keys whose winning write some healthy node lacks (it has an older
    /// entry or none): acknowledged writes lost, or not yet arrived.
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
                    kv.get(&winner.entry.key)
                        .is_none_or(|held| held.entry != winner.entry)
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
