//! What the DNS server counts (relaxed atomics: read at scrape time), and
//! how `/metrics` and `Stats.dns` of `/v1/agent/self` name it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::metrics::{AtomicHistogram, Counters, Exposition, Kind, Value, load};

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
    /// Service questions answered by a datacenter of `dns.failover`, ours
    /// having no instance.
    pub failovers: AtomicU64,
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
    /// Time from a query's arrival to its reply being ready.
    pub latency: ReplyLatency,
}

/// [`DnsCounters::latency`]: an [`AtomicHistogram`] of seconds with the
/// upper bounds in [`LATENCY_BUCKETS`].
#[derive(Debug)]
pub struct ReplyLatency(pub AtomicHistogram);

impl Default for ReplyLatency {
    fn default() -> Self {
        Self(AtomicHistogram::seconds(LATENCY_BUCKETS))
    }
}

/// Upper bounds of the reply latency buckets, in seconds: 100 µs to 100 ms.
pub const LATENCY_BUCKETS: &[f64] = &[0.0001, 0.00025, 0.001, 0.01, 0.1];

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
        self.latency.0.observe_duration(took);
    }
}

impl Counters for DnsCounters {
    fn prefix(&self) -> &'static str {
        "shoal_dns_"
    }

    fn visit(&self, out: &mut Exposition) {
        let queries = out.family(
            "shoal_dns_queries_total",
            "DNS questions answered, by record type.",
            Kind::Counter,
        );
        for (qtype, counter) in [
            ("A", &self.queries_a),
            ("AAAA", &self.queries_aaaa),
            ("SRV", &self.queries_srv),
            ("other", &self.queries_other),
        ] {
            queries.push(&[("type", qtype)], Value::Counter(load(counter)));
        }
        let replies = out.family(
            "shoal_dns_responses_total",
            "DNS replies, by response code.",
            Kind::Counter,
        );
        for (rcode, counter) in [
            ("NOERROR", &self.noerror),
            ("NXDOMAIN", &self.nxdomain),
            ("REFUSED", &self.refused),
            ("FORMERR", &self.formerr),
            ("SERVFAIL", &self.servfail),
            ("NOTIMP", &self.notimp),
        ] {
            replies.push(&[("rcode", rcode)], Value::Counter(load(counter)));
        }
        out.counter(
            "shoal_dns_malformed_total",
            "DNS packets that could not be read as a query (FORMERR or dropped).",
            load(&self.malformed),
        );
        out.counter(
            "shoal_dns_truncated_total",
            "UDP replies sent with TC set (the client retries over TCP).",
            load(&self.truncated),
        );
        out.counter(
            "shoal_dns_forwarded_total",
            "Queries outside the domains forwarded to a recursor.",
            load(&self.forwarded),
        );
        out.counter(
            "shoal_dns_forward_failures_total",
            "Forwarded queries that no recursor answered.",
            load(&self.forward_failures),
        );
        out.counter(
            "shoal_dns_failovers_total",
            "Service questions answered by a datacenter of dns.failover, ours having no instance.",
            load(&self.failovers),
        );
        out.counter(
            "shoal_dns_tcp_rejected_total",
            "DNS TCP connections closed at once: dns.max_tcp_connections reached.",
            load(&self.tcp_rejected),
        );
        out.counter(
            "shoal_dns_tcp_idle_closed_total",
            "DNS TCP connections closed after dns.tcp_idle_timeout.",
            load(&self.tcp_idle_closed),
        );
        out.counter(
            "shoal_dns_tcp_client_rejected_total",
            "DNS TCP connections closed at once: dns.max_tcp_connections_per_client reached.",
            load(&self.tcp_client_rejected),
        );
        out.counter(
            "shoal_dns_tcp_evicted_total",
            "DNS TCP connections closed to make room: they had kept the server waiting longest.",
            load(&self.tcp_evicted),
        );
        out.counter(
            "shoal_dns_tcp_unread_closed_total",
            "DNS TCP connections closed: the client did not read a reply for dns.tcp_idle_timeout.",
            load(&self.tcp_unread_closed),
        );
        out.counter(
            "shoal_dns_client_refused_total",
            "DNS queries REFUSED: the client is outside dns.allow_clients.",
            load(&self.client_refused),
        );
        out.counter(
            "shoal_dns_protected_refused_total",
            "DNS queries REFUSED for catalog names: acl.protect_reads without dns.serve_with_protect_reads.",
            load(&self.protected_refused),
        );
        out.counter(
            "shoal_dns_rate_limited_total",
            "UDP queries past dns.rate_limit: dropped or answered empty with TC.",
            load(&self.rate_limited),
        );
        out.counter(
            "shoal_dns_rate_limit_truncated_total",
            "UDP queries past dns.rate_limit answered empty with TC (the client retries over TCP).",
            load(&self.rate_limit_truncated),
        );
        out.histogram(
            "shoal_dns_request_duration_seconds",
            "Time from a DNS query's arrival to its reply being ready.",
            self.latency.0.snapshot(),
        );
    }
}
