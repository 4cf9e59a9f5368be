//! Anti-entropy push-pull: the messages of one exchange.
//!
//! One exchange, initiated by the node whose timer fired (or that just saw
//! a member come up, or pulls what a digest rumor announced). Each message
//! is answered by the next until both sides have sent all their KV pages:
//!
//! ```text
//! initiator                                   responder
//!   Digest { summary: hashes of the records'
//!            names + versions, of the members
//!            and of the KV store }            ─▶
//!                           ◀─ Delta { resend } when a hash differs, else
//!                                      an empty Delta (go to Records)
//!   Digest { names + versions,
//!            KV root + bucket hashes,
//!            members }                       ─▶
//!                           ◀─ Delta { records you lack, names I want,
//!                                      members, KvPage { the differing
//!                                      buckets, my first page } }
//!   Records { the wanted records,
//!             KvPage { my first page } }    ─▶
//!                           ◀─ Kv(KvPage { my next page })
//!   Kv(KvPage { my next page })             ─▶
//!   ...                     until a page says neither side has more
//! ```
//!
//! KV entries travel in pages of at most [`PAGE_BYTES`] (one entry at
//! least, so a page always makes progress), so an exchange carries a store
//! of any size without a frame over the limit, and node records, which go
//! first, are never held back by KV volume. A page holds the sender's
//! entries in the differing buckets, walked in key order from a key the
//! sender picked at random (wrapping around at the end): an exchange that
//! is cut short (a timeout, a restart) leaves the receiver with what it got,
//! and the next one starts elsewhere, so repeated failures can't resend the
//! same first pages forever. Pages are stateless on both sides: each one
//! echoes where the receiver's own walk stands ([`KvPage::yours`]).
//!
//! [`Node::sync_open`](crate::node::Node::sync_open) makes the first
//! message and [`Node::on_sync`](crate::node::Node::on_sync) answers each
//! of the others; the agent (over TCP) and the simulator (on its virtual
//! network) both drive exactly these two calls. The transport checks the
//! order: after sending a message it expects [`SyncMessage::expects`]
//! back, or nothing when that is `None` (the exchange is over).
//!
//! A quiet exchange (nothing differs) costs O(1) bytes: the first digest
//! is a summary (three hashes), and only when one of them differs does the
//! responder ask for the full digest ([`Delta::resend`]), which costs
//! O(nodes + buckets), never O(keys): KV entries only travel for buckets
//! whose hashes differ. memberlist's push-pull always sends the full state;
//! in a converged cluster almost every exchange is quiet, so this keeps the
//! bytes of anti-entropy flat in the cluster size.
//!
//! Nothing is dropped because the other side *lacks* it: a side that lacks
//! an entry may never have seen it. A delete whose tombstone was collected
//! travels back as a tombstone, from the per-key memory of the side that
//! collected it (see [`crate::kv`], "Remembered deletes"). A page still
//! says what it shows whole: every sender entry of the differing buckets
//! whose key lies in the stretch of the sender's walk from
//! [`KvPage::from`] to [`KvPage::next`] ([`KvPage::covers`]).
//!
//! The digest and every page carry a `horizon` field (version 1's
//! collection horizon, with which an earlier agent dropped the entries a
//! peer lacked below it). This version always sends 0 there, which an
//! earlier agent reads as "vouches for nothing", and ignores what it gets.
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
    /// Name and order of every record the initiator holds (empty in a
    /// summary).
    pub nodes: Vec<DigestEntry>,
    /// Hash over all KV buckets: equal roots, nothing to compare.
    pub kv_root: u64,
    /// The hash of each KV bucket ([`crate::kv::BUCKETS`] of them; empty
    /// in a summary).
    pub kv_bucket_hashes: Vec<u64>,
    /// The members the initiator holds alive (itself included; empty in a
    /// summary).
    pub members: Vec<NodeId>,
    /// Version 1's KV collection horizon: always 0 from this version, which
    /// vouches for nothing (see the module docs); ignored on receipt.
    pub kv_horizon: u64,
    /// Hash of `nodes` (see [`nodes_hash`]), sent in full or not.
    pub nodes_hash: u64,
    /// Hash of `members` (see [`members_hash`]), sent in full or not.
    pub members_hash: u64,
    /// The lists are left out: the responder compares the hashes and asks
    /// for the full digest ([`Delta::resend`]) when one differs.
    pub summary: bool,
}

