//! The DNS interface: Consul's names (`web.service.consul`, SRV,
//! `<node>.node.consul`, ...) answered from the same [`Snapshot`] the HTTP
//! API reads, on its own thread so that a flood of queries never delays
//! the gossip loop.
//!
//! - [`names`]: what a query name asks for.
//! - [`answer`]: the records, from the catalog of a snapshot.
//! - [`respond`]: one query in, one encoded reply out (truncation, codes).
//! - [`server`]: the UDP and TCP loops, limits, the thread they run on.
//! - [`forward`]: names outside our domains, to `dns.recursors`.
//! - [`rate`]: response rate limiting of UDP answers per client prefix.
//! - [`tcp`]: TCP connections: caps per client and in all, who makes room.
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
pub mod forward;
pub mod names;
pub mod rate;
pub mod respond;
pub mod server;
pub mod skipped;
pub mod tcp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// What the DNS server counts (relaxed atomics: read for metrics only).
#[derive(Debug, Default)]
pub struct DnsCounters {
    /// Questions by type.
    pub queries_a: AtomicU64,
    pub queries_aaaa: AtomicU64,
    pub queries_srv: AtomicU64,
    pub queries_other: AtomicU64,
    /// Replies by response code.
    pub noerror: AtomicU64,
    pub nxdomain: AtomicU64,
    pub refused: AtomicU64,
    pub formerr: AtomicU64,
    pub servfail: AtomicU64,
    pub notimp: AtomicU64,
    /// Packets that could not be read as a DNS query (answered FORMERR
    /// when they had a header, dropped otherwise).
    pub malformed: AtomicU64,
    /// UDP replies sent with TC set (the client retries over TCP).
    pub truncated: AtomicU64,
    /// Queries forwarded to a recursor, and those no recursor answered.
    pub forwarded: AtomicU64,
    pub forward_failures: AtomicU64,
    /// TCP connections closed at once: `dns.max_tcp_connections` reached.
    pub tcp_rejected: AtomicU64,
    /// TCP connections closed after `dns.tcp_idle_timeout`.
    pub tcp_idle_closed: AtomicU64,
    /// TCP connections closed at once: their client address already held
    /// `dns.max_tcp_connections_per_client`.
    pub tcp_client_rejected: AtomicU64,
    /// TCP connections closed to make room for a new one at a cap: the
    /// one that had kept the server waiting longest (not reading its
    /// replies, or sending nothing).
    pub tcp_evicted: AtomicU64,
    /// TCP connections closed because the client did not read a reply
    /// for `dns.tcp_idle_timeout`.
    pub tcp_unread_closed: AtomicU64,
    /// Queries from clients outside `dns.allow_clients` (answered REFUSED).
    pub client_refused: AtomicU64,
    /// Names in our domains REFUSED because `acl.protect_reads` is on and
    /// `dns.serve_with_protect_reads` is not.
    pub protected_refused: AtomicU64,
    /// UDP queries past `dns.rate_limit`: dropped, or answered empty with
    /// TC set (those also in `rate_limit_truncated`).
    pub rate_limited: AtomicU64,
    pub rate_limit_truncated: AtomicU64,
    /// Time from a query's arrival to its reply being ready, histogram
    /// with the upper bounds in [`LATENCY_BOUNDS`] (the last one counts
    /// everything slower), and the sum in microseconds.
    pub latency_buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    pub latency_sum_micros: AtomicU64,
}

/// Upper bounds of the latency buckets.
pub const LATENCY_BOUNDS: [Duration; 5] = [
    Duration::from_micros(100),
    Duration::from_micros(250),
    Duration::from_micros(1000),
    Duration::from_millis(10),
    Duration::from_millis(100),
];

impl DnsCounters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_question(&self, qtype: RecordType) {
        Self::add(match qtype {
            RecordType::A => &self.queries_a,
            RecordType::AAAA => &self.queries_aaaa,
            RecordType::SRV => &self.queries_srv,
            _ => &self.queries_other,
        });
    }

    pub(crate) fn count_reply(&self, code: ResponseCode, took: Duration) {
        Self::add(match code {
            ResponseCode::NoError => &self.noerror,
            ResponseCode::NXDomain => &self.nxdomain,
            ResponseCode::Refused => &self.refused,
            ResponseCode::FormErr => &self.formerr,
            ResponseCode::NotImp => &self.notimp,
            _ => &self.servfail,
        });
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| took <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        Self::add(&self.latency_buckets[bucket]);
        self.latency_sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Every counter by name, for `/v1/agent/self` and tests.
    pub fn to_json(&self) -> serde_json::Value {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let buckets: Vec<u64> = self.latency_buckets.iter().map(get).collect();
        serde_json::json!({
            "queries": {
                "A": get(&self.queries_a),
                "AAAA": get(&self.queries_aaaa),
                "SRV": get(&self.queries_srv),
                "other": get(&self.queries_other),
            },
            "rcodes": {
                "NOERROR": get(&self.noerror),
                "NXDOMAIN": get(&self.nxdomain),
                "REFUSED": get(&self.refused),
                "FORMERR": get(&self.formerr),
                "SERVFAIL": get(&self.servfail),
                "NOTIMP": get(&self.notimp),
            },
            "malformed": get(&self.malformed),
            "truncated": get(&self.truncated),
            "forwarded": get(&self.forwarded),
            "forward_failures": get(&self.forward_failures),
            "tcp_rejected": get(&self.tcp_rejected),
            "tcp_idle_closed": get(&self.tcp_idle_closed),
            "tcp_client_rejected": get(&self.tcp_client_rejected),
            "tcp_evicted": get(&self.tcp_evicted),
            "tcp_unread_closed": get(&self.tcp_unread_closed),
            "client_refused": get(&self.client_refused),
            "protected_refused": get(&self.protected_refused),
            "rate_limited": get(&self.rate_limited),
            "rate_limit_truncated": get(&self.rate_limit_truncated),
            "latency_bounds_micros": LATENCY_BOUNDS.iter().map(|b| b.as_micros() as u64).collect::<Vec<_>>(),
            "latency_buckets": buckets,
            "latency_sum_micros": get(&self.latency_sum_micros),
        })
    }
}
