//! A private network namespace for the whole benchmark.
//!
//! Inside it the loopback interface carries only the benchmark's traffic,
//! so its byte counters measure Serf's and Shoal's gossip the same way
//! (Serf has no traffic counters of its own), and no agent of another
//! test on this machine can collide with ours on 127.0.0.0/8.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Moves the calling thread (call it first thing in `main`, before any
/// other thread exists) into a new network namespace and brings `lo` up.
/// Needs root (CAP_SYS_ADMIN).
pub fn enter_private() -> Result<()> {
    // SAFETY: unshare has no memory-safety preconditions.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        bail!(
            "unshare(CLONE_NEWNET): {} (run as root, or pass --no-netns)",
            std::io::Error::last_os_error()
        );
    }
    let status = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("run `ip link set lo up`")?;
    if !status.success() {
        bail!("`ip link set lo up` failed: {status}");
    }
    Ok(())
}

/// Bytes and packets sent on `lo` so far, from `/proc/self/net/dev` (which
/// shows the namespace of this process, unlike `/sys/class/net`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopbackCounters {
    pub bytes: u64,
    pub packets: u64,
}

pub fn loopback_counters() -> Result<LoopbackCounters> {
    let text = std::fs::read_to_string("/proc/self/net/dev")?;
    let line = text
        .lines()
        .find_map(|line| line.trim_start().strip_prefix("lo:"))
        .context("no lo in /proc/self/net/dev")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    // receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
    Ok(LoopbackCounters {
        bytes: *fields.get(8).context("no tx bytes")?,
        packets: *fields.get(9).context("no tx packets")?,
    })
}
