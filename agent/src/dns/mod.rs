//! The DNS interface: Consul's names (`web.service.consul`, SRV,
//! `<node>.node.consul`, ...) answered from the same [`Snapshot`] the HTTP
//! API reads, on the agent's runtime beside the API (the core loop has a
//! thread of its own, so a flood of queries never delays it).
//!
//! - [`names`]: what a query name asks for.
//! - [`answer`]: the records, from the catalog of a snapshot.
//! - [`respond`]: one query in, one encoded reply out (truncation, codes).
//! - [`server`]: the UDP and TCP loops, limits, the thread they run on.
//! - [`forward`]: names outside our domains, to `dns.recursors`.
//! - [`rate`]: response rate limiting of UDP answers per client prefix.
//! - [`tcp`]: TCP connections: caps per client and in all, who makes room.
//! - [`counters`]: what the server counts, and how `/metrics` names it.
//! - [`skipped`]: services DNS can't serve (`_` in the name), logged once.
//!
//! We use `hickory-proto` for the wire format and run our own loops rather
//! than `hickory-server`: its request handler is built around zones and
//! authorities, while our answers come from a snapshot per query, and we
//! need what it does not give us: a cap on TCP connections, counters for
//! every malformed packet, and truncation decided by us (answer limit,
//! SRV extras dropped first).
//!
//! [`Snapshot`]: crate::snapshot::Snapshot

pub mod answer;
pub mod counters;
pub mod forward;
pub mod names;
pub mod rate;
pub mod respond;
pub mod server;
pub mod skipped;
pub mod tcp;

pub use counters::DnsCounters;
