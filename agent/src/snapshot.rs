//! What readers (HTTP handlers, CLI) see of the agent, published by the
//! core loop so that a busy API never slows the loop down, in two
//! channels:
//!
//! - [`Snapshot`]: the cluster and the KV store, published when they
//!   change, and only then: blocking queries wait on it, so every publish
//!   wakes them.
//! - [`CoreCounters`](crate::core_counters::CoreCounters): counters and
//!   the local checks' run details, which move all the time; published on
//!   a timer too, and waited on by nobody.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_protocol::record::CheckRecord;
use shoal_protocol::{MemberView, NodeId, NodeRecord};

/// One published state of the cluster and the KV store.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Bumped on every publish, which always carries a change, for
    /// `X-Consul-Index`: never 0, never below a KV `ModifyIndex`, and
    /// larger than any index of an earlier start (see `daemon::index`).
    pub index: u64,
    /// The `index` at which the membership or a node record (ours
    /// included) last changed: catalog and health queries wait on it.
    pub cluster_index: u64,
    /// The `index` at which the KV store last changed: KV and flag
    /// queries wait on it.
    pub kv_index: u64,
    /// Our own record (services included).
    pub local: NodeRecord,
    /// The membership table, ourselves included, sorted by name; shared
    /// with the previous snapshot when only the KV changed.
    pub members: Arc<Vec<MemberView>>,
    /// The KV store (an O(1) copy of a persistent map).
    pub kv: shoal_protocol::kv::KvStore,
    /// Whether the configured services and checks are loaded.
    pub checks_loaded: bool,
    /// A live agent elsewhere that also claims our node name (see
    /// `shoal_protocol::node::NameEvent`).
    pub name_rival: Option<NodeId>,
    /// The recent user events for this agent, oldest first (see
    /// `crate::events`); shared with the previous snapshot when unchanged.
    pub events: Arc<Vec<Arc<shoal_protocol::event::UserEvent>>>,
    /// The `index` at which `events` last changed: the event list waits
    /// on it.
    pub event_index: u64,
}

impl Snapshot {
    /// At which index each part last changed (see [`crate::reads`]).
    pub fn indexes(&self) -> crate::reads::Indexes {
        crate::reads::Indexes {
            cluster: self.cluster_index,
            kv: self.kv_index,
            events: self.event_index,
        }
    }
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
