//! System probes: memory, disk, load and CPU of this host against
//! thresholds. Sampling reads /proc and may block, so it runs on tokio's
//! blocking pool, never on the async threads.

use std::path::Path;
use std::time::Duration;

use sysinfo::{CpuRefreshKind, MINIMUM_CPU_UPDATE_INTERVAL, System};

use super::ProbeResult;
use super::definition::{SystemCheck, Thresholds};

/// One system check and the sampler it keeps between runs (CPU usage is a
/// difference between two samples: kept across runs, it covers the whole
/// interval instead of a short extra wait).
pub struct SystemProbe {
    check: SystemCheck,
    sampler: Option<Sampler>,
}

struct Sampler {
    system: System,
    cpu_sampled: bool,
}

impl SystemProbe {
    pub fn new(check: SystemCheck) -> Self {
        Self {
            check,
            sampler: None,
        }
    }

    /// Measures once. If the caller's timeout drops this future, the
    /// sampler is lost and rebuilt on the next run.
    pub async fn run(&mut self) -> ProbeResult {
        let check = self.check.clone();
        let sampler = self.sampler.take().unwrap_or_else(|| Sampler {
            system: System::new(),
            cpu_sampled: false,
        });
        let sampled = tokio::task::spawn_blocking(move || {
            let mut sampler = sampler;
            let result = measure(&check, &mut sampler);
            (result, sampler)
        })
        .await;
        match sampled {
            Ok((result, sampler)) => {
                self.sampler = Some(sampler);
                result
            }
            Err(error) => ProbeResult::critical(format!("system check failed: {error}")),
        }
    }
}

fn measure(check: &SystemCheck, sampler: &mut Sampler) -> ProbeResult {
    match check {
        SystemCheck::Memory(thresholds) => {
            let system = &mut sampler.system;
            system.refresh_memory();
            let total = system.total_memory();
            if total == 0 {
                return ProbeResult::critical("memory check: total memory unknown");
            }
            let used = system.used_memory();
            let percent = used as f64 * 100.0 / total as f64;
            judge(
                thresholds,
                percent,
                "%",
                format!(
                    "Memory used {percent:.1}% ({} of {})",
                    gib(used),
                    gib(total)
                ),
            )
        }
        SystemCheck::Disk { path, thresholds } => match disk_usage(path) {
            Ok((used, available)) => {
                let percent = used as f64 * 100.0 / (used + available).max(1) as f64;
                judge(
                    thresholds,
                    percent,
                    "%",
                    format!(
                        "Disk used {percent:.1}% on {} ({} free)",
                        path.display(),
                        gib(available)
                    ),
                )
            }
            Err(error) => ProbeResult::critical(format!(
                "disk check: cannot read {}: {error}",
                path.display()
            )),
        },
        SystemCheck::Load(thresholds) => {
            let system = &mut sampler.system;
            system.refresh_cpu_list(CpuRefreshKind::nothing());
            let cpus = match system.cpus().len() {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            };
            let load = System::load_average().one;
            let per_cpu = load / cpus as f64;
            judge(
                thresholds,
                per_cpu,
                "",
                format!("Load average {per_cpu:.2} per CPU ({load:.2} over {cpus} CPUs)"),
            )
        }
        SystemCheck::Cpu(thresholds) => {
            if !sampler.cpu_sampled {
                sampler.system.refresh_cpu_usage();
                std::thread::sleep(MINIMUM_CPU_UPDATE_INTERVAL.max(Duration::from_millis(200)));
                sampler.cpu_sampled = true;
            }
            sampler.system.refresh_cpu_usage();
            let percent = f64::from(sampler.system.global_cpu_usage());
            judge(thresholds, percent, "%", format!("CPU used {percent:.1}%"))
        }
    }
}

/// The status of `value` with an output naming the value and the levels.
fn judge(thresholds: &Thresholds, value: f64, unit: &str, measured: String) -> ProbeResult {
    let mut levels = Vec::new();
    if let Some(level) = thresholds.warning {
        levels.push(format!("warning at {level}{unit}"));
    }
    if let Some(level) = thresholds.critical {
        levels.push(format!("critical at {level}{unit}"));
    }
    ProbeResult::new(
        thresholds.status(value),
        format!("{measured}; {}", levels.join(", ")),
    )
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// (used, available to unprivileged users) bytes of the file system holding
/// `path`, computed as `df` does.
///
/// statvfs rather than sysinfo's disk list: it works for any path, and in
/// containers, whose overlay root sysinfo's mount list may not show.
fn disk_usage(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statvfs writes into the zeroed struct we own, and reads the
    // NUL-terminated path that outlives the call.
    let stat = unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c_path.as_ptr(), &mut stat) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stat
    };
    let block = stat.f_frsize as u64;
    let used = (stat.f_blocks as u64).saturating_sub(stat.f_bfree as u64) * block;
    let available = stat.f_bavail as u64 * block;
    Ok((used, available))
}
