//! The agents' timings in each phase of a campaign. Every campaign first
//! runs with the defaults (nothing overridden: 15 s push-pull, 30 s
//! re-announce, 72 h tombstone grace), then restarts every agent, one at a
//! time, on quick timings and runs the rest of its faults there: the quick
//! ones make healed partitions meet within seconds and collect tombstones
//! during the run, so the rules for collected deletes run all the time; the
//! defaults are what users run.

use std::time::Duration;

/// One set of agent timings.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub name: &'static str,
    /// The agents' config file.
    pub config: &'static str,
    /// How long after a fault ends the faulted agent may still be seen
    /// failed ([`super::monitor`]): with the default 30 s re-announce
    /// (jittered by +-50%), the two sides of a healed partition can take
    /// 45 s to meet again.
    pub grace: Duration,
    /// `kv.tombstone_grace`: long partitions last longer than this plus
    /// the KV housekeeping period ([`super::faults`]).
    pub tombstone_grace: Duration,
}

/// Quick re-announces and anti-entropy (as in kv.rs), a tombstone grace of
/// 30 s instead of 72 h. The grace must exceed `max_clock_drift`, hence
/// 5 s of drift (loopback agents share one clock). Only long partitions
/// ([`super::faults`]) isolate an agent for longer than the grace on
/// purpose; back-to-back faults can too.
pub const QUICK: Timing = Timing {
    name: "quick",
    config: "max_clock_drift = \"5s\"\n\
             [gossip]\nreannounce_interval = \"1s\"\npush_pull_interval = \"2s\"\n\
             [kv]\ntombstone_grace = \"30s\"\n",
    grace: Duration::from_secs(15),
    tombstone_grace: Duration::from_secs(30),
};

/// Nothing overridden.
pub const DEFAULTS: Timing = Timing {
    name: "default",
    config: "# The campaign's default-timings phase: nothing overridden.\n",
    grace: Duration::from_secs(60),
    tombstone_grace: Duration::from_secs(72 * 3600),
};

/// The share of a campaign's fault time run with [`DEFAULTS`], in percent.
pub const DEFAULTS_SHARE: u32 = 20;
