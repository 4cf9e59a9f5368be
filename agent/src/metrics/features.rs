//! Metrics of the features beside the gossip loop: the DNS interface,
//! templates, watches and user events. Each keeps its own atomic counters; these read them at
//! scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

use super::histogram::HistogramSnapshot;
use super::{Exposition, Kind, MetricSource, Value};
use crate::dns::{DnsCounters, LATENCY_BOUNDS};
use crate::events::EventCounters;
use crate::template::TemplateCounters;
use crate::watches::WatchCounters;

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl MetricSource for TemplateCounters {
    fn collect(&self, out: &mut Exposition) {
        out.counter(
            "shoal_template_renders_total",
            "Renders of configured templates, failed ones included.",
            load(&self.renders),
        );
        out.counter(
            "shoal_template_errors_total",
            "Template renders that failed or whose file could not be written (the old file is kept).",
            load(&self.errors),
        );
        out.counter(
            "shoal_template_writes_total",
            "Template destination files written because the output changed.",
            load(&self.writes),
        );
        out.counter(
            "shoal_template_command_runs_total",
            "Template commands started.",
            load(&self.command_runs),
        );
        out.counter(
            "shoal_template_command_failures_total",
            "Template commands that exited non-zero, timed out or could not start.",
            load(&self.command_failures),
        );
        out.counter(
            "shoal_template_dry_runs_total",
            "Template dry runs through the API.",
            load(&self.api_renders),
        );
        out.counter(
            "shoal_template_dry_runs_refused_total",
            "Template dry runs refused (429) because another one was running.",
            load(&self.api_renders_refused),
        );
    }
}

impl MetricSource for WatchCounters {
    fn collect(&self, out: &mut Exposition) {
        out.counter(
            "shoal_watch_runs_total",
            "Watch handler runs started.",
            load(&self.runs),
        );
        out.counter(
            "shoal_watch_failures_total",
            "Watch handler runs that failed (non-zero exit, timeout, HTTP error).",
            load(&self.failures),
        );
        out.gauge(
            "shoal_watch_running",
            "Watch handlers running now.",
            load(&self.running) as f64,
        );
    }
}

impl MetricSource for EventCounters {
    fn collect(&self, out: &mut Exposition) {
        out.counter(
            "shoal_events_fired_total",
            "User events fired through this agent's API.",
            load(&self.fired),
        );
        out.counter(
            "shoal_events_listed_total",
            "User events delivered here whose filters matched this agent.",
            load(&self.listed),
        );
        out.counter(
            "shoal_events_filtered_out_total",
            "User events delivered here whose filters did not match this agent.",
            load(&self.filtered_out),
        );
        out.counter(
            "shoal_events_refused_total",
            "User events from peers refused as out of bounds.",
            load(&self.refused),
        );
        out.counter(
            "shoal_events_ignored_old_total",
            "User events fired before this agent started, or too old: not replayed.",
            load(&self.ignored_old),
        );
        out.counter(
            "shoal_events_refused_ltime_total",
            "User events from peers refused because their Lamport time was too far ahead of ours.",
            load(&self.refused_ltime),
        );
        out.counter(
            "shoal_events_rate_limited_total",
            "User event fires refused (429) past events.fire_rate / events.fire_burst.",
            load(&self.rate_limited),
        );
        out.counter(
            "shoal_events_backlog_dropped_total",
            "User events dropped from the gossip backlog, oldest first, to keep it bounded.",
            load(&self.backlog_dropped),
        );
    }
}

impl MetricSource for DnsCounters {
    fn collect(&self, out: &mut Exposition) {
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
        let mut latency = HistogramSnapshot {
            buckets: Vec::with_capacity(LATENCY_BOUNDS.len()),
            sum: load(&self.latency_sum_micros) as f64 / 1e6,
            count: 0,
        };
        for (bound, counter) in LATENCY_BOUNDS.iter().zip(&self.latency_buckets) {
            let observed = load(counter);
            latency.count += observed;
            latency.buckets.push((bound.as_secs_f64(), observed));
        }
        latency.count += self.latency_buckets.last().map_or(0, load);
        out.histogram(
            "shoal_dns_request_duration_seconds",
            "Time from a DNS query's arrival to its reply being ready.",
            latency,
        );
    }
}
