//! The agent process's own resources, read from `/proc/self` at scrape
//! time, under the names every Prometheus client library uses
//! (`process_*`), so that stock dashboards and alerts find them.
//! On a system without `/proc` the metrics are left out.

use crate::metrics::{Counters, Exposition};

/// Reports the running process.
#[derive(Debug, Default)]
pub struct ProcessCounters;

/// What `/proc/self` tells.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessReading {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl ProcessReading {
    /// Reads `/proc/self/stat`, `/proc/stat` (boot time) and
    /// `/proc/self/fd`; `None` without `/proc`.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let mut stats = parse_stat(&stat, ticks, page)?;
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("btime "))
                .and_then(|value| value.trim().parse::<f64>().ok())
        });
        stats.start_time_seconds += boot.unwrap_or(0.0);
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        stats.max_fds = max_fds();
        Some(stats)
    }
}

/// The fields of `/proc/self/stat` we show; the start time is relative to
/// boot. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted after its last `)`.
fn parse_stat(stat: &str, ticks_per_second: f64, page_size: u64) -> Option<ProcessReading> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first one after the name.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> Option<u64> { fields.get(number - 3)?.parse().ok() };
    let utime = field(14)?;
    let stime = field(15)?;
    Some(ProcessReading {
        cpu_seconds: (utime + stime) as f64 / ticks_per_second,
        start_time_seconds: field(22)? as f64 / ticks_per_second,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_size,
        open_fds: None,
        max_fds: None,
    })
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let result = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (result == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

impl Counters for ProcessCounters {
    fn prefix(&self) -> &'static str {
        "process_"
    }

    fn visit(&self, out: &mut Exposition) {
        let Some(stats) = ProcessReading::read() else {
            return;
        };
        out.float_counter(
            "process_cpu_seconds_total",
            "User and system CPU time the agent has used, in seconds.",
            stats.cpu_seconds,
        );
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory (RSS) of the agent, in bytes.",
            stats.resident_bytes as f64,
        );
        out.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size of the agent, in bytes.",
            stats.virtual_bytes as f64,
        );
        out.gauge(
            "process_start_time_seconds",
            "When the agent started, in seconds since the Unix epoch.",
            stats.start_time_seconds,
        );
        if let Some(open) = stats.open_fds {
            out.gauge(
                "process_open_fds",
                "File descriptors the agent has open.",
                open as f64,
            );
        }
        if let Some(max) = stats.max_fds {
            out.gauge(
                "process_max_fds",
                "The agent's limit on open file descriptors.",
                max as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        // A name with spaces and a parenthesis, as a process may set.
        let stat = "4242 (shoal a) b) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 1000 123456789 1500 18446744073709551615";
        let stats = parse_stat(stat, 100.0, 4096).expect("parses");
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.start_time_seconds, 10.0);
        assert_eq!(stats.virtual_bytes, 123_456_789);
        assert_eq!(stats.resident_bytes, 1500 * 4096);
    }

    #[test]
    fn this_process_has_memory_and_fds() {
        let stats = ProcessReading::read().expect("/proc is mounted");
        assert!(stats.resident_bytes > 0);
        assert!(stats.open_fds.is_some_and(|open| open >= 3));
        assert!(stats.start_time_seconds > 1.0e9, "{stats:?}");
    }
}
