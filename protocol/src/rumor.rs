//! Custom broadcasts ("rumors") that ride on foca's SWIM traffic: the fast
//! path for node-record changes.

use std::sync::{Arc, Mutex};

use bincode::{Decode, Encode};
use foca::{BroadcastHandler, Invalidates};

use crate::codec;
use crate::identity::NodeId;
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
    /// that are behind pull it from `id.addr` over TCP.
    NodeDigest {
        name: String,
        id: NodeId,
        version: u64,
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

    fn key(&self) -> RumorKey {
        match self {
            Rumor::Node(record) => RumorKey {
                name: record.name.clone(),
                generation: record.id.generation,
                version: record.version,
            },
            Rumor::NodeDigest { name, id, version } => RumorKey {
                name: name.clone(),
                generation: id.generation,
                version: *version,
            },
        }
    }
}

/// Identifies a rumor in foca's backlog: a newer one about the same node
/// replaces an older one still being spread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RumorKey {
    name: String,
    generation: u64,
    version: u64,
}

impl Invalidates for RumorKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.name == other.name
            && (self.generation, self.version) >= (other.generation, other.version)
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
}

impl RumorHandler {
    pub fn new(state: Arc<Mutex<ClusterState>>) -> Self {
        Self { state }
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
        let rumor: Rumor = codec::decode_datagram(data)?;
        let key = rumor.key();
        if sender.is_none() {
            // Added by ourselves through `Foca::add_broadcast`: the state
            // already holds it.
            return Ok(Some(key));
        }
        let mut state = self.state.lock().expect("cluster state lock poisoned");
        let news = match rumor {
            Rumor::Node(record) => state.merge(record) == Merge::Applied,
            Rumor::NodeDigest { name, id, version } => {
                let news = state.is_news(&name, id.generation, version);
                if news {
                    state.want_pull(id.addr);
                }
                news
            }
        };
        Ok(news.then_some(key))
    }
}
