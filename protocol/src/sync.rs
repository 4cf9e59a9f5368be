//! Anti-entropy push-pull over TCP.
//!
//! One exchange on one connection, initiated by the agent whose timer fired:
//!
//! ```text
//! initiator                         responder
//!   Digest(all names + versions) ─▶
//!                                ◀─ Delta { records you lack, names I want }
//!   Records(the wanted ones)    ─▶
//! ```
//!
//! Frames are a 4-byte big-endian length followed by an envelope of kind
//! [`PayloadKind::Sync`](crate::envelope::PayloadKind::Sync).

use bincode::{Decode, Encode};

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
    /// Initiator → responder: everything the initiator has.
    Digest(Vec<DigestEntry>),
    /// Responder → initiator: records the initiator lacks, and the names of
    /// records the responder wants back.
    Delta {
        records: Vec<NodeRecord>,
        wanted: Vec<String>,
    },
    /// Initiator → responder: the records asked for.
    Records(Vec<NodeRecord>),
}
