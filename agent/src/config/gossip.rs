//! The `[gossip]` table: SWIM and anti-entropy tuning, onto
//! [`GossipConfig`]'s defaults (memberlist's LAN profile).

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use shoal_protocol::GossipConfig;

use super::file::FileGossip;
use super::{ConfigError, invalid, parse_duration};

/// Most members one gossip round may go to.
const MAX_GOSSIP_NODES: usize = 32;

/// Least `gossip.reconnect_timeout`: Consul's minimum. A failed member
/// forgotten sooner is no longer tried, so a partition that outlasts it
/// heals only through the seeds.
pub const MIN_RECONNECT_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
/// Least `gossip.tombstone_timeout`. A left member must stay listed as left
/// long enough for the leave to reach every agent and for operators and
/// tools (watches, `shoal members`) to see it.
pub const MIN_TOMBSTONE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The gossip settings, with `seeds` (the `join` addresses) to announce to.
pub(super) fn gossip_config(
    file: Option<FileGossip>,
    seeds: Vec<SocketAddr>,
) -> Result<GossipConfig, ConfigError> {
    tuned(file, GossipConfig::default(), seeds, "gossip")
}

/// `defaults` with the keys of `file` (the table named `table`) over
/// them, and `seeds` to announce to.
pub(super) fn tuned(
    file: Option<FileGossip>,
    defaults: GossipConfig,
    seeds: Vec<SocketAddr>,
    table: &str,
) -> Result<GossipConfig, ConfigError> {
    let file = file.unwrap_or_default();
    let mut gossip = GossipConfig { seeds, ..defaults };
    let durations: [(&str, &Option<String>, &mut Duration); 6] = [
        (
            "probe_interval",
            &file.probe_interval,
            &mut gossip.probe_period,
        ),
        ("probe_timeout", &file.probe_timeout, &mut gossip.probe_rtt),
        (
            "gossip_interval",
            &file.gossip_interval,
            &mut gossip.gossip_interval,
        ),
        (
            "push_pull_interval",
            &file.push_pull_interval,
            &mut gossip.anti_entropy_interval,
        ),
        (
            "leave_propagate_delay",
            &file.leave_propagate_delay,
            &mut gossip.leave_spread,
        ),
        (
            "reannounce_interval",
            &file.reannounce_interval,
            &mut gossip.seed_reannounce,
        ),
    ];
    for (key, text, target) in durations {
        if let Some(text) = text {
            *target = parse_duration(&format!("{table}.{key}"), text)?;
        }
    }
    let reaps = [
        (
            "reconnect_timeout",
            &file.reconnect_timeout,
            &mut gossip.reconnect_timeout,
            MIN_RECONNECT_TIMEOUT,
        ),
        (
            "tombstone_timeout",
            &file.tombstone_timeout,
            &mut gossip.tombstone_timeout,
            MIN_TOMBSTONE_TIMEOUT,
        ),
    ];
    for (key, text, target, minimum) in reaps {
        let Some(text) = text else { continue };
        let key = format!("{table}.{key}");
        let value = parse_duration(&key, text)?;
        if value < minimum {
            return Err(invalid(
                &key,
                format!(
                    "`{text}` is below the minimum of {}",
                    crate::duration::format(minimum)
                ),
            ));
        }
        *target = value;
    }
    if let Some(nodes) = file.gossip_nodes {
        gossip.gossip_fanout = NonZeroUsize::new(nodes)
            .filter(|n| n.get() <= MAX_GOSSIP_NODES)
            .ok_or_else(|| {
                invalid(
                    &format!("{table}.gossip_nodes"),
                    format!("must be between 1 and {MAX_GOSSIP_NODES}"),
                )
            })?;
    }
    if let Some(mult) = file.suspicion_mult {
        if !(1.0..=100.0).contains(&mult) {
            return Err(invalid(
                &format!("{table}.suspicion_mult"),
                "must be between 1 and 100",
            ));
        }
        gossip.suspicion_mult = mult;
    }
    if gossip.probe_rtt >= gossip.probe_period {
        return Err(invalid(
            &format!("{table}.probe_timeout"),
            format!(
                "({}) must be shorter than {table}.probe_interval ({})",
                crate::duration::format(gossip.probe_rtt),
                crate::duration::format(gossip.probe_period)
            ),
        ));
    }
    Ok(gossip)
}
