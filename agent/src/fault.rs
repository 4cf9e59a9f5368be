//! Fault injection for tests: cut this agent off from chosen peers (by IP)
//! without touching the host's network, or wedge its core loop for a
//! while. Only active when the agent runs with `--fault-injection`;
//! otherwise every check is one relaxed atomic load and the endpoint
//! answers 403.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct FaultInjection {
    enabled: bool,
    any_blocked: AtomicBool,
    blocked: RwLock<HashSet<IpAddr>>,
    /// A stall of the core loop is pending.
    stall_pending: AtomicBool,
    stall_for: Mutex<Duration>,
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

    /// Asks the core loop to block its thread for `duration`, as a
    /// wedged loop would (the systemd watchdog test).
    pub fn stall_loop(&self, duration: Duration) {
        *self.stall_for.lock().expect("fault lock") = duration;
        self.stall_pending.store(true, Ordering::Release);
    }

    /// Called by the core loop: blocks for the stall asked for, if any.
    pub fn stall_if_asked(&self) {
        if !self.stall_pending.swap(false, Ordering::Acquire) {
            return;
        }
        let duration = *self.stall_for.lock().expect("fault lock");
        tracing::warn!(?duration, "fault injection: the core loop stalls");
        let until = Instant::now() + duration;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
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
