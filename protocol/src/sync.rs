//! Anti-entropy push-pull over TCP.
//!
//! One exchange on one connection, initiated by the agent whose timer fired:
//!
//! ```text
//! initiator                                   responder
//!   Digest { names + versions,
//!            KV root + bucket hashes }      ─▶
//!                           ◀─ Delta { records you lack, names I want,
//!                                      KV entries of differing buckets,
//!                                      the differing buckets }
//!   Records { the wanted records,
//!             my KV entries of those buckets } ─▶
//! ```
//!
//! A quiet exchange (nothing differs) costs O(nodes + buckets), never
//! O(keys): KV entries only travel for buckets whose hashes differ.
//!
//! Both sides also send the members they hold alive, and each adds the ones
//! its SWIM table lacks, as memberlist's push-pull does: a member that
//! missed a join's gossip learns of it at the next exchange rather than at
//! foca's next periodic announce.
//!
//! Frames are a 4-byte big-endian length followed by an envelope of kind
//! [`PayloadKind::Sync`](crate::envelope::PayloadKind::Sync).

use bincode::{Decode, Encode};

use crate::identity::NodeId;
use crate::kv::KvEntry;
use crate::record::NodeRecord;

/// A record's name and order, without its body.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct DigestEntry {
    pub name: String,
    pub generation: u64,
    pub version: u64,
}

/// The messages of one push-pull exchange.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum SyncMessage {
    /// Initiator → responder: everything the initiator has, summarized.
    Digest {
        nodes: Vec<DigestEntry>,
        kv_root: u64,
        kv_buckets: Vec<u64>,
        /// The members the initiator holds alive (itself included).
        members: Vec<NodeId>,
    },
    /// Responder → initiator: records the initiator lacks, the names of
    /// records the responder wants back, and the responder's KV entries in
    /// every bucket whose hash differs.
    Delta {
        records: Vec<NodeRecord>,
        wanted: Vec<String>,
        kv_entries: Vec<KvEntry>,
        kv_buckets: Vec<u16>,
        /// The members the responder holds alive (itself included).
        members: Vec<NodeId>,
    },
    /// Initiator → responder: the records asked for, and the initiator's KV
    /// entries in the differing buckets.
    Records {
        records: Vec<NodeRecord>,
        kv_entries: Vec<KvEntry>,
    },
}
