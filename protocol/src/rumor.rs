//! Custom broadcasts ("rumors") that ride on foca's SWIM traffic: the fast
//! path for node-record changes, KV writes and user events.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bincode::{Decode, Encode};
use foca::{BroadcastHandler, Invalidates};

use crate::codec;
use crate::event::{BacklogSlot, EventLog, UserEvent};
use crate::identity::NodeId;
use crate::kv::KvEntry;
use crate::record::NodeRecord;
use crate::state::{ClusterState, Merge};

/// Largest rumor we hand to foca. foca keeps a broadcast that never fits a
/// packet in its backlog forever, so stay well under a third of a datagram;
/// a larger record is announced by its digest and pulled over TCP.
pub const MAX_RUMOR: usize = 400;

/// One custom broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Rumor {
    /// A whole node record, small enough to gossip.
    Node(NodeRecord),
    /// A record too large to gossip: who has it and how new it is. Peers
    /// that are behind pull it over TCP: from `id.addr` if that is a member
    /// they hold active, else from whoever gossiped the digest to them
    /// (see [`crate::pull`]).
    NodeDigest {
        name: String,
        id: NodeId,
        version: u64,
    },
    /// A KV write, small enough to gossip.
    Kv(KvEntry),
    /// A KV write too large to gossip: peers that are behind pull it
    /// (anti-entropy finds it in a differing bucket) from `from`, the
    /// writer, if that is a member they hold active, else from whoever
    /// gossiped the digest to them (see [`crate::pull`]).
    KvDigest {
        key: String,
        time: u64,
        writer: String,
        from: SocketAddr,
    },
    /// A user event (see [`crate::event`]). Up to about 900 bytes, over
    /// [`MAX_RUMOR`]: events are rare, and one still fits a packet of its
    /// own, so foca never keeps it in the backlog forever.
    Event(UserEvent),
    /// `force-leave -prune`: forget the member `id` now (if it is down
    /// where this arrives) rather than on its schedule. Appended last, so
    /// the encodings of the variants above are unchanged.
    Prune(NodeId),
    /// `accuser`'s own probe of `target` (at `incarnation`) failed: one
    /// more independent member confirms the suspicion (see
    /// [`crate::suspicion`]). Appended last, like `Prune`.
    Accuse {
        target: NodeId,
        incarnation: u16,
        accuser: NodeId,
    },
}

impl Rumor {
    /// Encodes the rumor that announces `record`: the record itself when it
    /// fits in [`MAX_RUMOR`] bytes, else its digest.
    pub fn encode_for(record: &NodeRecord) -> Vec<u8> {
        let full = codec::encode(&Rumor::Node(record.clone()));
        if full.len() <= MAX_RUMOR {
            return full;
        }
        codec::encode(&Rumor::NodeDigest {
            name: record.name.clone(),
            id: record.id,
            version: record.version,
        })
    }

    /// Encodes the rumor that announces a KV write: the entry itself when
    /// it fits in [`MAX_RUMOR`] bytes, else its digest.
    pub fn encode_kv(entry: &KvEntry, from: SocketAddr) -> Vec<u8> {
        let full = codec::encode(&Rumor::Kv(entry.clone()));
        if full.len() <= MAX_RUMOR {
            return full;
        }
        codec::encode(&Rumor::KvDigest {
            key: entry.key.clone(),
            time: entry.time,
            writer: entry.writer.clone(),
            from,
        })
    }

    /// The key of a node or KV rumor (an event's comes with its backlog
    /// slot, see [`RumorHandler`]).
    fn key(&self) -> Option<RumorKey> {
        Some(match self {
            Rumor::Node(record) => RumorKey::Node {
                name: record.name.clone(),
                order: (record.id.generation, record.version),
            },
            Rumor::NodeDigest { name, id, version } => RumorKey::Node {
                name: name.clone(),
                order: (id.generation, *version),
            },
            Rumor::Kv(entry) => RumorKey::Kv {
                key: entry.key.clone(),
                order: (entry.time, entry.writer.clone()),
            },
            Rumor::KvDigest {
                key, time, writer, ..
            } => RumorKey::Kv {
                key: key.clone(),
                order: (*time, writer.clone()),
            },
            Rumor::Prune(id) => RumorKey::Prune { id: *id },
            Rumor::Accuse {
                target,
                incarnation,
                accuser,
            } => RumorKey::Accuse {
                target: *target,
                incarnation: *incarnation,
                accuser: *accuser,
            },
            Rumor::Event(_) => return None,
        })
    }
}

/// Identifies a rumor in foca's backlog: a newer one about the same node or
/// key replaces an older one still being spread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RumorKey {
    Node {
        name: String,
        order: (u64, u64),
    },
    Kv {
        key: String,
        order: (u64, String),
    },
    /// Events are never replaced, only deduplicated; a new one drops the
    /// events more than `EVENT_BACKLOG` older from the backlog (see
    /// [`crate::event`]).
    Event {
        id: [u8; 16],
        slot: BacklogSlot,
    },
    Prune {
        id: NodeId,
    },
    Accuse {
        target: NodeId,
        incarnation: u16,
        accuser: NodeId,
    },
}

