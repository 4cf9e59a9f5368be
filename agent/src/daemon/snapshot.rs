//! The immutable view of the cluster that readers (HTTP handlers, CLI) see.
//! The gossip loop publishes a new one after every change, so a busy API
//! never slows the loop down.

use std::time::{Duration, SystemTime};

use shoal_protocol::node::Counters;
use shoal_protocol::record::CheckRecord;
use shoal_protocol::{MemberView, NodeRecord};

/// One published state of the agent: cluster, registry, KV and counters.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Bumped on every publish that carries a change (never 0), for
    /// `X-Consul-Index`.
    pub index: u64,
    /// Our own record (services included).
    pub local: NodeRecord,
    /// The membership table, ourselves included, sorted by name.
    pub members: Vec<MemberView>,
    /// Every local check, with its full output.
    pub local_checks: Vec<CheckDetail>,
    /// The KV store (an O(1) copy of a persistent map).
    pub kv: shoal_protocol::kv::KvStore,
    /// Whether the configured services and checks are loaded.
    pub checks_loaded: bool,
    /// Gossip counters as of this snapshot.
    pub counters: Counters,
    /// Records that claimed our node name with another identity.
    pub name_conflicts: u64,
    /// Datagrams we could not send (socket full or unreachable).
    pub send_failures: u64,
    /// Datagrams dropped before the loop because it was too busy.
    pub receive_drops: u64,
}

/// A check registered on this agent in full detail, as the agent's own
/// API shows it (`/v1/agent/checks`, `/health/detailed`).
#[derive(Clone, Debug)]
pub struct CheckDetail {
    /// With the full output (up to 4 KiB), not the gossiped excerpt.
    pub record: CheckRecord,
    pub service_id: Option<String>,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub last_run: Option<SystemTime>,
    pub last_duration: Option<Duration>,
}
