//! Shoal's protocol core: everything that must agree across the cluster,
//! with no I/O and no clock reads. Callers pass in bytes and timers and carry
//! out the effects.
//!
//! - [`identity`]: [`NodeId`], the renewable SWIM identity.
//! - [`lifeguard`]: local health awareness that stretches a struggling
//!   node's probe and suspicion timers.
//! - [`envelope`]: magic, version, cluster id and payload kind on every packet.
//! - [`codec`]: bincode 2 encoding and the `foca::Codec`.
//! - [`record`]: [`NodeRecord`], the single-writer state of one node.
//! - [`state`]: [`ClusterState`], all records and their merge rule.
//! - [`rumor`]: node-record broadcasts riding on SWIM traffic.
//! - [`pull`]: bounded pulls of what digest rumors announce.
//! - [`sync`]: anti-entropy push-pull messages (TCP).
//! - [`node`]: [`Node`], foca plus all of the above, as one state machine.
//! - [`fuzzing`]: the fuzz targets' entry points (replayed by the tests).

pub mod codec;
pub mod envelope;
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
pub mod sync;

pub use envelope::{Envelope, PayloadKind};
pub use identity::NodeId;
pub use node::{GossipConfig, MemberStatus, MemberView, Node, NodeTimer};
pub use record::{CheckRecord, CheckStatus, Health, NodeRecord, ServiceRecord};
pub use state::ClusterState;
