//! The immutable view of the cluster that readers (HTTP handlers, CLI) see.
//! The gossip loop publishes a new one after every change, so a busy API
//! never slows the loop down.

use shoal_protocol::node::Counters;
use shoal_protocol::{MemberView, NodeRecord};

#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Bumped on every publish that carries a change (never 0), for
    /// `X-Consul-Index`.
    pub index: u64,
    /// Our own record.
    pub local: NodeRecord,
    /// The membership table, ourselves included, sorted by name.
    pub members: Vec<MemberView>,
    /// Gossip counters as of this snapshot.
    pub counters: Counters,
    /// Records that claimed our node name with another identity.
    pub name_conflicts: u64,
    /// Datagrams we could not send (socket full or unreachable).
    pub send_failures: u64,
    /// Datagrams dropped before the loop because it was too busy.
    pub receive_drops: u64,
}
