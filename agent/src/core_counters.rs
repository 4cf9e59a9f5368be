//! The core loop's counters (gossip traffic, what peers sent that was
//! refused, SWIM and Lifeguard) and its local checks' details, published
//! to readers apart from the [`Snapshot`](crate::snapshot::Snapshot), and
//! how `/metrics` and `Stats.gossip` of `/v1/agent/self` name them.

use shoal_protocol::lifeguard::HealthCounters;

use crate::metrics::{Counters, Exposition, Kind, Value};
use crate::snapshot::CheckDetail;

/// Counters and local check details: they change with every datagram and
/// check run, so they are published apart from the
/// [`Snapshot`](crate::snapshot::Snapshot), on a timer and
/// with every snapshot, and wake no blocking query.
#[derive(Clone, Debug, Default)]
pub struct CoreCounters {
    /// Gossip counters.
    pub counters: shoal_protocol::node::Counters,
    /// Records that claimed our node name with another identity.
    pub name_conflicts: u64,
    /// Datagrams we could not send (socket full or unreachable).
    pub send_failures: u64,
    /// Datagrams dropped before the loop because it was too busy.
    pub receive_drops: u64,
    /// Every local check, with its full output and last run.
    pub local_checks: Vec<CheckDetail>,
    /// The Lifeguard local-health score (0 = healthy; see
    /// `shoal_protocol::lifeguard`).
    pub health_score: u32,
    /// What fed the local-health score: probes, refutations, suspicions.
    pub health: HealthCounters,
    /// What dynamic suspicion did (see `shoal_protocol::suspicion`).
    pub suspicion: shoal_protocol::suspicion::SuspicionCounters,
    /// Members' network coordinates, refreshed every couple of seconds.
    pub coordinates: std::sync::Arc<crate::coordinates::NodeCoordinates>,
    /// What our coordinate client did (see `shoal_protocol::coordinate`).
    pub vivaldi: shoal_protocol::coordinate::VivaldiStats,
}