impl RumorKey {
    /// Whether both are about the same node or key (in any version).
    pub fn same_subject(&self, other: &Self) -> bool {
        match (self, other) {
            (RumorKey::Node { name, .. }, RumorKey::Node { name: theirs, .. }) => name == theirs,
            (RumorKey::Kv { key, .. }, RumorKey::Kv { key: theirs, .. }) => key == theirs,
            (RumorKey::Event { id, .. }, RumorKey::Event { id: theirs, .. }) => id == theirs,
            (RumorKey::Prune { id }, RumorKey::Prune { id: theirs }) => id == theirs,
            (
                RumorKey::Accuse {
                    target, accuser, ..
                },
                RumorKey::Accuse {
                    target: their_target,
                    accuser: their_accuser,
                    ..
                },
            ) => target == their_target && accuser == their_accuser,
            _ => false,
        }
    }
}

impl Invalidates for RumorKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (
                RumorKey::Node { name, order },
                RumorKey::Node {
                    name: theirs,
                    order: their_order,
                },
            ) => name == theirs && order >= their_order,
            (
                RumorKey::Kv { key, order },
                RumorKey::Kv {
                    key: theirs,
                    order: their_order,
                },
            ) => key == theirs && order >= their_order,
            (
                RumorKey::Event { id, slot },
                RumorKey::Event {
                    id: theirs,
                    slot: their_slot,
                },
            ) => id == theirs || slot.evicts(their_slot),
            (RumorKey::Prune { id }, RumorKey::Prune { id: theirs }) => id == theirs,
            // A newer accusation by the same member replaces an older one.
            (
                RumorKey::Accuse {
                    target,
                    incarnation,
                    accuser,
                },
                RumorKey::Accuse {
                    target: their_target,
                    incarnation: their_incarnation,
                    accuser: their_accuser,
                },
            ) => {
                target == their_target
                    && accuser == their_accuser
                    && incarnation >= their_incarnation
            }
            _ => false,
        }
    }
}

/// Why a received rumor was refused.
#[derive(Debug, thiserror::Error)]
pub enum RumorError {
    #[error("undecodable rumor: {0}")]
    Decode(#[from] bincode::error::DecodeError),
}

/// foca's broadcast handler: merges rumors into the shared cluster state and
/// tells foca to keep spreading only those that were news.
///
/// foca owns its handler, so the state is shared with the node through a
/// mutex. Both live in the one gossip task and never hold the lock across a
/// call into foca, so it is never contended.
pub struct RumorHandler {
    state: Arc<Mutex<ClusterState>>,
    events: Arc<Mutex<EventLog>>,
}

impl RumorHandler {
    pub fn new(state: Arc<Mutex<ClusterState>>, events: Arc<Mutex<EventLog>>) -> Self {
        Self { state, events }
    }
}

impl BroadcastHandler<NodeId> for RumorHandler {
    type Key = RumorKey;
    type Error = RumorError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeId>,
    ) -> Result<Option<RumorKey>, RumorError> {
        let rumor: Rumor = match codec::decode_rumor(data) {
            Ok(rumor) => rumor,
            // A kind a newer agent added: skipped (counted), not spread
            // (we can't judge whether it is news), and the rest of the
            // packet is still read.
            Err(codec::DecodeError::UnexpectedVariant { .. }) => {
                self.state
                    .lock()
                    .expect("cluster state lock poisoned")
                    .note_unknown_rumor();
                return Ok(None);
            }
            Err(error) => return Err(error.into()),
        };
        if let Rumor::Event(event) = rumor {
            return Ok(self.receive_event(event, sender));
        }
        let Some(key) = rumor.key() else {
            return Ok(None);
        };
        let Some(sender) = sender else {
            // Added by ourselves through `Foca::add_broadcast`: the state
            // already holds it.
            return Ok(Some(key));
        };
        // foca hands us only rumors from members it holds active: the
        // sender is a member, unlike the address in the payload.
        let sender = sender.addr;
        let mut state = self.state.lock().expect("cluster state lock poisoned");
        let news = match rumor {
            Rumor::Node(record) => state.merge(record) == Merge::Applied,
            Rumor::NodeDigest { name, id, version } => {
                state.is_news(&name, id.generation, version)
                    && state.pulls_mut().offer(key.clone(), id.addr, sender)
            }
            Rumor::Kv(entry) => state.apply_kv(Arc::new(entry)),
            Rumor::KvDigest {
                key: name,
                time,
                writer,
                from,
            } => {
                state.kv_is_news(&name, time, &writer)
                    && state.pulls_mut().offer(key.clone(), from, sender)
            }
            // Taken by `receive_event` above.
            Rumor::Prune(id) => state.offer_prune(id),
            Rumor::Accuse {
                target,
                incarnation,
                accuser,
            } => state.offer_accusation(target, incarnation, accuser),
            Rumor::Event(_) => false,
        };
        Ok(news.then_some(key))
    }
}

