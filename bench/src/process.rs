//! Child processes that cannot outlive the benchmark, and what `/proc`
//! says about them (memory, CPU time) and about the machine (load).

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// A child process, SIGKILLed and reaped when dropped (also on panic). The
/// child also gets SIGKILL if the benchmark itself dies, through
/// `PR_SET_PDEATHSIG`; for that to hold, spawn from the main thread (the
/// signal follows the thread that spawned), which the current-thread
/// runtime of `main` guarantees.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(name: &str, mut command: Command, log: &std::path::Path) -> Result<Self> {
        let log =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches only this child.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("spawn {name}"))?;
        Ok(Self { child: Some(child) })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL and reap; a no-op once done.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process has exited (and so is useless to measure).
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Resident memory of one process, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// `VmRSS`: every resident page, shared ones included.
    pub rss: u64,
    /// `RssAnon`: heap, stacks, private data: the process's own cost.
    pub anon: u64,
    /// `RssFile`: mapped file pages, mostly the binary's text, shared by
    /// every process that runs the same binary.
    pub file: u64,
    /// `Pss` from `smaps_rollup`: shared pages divided among their users,
    /// the fair per-process share when N copies run on one host.
    pub pss: u64,
    /// USS: `Private_Clean` + `Private_Dirty` from `smaps_rollup`, the
    /// pages only this process maps (what stopping it would free, page
    /// cache aside).
    pub uss: u64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Ok(Memory {
        rss: kib_field(&status, "VmRSS:"),
        anon: kib_field(&status, "RssAnon:"),
        file: kib_field(&status, "RssFile:"),
        pss: kib_field(&rollup, "Pss:"),
        uss: kib_field(&rollup, "Private_Clean:") + kib_field(&rollup, "Private_Dirty:"),
    })
}

fn kib_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields are counted after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// CPU time of a process in nanoseconds: the sum of `/proc/PID/task/*/schedstat`
/// (precise, unlike the 10 ms ticks of `stat`; threads that already exited
/// are missing, which matters little for long-lived agents).
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        if let Ok(text) = std::fs::read_to_string(path) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

pub fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// `/proc/loadavg`'s 1-minute load.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Machine-wide CPU counters `(busy, total)` in ticks, from `/proc/stat`.
pub fn machine_cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let numbers: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = numbers.iter().take(8).sum();
    // idle + iowait
    let idle = numbers.get(3).copied().unwrap_or(0) + numbers.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Busy share of the whole machine between two [`machine_cpu`] readings,
/// in percent of all cores.
pub fn machine_busy_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    100.0 * busy / total
}
