//! Fault injection for tests: cut this agent off from chosen peers (by IP)
//! without touching the host's network. Only active when the agent runs
//! with `--fault-injection`; otherwise every check is one relaxed atomic
//! load and the endpoint answers 403.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct FaultInjection {
    enabled: bool,
    any_blocked: AtomicBool,
    blocked: RwLock<HashSet<IpAddr>>,
}

impl FaultInjection {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            ..Self::default()
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether traffic to or from `ip` must be dropped.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        self.any_blocked.load(Ordering::Relaxed)
            && self.blocked.read().expect("fault lock").contains(&ip)
    }

    /// Replaces the set of blocked peers (empty: heal).
    pub fn set_blocked(&self, ips: HashSet<IpAddr>) {
        let mut blocked = self.blocked.write().expect("fault lock");
        self.any_blocked.store(!ips.is_empty(), Ordering::Relaxed);
        *blocked = ips;
    }

    pub fn blocked(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .blocked
            .read()
            .expect("fault lock")
            .iter()
            .copied()
            .collect();
        ips.sort();
        ips
    }
}
