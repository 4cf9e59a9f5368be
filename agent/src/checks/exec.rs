//! Exec probes: run a program (no shell); exit 0 passing, 1 warning,
//! anything else critical (Consul's rules).

use super::ProbeResult;
use crate::command::{Program, RunError};

/// Runs `args` once and reports its exit code with its stdout and stderr
/// (at most 4 KiB). The caller bounds it with the timeout: dropping the
/// future kills the program and everything it started.
pub async fn probe_exec(args: &[String]) -> ProbeResult {
    let program = Program::new(args);
    let name = program.name();
    let finished = match program.run().await {
        Ok(finished) => finished,
        Err(RunError::Empty) => return ProbeResult::critical("exec check: no program to run"),
        Err(error) => return ProbeResult::critical(format!("exec check: {error}")),
    };
    let mut captured = finished.stdout;
    captured.extend_from_slice(&finished.stderr);
    let mut output = String::from_utf8_lossy(&captured).into_owned();
    let exit = finished.status;
    if output.trim().is_empty() {
        output = describe_exit(name, &exit);
    }
    match exit.code() {
        Some(0) => ProbeResult::passing(output),
        Some(1) => ProbeResult::warning(output),
        _ => ProbeResult::critical(output),
    }
}

fn describe_exit(program: &str, exit: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = exit.signal() {
            return format!("`{program}` killed by signal {signal}");
        }
    }
    match exit.code() {
        Some(code) => format!("`{program}` exited with status {code}"),
        None => format!("`{program}` ended without an exit status"),
    }
}