impl RumorHandler {
    /// An event rumor: news gets a backlog slot (which may drop the oldest
    /// events from foca's backlog).
    fn receive_event(&mut self, event: UserEvent, sender: Option<&NodeId>) -> Option<RumorKey> {
        let id = event.id;
        let max_time = self
            .state
            .lock()
            .expect("cluster state lock poisoned")
            .clock()
            .max_kv_time();
        let mut events = self.events.lock().expect("event log lock poisoned");
        let news = match sender {
            // Fired here (`Foca::add_broadcast`): the log already holds it.
            None => true,
            // Refused events (out of bounds) are counted by the log and
            // not spread further.
            Some(_) => events.receive(event, max_time).unwrap_or(false),
        };
        news.then(|| RumorKey::Event {
            id,
            slot: events.backlog_slot(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::MAX_EVENT_PAYLOAD;

    fn handler() -> (RumorHandler, Arc<Mutex<EventLog>>) {
        let id = NodeId {
            addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
            generation: 1,
        };
        let state = Arc::new(Mutex::new(ClusterState::new(NodeRecord::new(id, "local"))));
        let events = Arc::new(Mutex::new(EventLog::new()));
        (RumorHandler::new(state, events.clone()), events)
    }

    fn event(id: u8, payload: usize) -> UserEvent {
        UserEvent {
            id: [id; 16],
            name: "deploy".into(),
            payload: vec![b'x'; payload],
            node_filter: "^web-.*$".into(),
            service_filter: "web".into(),
            tag_filter: "primary".into(),
            ltime: 3,
            time: 1,
        }
    }

    /// A record with many small services still fits a rumor; its peers
    /// must decode it. (bincode's limit counts the memory a container
    /// claims, `len * size_of::<T>()`, not the bytes it was sent in: at
    /// the datagram's own size as the limit, nine services were refused,
    /// and the agent that registered them panicked on its own rumor.)
    #[test]
    fn a_record_with_many_small_services_is_gossiped_whole_and_decoded() {
        let (mut handler, _) = handler();
        let peer = NodeId {
            addr: SocketAddr::from(([127, 0, 0, 2], 7946)),
            generation: 1,
        };
        let mut record = NodeRecord::new(peer, "peer");
        for i in 0..20 {
            record.services.push(crate::record::ServiceRecord {
                id: format!("s{i}"),
                name: "s".into(),
                address: String::new(),
                port: 80,
                tags: Vec::new(),
                meta: Default::default(),
                checks: Vec::new(),
            });
        }
        record.version = 2;
        let data = Rumor::encode_for(&record);
        assert!(
            matches!(codec::decode_datagram::<Rumor>(&data), Ok(Rumor::Node(_))),
            "a {}-byte rumor of 20 services did not decode as a whole record",
            data.len()
        );
        let news = handler.receive_item(&data, Some(&peer)).unwrap();
        assert!(news.is_some(), "the record was not news");
    }

    #[test]
    fn an_event_rumor_is_news_once_and_delivered() {
        let (mut handler, events) = handler();
        let sender = NodeId {
            addr: SocketAddr::from(([127, 0, 0, 2], 7946)),
            generation: 1,
        };
        let data = codec::encode(&Rumor::Event(event(1, MAX_EVENT_PAYLOAD)));
        // Fits a packet of its own with room for foca's header.
        assert!(data.len() < 900, "event rumor is {} bytes", data.len());
        let first = handler.receive_item(&data, Some(&sender)).unwrap();
        assert!(
            matches!(first, Some(RumorKey::Event { id, .. }) if id == [1; 16]),
            "{first:?}"
        );
        assert_eq!(handler.receive_item(&data, Some(&sender)).unwrap(), None);
        let mut events = events.lock().unwrap();
        assert_eq!(events.take_delivered(), vec![event(1, MAX_EVENT_PAYLOAD)]);
        assert_eq!(events.clock(), 4);
    }

    #[test]
    fn an_oversized_event_rumor_is_refused_and_not_spread() {
        let (mut handler, events) = handler();
        let sender = NodeId {
            addr: SocketAddr::from(([127, 0, 0, 2], 7946)),
            generation: 1,
        };
        let data = codec::encode(&Rumor::Event(event(1, MAX_EVENT_PAYLOAD + 1)));
        assert_eq!(handler.receive_item(&data, Some(&sender)).unwrap(), None);
        let mut events = events.lock().unwrap();
        assert!(events.take_delivered().is_empty());
        assert_eq!(events.counters().refused, 1);
        assert_eq!(events.clock(), 0);
    }
}
