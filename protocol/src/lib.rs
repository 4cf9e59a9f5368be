//! Shoal's protocol core: everything that must agree across the cluster,
//! with no I/O and no clock reads. Callers pass in bytes and timers and carry
//! out the effects.
//!
//! - [`identity`]: [`NodeId`], the renewable SWIM identity.
//! - [`lifeguard`]: local health awareness that stretches a struggling
//!   node's probe and suspicion timers.
//! - [`clock`]: the time drivers pass in, and the drift bound on peers'
//!   times and generations.
//! - [`envelope`]: magic, version, cluster id and payload kind on every packet.
//! - [`keyring`]: the cluster keys that seal packets when encryption is on.
//! - [`codec`]: bincode 2 encoding and the `foca::Codec`.
//! - [`record`]: [`NodeRecord`], the single-writer state of one node.
//! - [`kv`]: the replicated last-writer-wins KV store and its buckets.
//! - [`state`]: [`ClusterState`], all records and their merge rule.
//! - [`rumor`]: node-record, KV and user-event broadcasts riding on SWIM
//!   traffic.
//! - [`event`]: user events: Lamport clock, deduplication, bounds.
//! - [`forward`]: the messages of a read forwarded to another datacenter.
//! - [`pull`]: bounded pulls of what digest rumors announce.
//! - [`anti_entropy`]: the anti-entropy push-pull messages, one struct per step.
//! - [`node`]: [`Node`], foca plus all of the above, as one state machine:
//!   `node/mod.rs` (datagrams, timers, our record, KV writes), `config`
//!   ([`GossipConfig`]), `effects` ([`node::Effects`], [`NodeTimer`], local
//!   health wiring), `join` (seeds, rejoin, leave), `members`
//!   ([`MemberView`]), `anti_entropy` (the step function [`Node::on_sync`],
//!   driven by the agent over TCP and by the simulator alike), `pages` (the
//!   KV pages of an exchange), `events` (user events fired and delivered),
//!   `name` (nobody else may hold our node name), `coordinates` (our network
//!   coordinate, fed by our probes), `peers` (what peers can
//!   make the node hold, bounded: pulls, learned members, stale records),
//!   `reap` (forgetting members that are gone; force-leave), `suspects`
//!   (who is suspect, and the accusations that shorten a suspicion) and
//!   `bounded_codec` (foca's codec, refusing identities from the future).
//! - [`suspicion`]: Lifeguard's dynamic suspicion timeout.
//! - [`coordinate`]: network coordinates (Vivaldi, as Serf's).
//! - [`fuzzing`]: the fuzz targets' entry points (replayed by the tests).

pub mod anti_entropy;
pub mod clock;
pub mod codec;
pub mod coordinate;
pub mod envelope;
pub mod event;
pub mod forward;
pub mod fuzzing;
pub mod identity;
pub mod keyring;
pub mod kv;
pub mod lifeguard;
pub mod node;
pub mod pull;
pub mod record;
pub mod rumor;
pub mod state;
pub mod suspicion;

pub use envelope::{Envelope, PayloadKind};
pub use identity::NodeId;
pub use node::{
    Changes, ForceLeaveError, ForceLeft, GossipConfig, MemberStatus, MemberView, NameEvent, Node,
    NodeTimer,
};
pub use record::{CheckRecord, CheckStatus, Health, NodeRecord, ServiceRecord};
pub use state::ClusterState;
