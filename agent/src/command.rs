//! Running a program: the one runner behind exec checks, watch handlers,
//! template commands and `shoal watch`.
//!
//! A [`Program`] runs without a shell, in a process group of its own (so
//! that a timeout, or dropping the future, kills everything it started,
//! not only the program: `sh -c 'sleep 60 & ...'`), with its stdin fed
//! from a buffer or closed, extra environment variables, and the first
//! [`KEPT_OUTPUT`] bytes of stdout and stderr kept (the rest is drained: a
//! program blocked on a full pipe would never exit, and one that prints
//! without end must cost no memory).

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// Output kept per stream, in bytes.
pub const KEPT_OUTPUT: usize = 4096;

/// A program to run once.
#[derive(Clone, Debug)]
pub struct Program<'a> {
    /// The program and its arguments (no shell).
    args: &'a [String],
    /// Added to the agent's environment.
    env: Vec<(&'static str, String)>,
    /// Written to stdin (then closed); `None`: stdin is `/dev/null`.
    stdin: Option<&'a [u8]>,
    /// Killed with its group past it.
    timeout: Option<Duration>,
    /// `false`: stdout and stderr are the agent's own (the CLI's watch,
    /// whose handler prints to the terminal), and nothing is kept.
    capture: bool,
    /// `false`: the program stays in the caller's process group, so that a
    /// terminal's Ctrl-C reaches it too (the CLI's watch).
    own_group: bool,
}

/// How a program ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The first [`KEPT_OUTPUT`] bytes of each stream.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why a program did not finish. The program name is in each message.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no program to run")]
    Empty,
    #[error("cannot run `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("waiting for `{program}`: {source}")]
    Wait { program: String, source: io::Error },
    /// Killed, with its process group, once the timeout passed.
    #[error("`{program}` did not finish within {} (killed)", humantime::format_duration(*.timeout))]
    TimedOut { program: String, timeout: Duration },
}

impl<'a> Program<'a> {
    /// `args`: the program, then its arguments.
    pub fn new(args: &'a [String]) -> Self {
        Self {
            args,
            env: Vec::new(),
            stdin: None,
            timeout: None,
            capture: true,
            own_group: true,
        }
    }

    pub fn env(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.env.push((name, value.into()));
        self
    }

    pub fn stdin(mut self, input: &'a [u8]) -> Self {
        self.stdin = Some(input);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Stdout and stderr go where the agent's go; the program stays in the
    /// caller's process group (see the fields).
    pub fn attached_to_terminal(mut self) -> Self {
        self.capture = false;
        self.own_group = false;
        self
    }

    /// The program's name, for messages.
    pub fn name(&self) -> &str {
        self.args.first().map_or("", String::as_str)
    }

    /// Runs it to the end, or until the timeout. Dropping the future kills
    /// the program and its process group.
    pub async fn run(&self) -> Result<Finished, RunError> {
        let Some((program, rest)) = self.args.split_first() else {
            return Err(RunError::Empty);
        };
        let run = self.spawn_and_wait(program, rest);
        match self.timeout {
            None => run.await,
            Some(timeout) => tokio::time::timeout(timeout, run)
                .await
                .unwrap_or_else(|_| {
                    Err(RunError::TimedOut {
                        program: program.clone(),
                        timeout,
                    })
                }),
        }
    }

    async fn spawn_and_wait(&self, program: &str, rest: &[String]) -> Result<Finished, RunError> {
        let mut command = tokio::process::Command::new(program);
        command.args(rest).kill_on_drop(true);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        if self.capture {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        #[cfg(unix)]
        if self.own_group {
            command.process_group(0);
        }
        let mut child = command.spawn().map_err(|source| RunError::Spawn {
            program: program.to_string(),
            source,
        })?;
        let mut group = GroupKiller(self.own_group.then(|| child.id()).flatten());
        let stdin = child.stdin.take();
        let input = self.stdin;
        let feed = async move {
            if let (Some(mut stdin), Some(input)) = (stdin, input) {
                // A program that doesn't read its input is fine: ignore EPIPE.
                let _ = stdin.write_all(input).await;
            }
        };
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (_, stdout, stderr, status) =
            tokio::join!(feed, read_capped(stdout), read_capped(stderr), child.wait());
        // It ended by itself: what is left of its group is its own business.
        group.0 = None;
        let status = status.map_err(|source| RunError::Wait {
            program: program.to_string(),
            source,
        })?;
        Ok(Finished {
            status,
            stdout,
            stderr,
        })
    }
}

/// Keeps the first [`KEPT_OUTPUT`] bytes and drains the rest.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut chunk = [0u8; 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(read) => {
                let room = KEPT_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..read.min(room)]);
            }
        }
    }
}

/// Kills the child's process group when dropped while armed (the run
/// timed out or was cancelled).
struct GroupKiller(Option<u32>);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let args = shell(&format!(
            "sleep 300 & echo $! > {}; sleep 300",
            pidfile.display()
        ));
        let started = std::time::Instant::now();
        let error = Program::new(&args)
            .timeout(Duration::from_millis(500))
            .run()
            .await
            .unwrap_err();
        assert!(matches!(error, RunError::TimedOut { .. }), "{error}");
        assert!(
            error.to_string().contains("within 500ms (killed)"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // SAFETY: kill(2) with signal 0 only checks that the pid exists.
        while unsafe { libc::kill(pid, 0) } == 0 && !zombie(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the grandchild {pid} still runs"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true)
    }

    #[tokio::test]
    async fn output_is_capped_stdin_fed_and_the_environment_added() {
        let args = shell("head -c 10000000 /dev/zero; cat >&2; printf %s \"$EXTRA\" >&2");
        let finished = Program::new(&args)
            .stdin(b"input ")
            .env("EXTRA", "value")
            .run()
            .await
            .unwrap();
        assert!(finished.status.success());
        assert_eq!(finished.stdout.len(), KEPT_OUTPUT);
        assert_eq!(finished.stderr, b"input value");
        let missing = vec!["/no/such/program".to_string()];
        let error = Program::new(&missing).run().await.unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot run `/no/such/program`"),
            "{error}"
        );
        assert!(matches!(
            Program::new(&[]).run().await,
            Err(RunError::Empty)
        ));
    }
}
