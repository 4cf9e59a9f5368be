//! Exec probes: run a program (no shell); exit 0 passing, 1 warning,
//! anything else critical (Consul's rules).

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{OUTPUT_LIMIT, ProbeResult};

/// Runs `args` once and reports its exit code with its stdout and stderr
/// (at most 4 KiB). The caller bounds it with the timeout: dropping the
/// future kills the program and everything it started.
pub async fn probe_exec(args: &[String]) -> ProbeResult {
    let Some((program, rest)) = args.split_first() else {
        return ProbeResult::critical("exec check: no program to run");
    };
    let mut command = Command::new(program);
    command
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so a timeout also kills what a script spawned
    // (`sh -c 'sleep 60'`), not just the script.
    #[cfg(unix)]
    command.process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            return ProbeResult::critical(format!("exec check: cannot run `{program}`: {error}"));
        }
    };
    let mut group = GroupKiller(child.id());
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (stdout, stderr, exit) =
        tokio::join!(read_capped(stdout), read_capped(stderr), child.wait());
    group.0 = None;

    let mut captured = stdout;
    captured.extend_from_slice(&stderr);
    let mut output = String::from_utf8_lossy(&captured).into_owned();
    let exit = match exit {
        Ok(exit) => exit,
        Err(error) => {
            return ProbeResult::critical(format!("exec check: waiting for `{program}`: {error}"));
        }
    };
    if output.trim().is_empty() {
        output = describe_exit(program, &exit);
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

/// Keeps the first [`OUTPUT_LIMIT`] bytes and drains the rest: a program
/// blocked on a full pipe would otherwise never exit.
pub(crate) async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut chunk = [0u8; 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(read) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..read.min(room)]);
            }
        }
    }
}

/// Kills the child's process group when dropped while armed (the probe
/// timed out or was cancelled).
pub(crate) struct GroupKiller(pub(crate) Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pid) = self.0.and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: kill(2) takes plain integers. Either the leader is not
            // reaped yet or a process of its group still holds our pipes,
            // so the group id is in use and cannot name another group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}
