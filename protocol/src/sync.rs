//! Anti-entropy push-pull: the messages of one exchange.
//!
//! One exchange, initiated by the node whose timer fired (or that just saw
//! a member come up), three messages, each answered by the next:
//!
//! ```text
//! initiator                                   responder
//!   Digest { names + versions,
//!            KV root + bucket hashes,
//!            members }                       ─▶
//!                           ◀─ Delta { records you lack, names I want,
//!                                      KV entries of differing buckets,
//!                                      the differing buckets, members }
//!   Records { the wanted records,
//!             my KV entries of those buckets } ─▶
//! ```
//!
//! [`Node::sync_open`](crate::node::Node::sync_open) makes the first
//! message and [`Node::on_sync`](crate::node::Node::on_sync) answers each
//! of the others; the agent (over TCP) and the simulator (on its virtual
//! network) both drive exactly these two calls. The transport checks the
//! order with [`SyncMessage::step`]: an initiator expects a
//! [`SyncStep::Delta`], a responder a [`SyncStep::Digest`] and then a
//! [`SyncStep::Records`].
//!
//! A quiet exchange (nothing differs) costs O(nodes + buckets), never
//! O(keys): KV entries only travel for buckets whose hashes differ.
//!
//! Every message also carries its sender's KV collection horizon (see
//! [`crate::kv`]). A side that sees the other *lack* one of its entries
//! (the key's bucket differs and the key is absent from the other's
//! entries of that bucket) older than the other's horizon drops it instead
//! of sending it: the initiator on the Delta, the responder on the Records.
//! This relies on a message carrying *every* entry of the buckets it names
//! (`kv_differing_buckets`, `kv_buckets`); a transport that splits the
//! entries over several messages must name in each only the buckets it
//! carries whole.
//!
//! Both sides also send the members they hold alive, and each adds the ones
//! its SWIM table lacks, as memberlist's push-pull does: a member that
//! missed a join's gossip learns of it at the next exchange rather than at
//! foca's next periodic announce.
//!
//! Over TCP, frames are a 4-byte big-endian length followed by an envelope
//! of kind [`PayloadKind::Sync`](crate::envelope::PayloadKind::Sync).

use std::fmt;

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

/// Initiator → responder: everything the initiator has, summarized.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Digest {
    /// Name and order of every record the initiator holds.
    pub nodes: Vec<DigestEntry>,
    /// Hash over all KV buckets: equal roots, nothing to compare.
    pub kv_root: u64,
    /// The hash of each KV bucket ([`crate::kv::BUCKETS`] of them).
    pub kv_bucket_hashes: Vec<u64>,
    /// The members the initiator holds alive (itself included).
    pub members: Vec<NodeId>,
    /// The initiator's KV collection horizon (0: it vouches for nothing).
    pub kv_horizon: u64,
}

/// Responder → initiator: records the initiator lacks, the names of records
/// the responder wants back, and the responder's KV entries in every bucket
/// whose hash differs.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Delta {
    pub records: Vec<NodeRecord>,
    /// Names of the records the initiator holds newer.
    pub wanted: Vec<String>,
    /// Every responder entry (tombstones included) in the differing buckets.
    pub kv_entries: Vec<KvEntry>,
    /// Indices of the buckets whose hashes differ: the initiator sends its
    /// own entries of these back.
    pub kv_differing_buckets: Vec<u16>,
    /// The members the responder holds alive (itself included).
    pub members: Vec<NodeId>,
    /// The responder's KV collection horizon.
    pub kv_horizon: u64,
}

/// Initiator → responder: the records asked for, and the initiator's KV
/// entries in the differing buckets. Closes the exchange.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Records {
    pub records: Vec<NodeRecord>,
    /// Every initiator entry in `kv_buckets`, but those it dropped.
    pub kv_entries: Vec<KvEntry>,
    /// The differing buckets, as the Delta named them: what `kv_entries`
    /// covers (the responder keeps no state between steps).
    pub kv_buckets: Vec<u16>,
    /// The initiator's KV collection horizon.
    pub kv_horizon: u64,
}

/// The messages of one push-pull exchange, in the order they are sent.
/// The encoding is that of each step's struct behind a variant tag.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum SyncMessage {
    Digest(Digest),
    Delta(Delta),
    Records(Records),
}

/// Which step of an exchange a message is, for transports that check the
/// order (and say what they got instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStep {
    Digest,
    Delta,
    Records,
}

impl SyncMessage {
    /// The step this message is.
    pub fn step(&self) -> SyncStep {
        match self {
            SyncMessage::Digest(_) => SyncStep::Digest,
            SyncMessage::Delta(_) => SyncStep::Delta,
            SyncMessage::Records(_) => SyncStep::Records,
        }
    }

    /// The step's name, for errors and logs.
    pub fn step_name(&self) -> &'static str {
        self.step().name()
    }
}

impl SyncStep {
    pub fn name(self) -> &'static str {
        match self {
            SyncStep::Digest => "Digest",
            SyncStep::Delta => "Delta",
            SyncStep::Records => "Records",
        }
    }

    /// The step that answers this one; `None` for the last.
    pub fn reply(self) -> Option<SyncStep> {
        match self {
            SyncStep::Digest => Some(SyncStep::Delta),
            SyncStep::Delta => Some(SyncStep::Records),
            SyncStep::Records => None,
        }
    }
}

impl fmt::Display for SyncStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