/// Hash of a digest's record entries, whatever their order.
pub fn nodes_hash(entries: &[DigestEntry]) -> u64 {
    let mut sorted: Vec<&DigestEntry> = entries.iter().collect();
    sorted.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let mut bytes = Vec::with_capacity(sorted.len() * 32);
    for entry in sorted {
        bytes.extend_from_slice(&(entry.name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(entry.name.as_bytes());
        bytes.extend_from_slice(&entry.generation.to_le_bytes());
        bytes.extend_from_slice(&entry.version.to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Hash of a list of members, whatever their order.
pub fn members_hash(members: &[NodeId]) -> u64 {
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    let mut bytes = Vec::with_capacity(sorted.len() * 32);
    for id in sorted {
        match id.addr.ip() {
            std::net::IpAddr::V4(ip) => bytes.extend_from_slice(&ip.octets()),
            std::net::IpAddr::V6(ip) => bytes.extend_from_slice(&ip.octets()),
        }
        bytes.extend_from_slice(&id.addr.port().to_le_bytes());
        bytes.extend_from_slice(&id.generation.to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Most KV bytes (keys, values, writer names) in one page. Far above one
/// entry (at most 512 KiB of value), far below the frame limit.
pub const PAGE_BYTES: usize = 2 * 1024 * 1024;

/// Where a side's walk over its KV entries stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct KvCursor {
    /// The key the walk began at, picked at random by the walking side;
    /// `None` until its first page.
    pub start: Option<String>,
    /// The last key sent.
    pub after: Option<String>,
    /// Whether the walk went past the last key and continues from the
    /// first one up to `start`.
    pub wrapped: bool,
}

/// One page of one side's KV entries in the differing buckets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct KvPage {
    /// The buckets whose hashes differed when the exchange began (the
    /// Delta's), carried along so that neither side keeps state.
    pub buckets: Vec<u16>,
    /// The sender's entries (tombstones included), next in its walk.
    pub entries: Vec<KvEntry>,
    /// Where the sender's walk continues; `None`: it has sent all.
    pub next: Option<KvCursor>,
    /// Where the receiver's walk continues (its last `next`, echoed);
    /// `None`: it has sent all.
    pub yours: Option<KvCursor>,
    /// Where in the sender's walk this page began: with `next`, the
    /// stretch it shows whole. `None`: it shows nothing (the sender had
    /// already sent all).
    pub from: Option<KvCursor>,
    /// Version 1's KV collection horizon: always 0 from this version (see
    /// [`Digest::kv_horizon`]); ignored on receipt.
    pub horizon: u64,
}

impl KvPage {
    /// Neither side has more to send: the page closes the exchange.
    pub fn is_last(&self) -> bool {
        self.next.is_none() && self.yours.is_none()
    }

    /// Whether the page shows every sender entry of the differing buckets:
    /// none differ, or its walk began and ended in this page.
    pub fn is_whole(&self) -> bool {
        self.buckets.is_empty()
            || (self.next.is_none() && self.from.as_ref().is_some_and(KvCursor::is_fresh))
    }

    /// Whether `key` lies in the stretch of the sender's walk this page
    /// shows whole (see [`KvPage::from`]).
    pub fn covers(&self, key: &str) -> bool {
        let Some(from) = &self.from else {
            return false;
        };
        let Some(start) = from.start.as_deref() else {
            return false;
        };
        if self
            .next
            .as_ref()
            .is_some_and(|next| next.start.as_deref() != Some(start))
        {
            return false;
        }
        let key = place(start, key);
        let lower_ok = match (&from.after, from.wrapped) {
            (None, false) => key >= place(start, start),
            (None, true) => key.0 == 1,
            (Some(after), wrapped) => key > (u8::from(wrapped), after.as_str()),
        };
        let upper_ok = match &self.next {
            None => true,
            Some(next) => match (&next.after, next.wrapped) {
                (Some(after), wrapped) => key <= (u8::from(wrapped), after.as_str()),
                (None, true) => key.0 == 0,
                (None, false) => false,
            },
        };
        lower_ok && upper_ok
    }
}

/// A key's place in a walk from `start`: the keys from `start` to the end
/// come first (0), then those before `start` (1).
fn place<'k>(start: &str, key: &'k str) -> (u8, &'k str) {
    (u8::from(key < start), key)
}

impl KvCursor {
    /// A walk at its start key, nothing sent yet.
    pub fn is_fresh(&self) -> bool {
        self.start.is_some() && self.after.is_none() && !self.wrapped
    }
}

/// Responder → initiator: records the initiator lacks, the names of records
/// the responder wants back, and the first page of the responder's KV
/// entries in the buckets whose hashes differ.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Delta {
    pub records: Vec<NodeRecord>,
    /// Names of the records the initiator holds newer.
    pub wanted: Vec<String>,
    /// The responder's first page; `buckets` names the differing buckets,
    /// `yours` is the initiator's walk, not begun.
    pub kv: KvPage,
    /// The members the responder holds alive (itself included).
    pub members: Vec<NodeId>,
    /// The answer to a summary digest whose hashes differ from ours:
    /// nothing else is set, and the initiator sends its full digest next.
    pub resend: bool,
}

/// Initiator → responder: the records asked for, and the first page of the
/// initiator's KV entries in the differing buckets. Closes the exchange
/// when neither side has more pages.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Records {
    pub records: Vec<NodeRecord>,
    pub kv: KvPage,
}

/// The messages of one push-pull exchange, in the order they are sent.
/// The encoding is that of each step's struct behind a variant tag.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum SyncMessage {
    Digest(Digest),
    Delta(Delta),
    Records(Records),
    /// Either way, after `Records`: the next page.
    Kv(KvPage),
}

/// Which step of an exchange a message is, for transports that check the
/// order (and say what they got instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStep {
    Digest,
    Delta,
    Records,
    Kv,
}

impl SyncMessage {
    /// The step this message is.
    pub fn step(&self) -> SyncStep {
        match self {
            SyncMessage::Digest(_) => SyncStep::Digest,
            SyncMessage::Delta(_) => SyncStep::Delta,
            SyncMessage::Records(_) => SyncStep::Records,
            SyncMessage::Kv(_) => SyncStep::Kv,
        }
    }

    /// The step that answers this message; `None` when it closes the
    /// exchange.
    pub fn expects(&self) -> Option<SyncStep> {
        match self {
            SyncMessage::Digest(_) => Some(SyncStep::Delta),
            SyncMessage::Delta(delta) if delta.resend => Some(SyncStep::Digest),
            SyncMessage::Delta(_) => Some(SyncStep::Records),
            SyncMessage::Records(Records { kv, .. }) | SyncMessage::Kv(kv) => {
                (!kv.is_last()).then_some(SyncStep::Kv)
            }
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
            SyncStep::Kv => "Kv",
        }
    }
}

impl fmt::Display for SyncStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
