//! What a render does to the world: the destination file, written
//! atomically, and the command run after it changed.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{CommandOutcome, TemplateCounters};
use crate::command::{Program, RunError};

/// Mode of a new file when `perms` is not set.
const DEFAULT_MODE: u32 = 0o644;
/// Output of a command kept for the log, per stream.
const MAX_LOGGED_OUTPUT: usize = crate::command::KEPT_OUTPUT;

/// Writes `contents` to `destination` unless it already holds exactly
/// that: a temporary file in the same directory, fsynced, renamed over the
/// destination, then the directory fsynced, so that a reader sees the old
/// file or the new one, whole, even across a crash. `Ok(true)`: written.
/// Blocking: run it on the blocking pool.
///
/// A destination that is a symbolic link is refused: the agent often runs
/// as root, and whoever can plant a link would choose what it compares
/// with, and whose mode it copies. Without `perms`, an existing file's
/// permission bits are kept, but never its setuid, setgid or sticky bits.
pub fn write_if_changed(
    destination: &Path,
    contents: &[u8],
    perms: Option<u32>,
) -> std::io::Result<bool> {
    let existing = fs::symlink_metadata(destination).ok();
    if existing
        .as_ref()
        .is_some_and(|m| m.file_type().is_symlink())
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the destination is a symbolic link; templates never write through or replace \
             one: point `destination` at the file itself",
        ));
    }
    let mode = perms
        .or_else(|| existing.as_ref().map(|m| m.permissions().mode() & 0o777))
        .unwrap_or(DEFAULT_MODE);
    if let Some(metadata) = &existing
        && metadata.len() == contents.len() as u64
        && fs::read(destination).is_ok_and(|old| old == contents)
    {
        if metadata.permissions().mode() & 0o7777 != mode {
            fs::set_permissions(destination, fs::Permissions::from_mode(mode))?;
        }
        return Ok(false);
    }
    let directory = match destination.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = destination
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temporary = directory.join(format!(
        ".{file_name}.shoal-{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        file.write_all(contents)?;
        // The umask may have narrowed the mode given at creation.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&temporary, destination)?;
        File::open(directory)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written.map(|()| true)
}

/// Runs `command` (no shell), killing it after `timeout`; logs its exit
/// status and output, counts it.
pub async fn run_command(
    name: &str,
    command: &[String],
    timeout: Duration,
    stop: &CancellationToken,
    counters: &TemplateCounters,
) -> CommandOutcome {
    TemplateCounters::bump(&counters.command_runs);
    let outcome = run(command, timeout, stop).await;
    let finished = super::runner::now_rfc3339();
    match outcome {
        Ok((status, stdout, stderr)) if status.success() => {
            tracing::info!(
                template = %name,
                command = ?command,
                stdout = %excerpt(&stdout),
                stderr = %excerpt(&stderr),
                "template command succeeded"
            );
            CommandOutcome {
                at: finished,
                exit_code: status.code(),
                ok: true,
                error: None,
            }
        }
        Ok((status, stdout, stderr)) => {
            TemplateCounters::bump(&counters.command_failures);
            tracing::warn!(
                template = %name,
                command = ?command,
                %status,
                stdout = %excerpt(&stdout),
                stderr = %excerpt(&stderr),
                "template command failed"
            );
            CommandOutcome {
                at: finished,
                exit_code: status.code(),
                ok: false,
                error: Some(format!("{status}: {}", excerpt(&stderr))),
            }
        }
        Err(error) => {
            TemplateCounters::bump(&counters.command_failures);
            tracing::warn!(template = %name, command = ?command, %error, "template command failed");
            CommandOutcome {
                at: finished,
                exit_code: None,
                ok: false,
                error: Some(error),
            }
        }
    }
}

type Finished = (std::process::ExitStatus, Vec<u8>, Vec<u8>);

/// Runs `command` in a process group of its own: past `timeout`, or when
/// `stop` fires, the whole group is killed (a grandchild it started must
/// not outlive it). At most 4 KiB of each stream is kept.
async fn run(
    command: &[String],
    timeout: Duration,
    stop: &CancellationToken,
) -> Result<Finished, String> {
    let program = Program::new(command).timeout(timeout);
    tokio::select! {
        biased;
        _ = stop.cancelled() => Err("stopped: the agent is shutting down or the template was removed".into()),
        finished = program.run() => match finished {
            Ok(finished) => Ok((finished.status, finished.stdout, finished.stderr)),
            Err(RunError::TimedOut { timeout, .. }) => Err(format!(
                "killed after command_timeout ({})",
                humantime::format_duration(timeout)
            )),
            Err(error) => Err(error.to_string()),
        },
    }
}

/// The first few KiB of a command's output, as text, trimmed.
fn excerpt(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_LOGGED_OUTPUT)];
    String::from_utf8_lossy(cut).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed() {
        let command: Vec<String> = vec!["sleep".into(), "30".into()];
        let stop = CancellationToken::new();
        let started = std::time::Instant::now();
        let error = run(&command, Duration::from_millis(300), &stop)
            .await
            .unwrap_err();
        assert!(error.contains("killed after command_timeout"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_command_that_floods_its_output_is_kept_to_a_few_kib() {
        // 64 MiB on stdout and stderr: kept whole before, a few KiB now.
        let command: Vec<String> = [
            "sh",
            "-c",
            "head -c 67108864 /dev/zero; head -c 67108864 /dev/zero >&2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let stop = CancellationToken::new();
        let (status, stdout, stderr) = run(&command, Duration::from_secs(60), &stop)
            .await
            .expect("the command runs");
        assert!(status.success());
        assert!(
            stdout.len() <= MAX_LOGGED_OUTPUT && stderr.len() <= MAX_LOGGED_OUTPUT,
            "kept {} and {} bytes of output",
            stdout.len(),
            stderr.len()
        );
        assert_eq!(stdout.len(), MAX_LOGGED_OUTPUT, "the first bytes are kept");
    }

    #[test]
    fn writes_only_changes_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.conf");
        assert!(write_if_changed(&path, b"one", Some(0o600)).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!write_if_changed(&path, b"one", Some(0o600)).unwrap());
        // Without perms, an existing file's mode is kept.
        assert!(write_if_changed(&path, b"two", None).unwrap());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let missing = dir.path().join("no/such/dir/out");
        assert!(write_if_changed(&missing, b"x", None).is_err());
    }

    #[test]
    fn refuses_a_symlink_and_drops_setuid_bits() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"original").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o4755)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let error = write_if_changed(&link, b"new", None).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&target).unwrap(), b"original");
        // The file itself: rewritten without the setuid bit.
        assert!(write_if_changed(&target, b"new", None).unwrap());
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
    }
}