impl Counters for CoreCounters {
    /// Names outside it (`shoal_swim_*`, `shoal_local_health_score`) show
    /// in `Stats.gossip` without `shoal_`.
    fn prefix(&self) -> &'static str {
        "shoal_gossip_"
    }

    fn visit(&self, out: &mut Exposition) {
        let counters = &self.counters;
        let health = &self.health;
        let counter = |out: &mut Exposition, name, help, value| out.counter(name, help, value);
        counter(
            out,
            "shoal_gossip_received_datagrams_total",
            "Gossip datagrams received by the core loop.",
            counters.datagrams_in,
        );
        counter(
            out,
            "shoal_gossip_received_bytes_total",
            "Bytes of gossip datagrams received by the core loop.",
            counters.bytes_in,
        );
        counter(
            out,
            "shoal_gossip_sent_datagrams_total",
            "Gossip datagrams sent.",
            counters.datagrams_out,
        );
        counter(
            out,
            "shoal_gossip_sent_bytes_total",
            "Bytes of gossip datagrams sent.",
            counters.bytes_out,
        );
        counter(
            out,
            "shoal_gossip_rejected_envelopes_total",
            "Datagrams dropped at the envelope (another cluster, bad magic or version, no key to open them).",
            counters.rejected_envelope,
        );
        counter(
            out,
            "shoal_gossip_rejected_wire_version_total",
            "Datagrams in a wire version this agent does not speak (also in rejected_envelopes).",
            counters.rejected_wire_version,
        );
        let family = out.family(
            "shoal_gossip_received_datagrams_by_wire_version_total",
            "Gossip datagrams accepted, by the wire version they came in.",
            Kind::Counter,
        );
        for (version, count) in &counters.datagrams_in_by_version {
            family.push(
                &[("wire_version", &version.to_string())],
                Value::Counter(*count),
            );
        }
        counter(
            out,
            "shoal_gossip_skipped_unknown_rumors_total",
            "Rumors of a kind this agent does not know (a newer agent's), skipped.",
            counters.skipped_unknown_rumors,
        );
        counter(
            out,
            "shoal_swim_coordinates_received_total",
            "Network coordinates that arrived on peers' acks.",
            counters.coordinates_received,
        );
        counter(
            out,
            "shoal_gossip_rejected_swim_total",
            "Datagrams that opened but that the SWIM layer refused.",
            counters.rejected_swim,
        );
        counter(
            out,
            "shoal_gossip_receive_drops_total",
            "Datagrams dropped before the core loop (loop behind, or oversized).",
            self.receive_drops,
        );
        counter(
            out,
            "shoal_gossip_send_failures_total",
            "Datagrams that could not be sent (socket full or unreachable).",
            self.send_failures,
        );
        out.family(
            "shoal_gossip_refused_records_total",
            "Node records and KV entries from peers refused, by reason.",
            Kind::Counter,
        )
        .push(
            &[("reason", "limits")],
            Value::Counter(counters.refused_records),
        )
        .push(
            &[("reason", "clock_drift")],
            Value::Counter(counters.refused_clock_drift),
        )
        .push(
            &[("reason", "deleted")],
            Value::Counter(counters.refused_deleted),
        )
        .push(
            &[("reason", "kv_quota")],
            Value::Counter(counters.refused_kv_quota),
        );
        counter(
            out,
            "shoal_gossip_synced_records_total",
            "Node records merged from anti-entropy exchanges.",
            counters.synced_records,
        );
        counter(
            out,
            "shoal_gossip_members_down_total",
            "Members this agent saw go down (failed or left).",
            counters.members_down,
        );
        counter(
            out,
            "shoal_gossip_name_conflicts_total",
            "Records that claimed this agent's node name under another identity.",
            self.name_conflicts,
        );
        counter(
            out,
            "shoal_swim_probes_sent_total",
            "Direct SWIM probes (pings) sent.",
            health.probes_sent,
        );
        counter(
            out,
            "shoal_swim_probes_failed_total",
            "SWIM probes that got neither a direct nor an indirect answer in time.",
            health.probe_failures,
        );
        counter(
            out,
            "shoal_swim_suspicions_total",
            "Times a member was marked suspect (by our probe or by gossip).",
            health.suspicions,
        );
        counter(
            out,
            "shoal_swim_accusations_total",
            "Accusations counted: a member (this agent included) whose own probe of a suspect failed too (Lifeguard's dynamic suspicion).",
            self.suspicion.accusations,
        );
        counter(
            out,
            "shoal_swim_suspicions_shortened_total",
            "Suspicions that accusations made end sooner than they started (towards the minimum timeout).",
            self.suspicion.shortened,
        );
        counter(
            out,
            "shoal_swim_suspicion_reminders_total",
            "Suspicions this agent sent to the suspect itself with something it sent it anyway, so that a member that heard nothing for a while refutes (Lifeguard's buddy system).",
            self.suspicion.reminders,
        );
        counter(
            out,
            "shoal_swim_refutations_total",
            "Times this agent refuted a suspicion about itself.",
            health.refutations,
        );
        counter(
            out,
            "shoal_swim_coordinate_samples_total",
            "Round trips of this agent's direct probes taken into its network coordinate.",
            self.vivaldi.samples,
        );
        counter(
            out,
            "shoal_swim_coordinate_samples_refused_total",
            "Round trips or peers' coordinates refused by the coordinate client (over 10 s, out of range).",
            self.vivaldi.refused,
        );
        counter(
            out,
            "shoal_swim_coordinate_resets_total",
            "Times this agent's network coordinate became invalid and started over at the origin.",
            self.vivaldi.resets,
        );
        counter(
            out,
            "shoal_swim_lagging_cycles_total",
            "Probe cycles in which the core loop handled an event late.",
            health.lagging_cycles,
        );
        out.gauge(
            "shoal_local_health_score",
            "Lifeguard local-health score: 0 is healthy; probe and suspicion timers stretch by score + 1.",
            f64::from(self.health_score),
        );
    }
}
