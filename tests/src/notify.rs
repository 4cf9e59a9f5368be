//! systemd's side of `sd_notify`: a Unix datagram socket an agent is
//! pointed at with `NOTIFY_SOCKET`, and the messages it received, each
//! stamped with its arrival time.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One datagram: its `KEY=VALUE` lines, and when it came.
#[derive(Clone, Debug)]
pub struct Notification {
    pub at: Instant,
    pub lines: Vec<String>,
}

impl Notification {
    /// Whether it carries the line `line` (`READY=1`), or a line starting
    /// with `line` when that ends in `=` (`STATUS=`).
    pub fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|have| {
            if line.ends_with('=') {
                have.starts_with(line)
            } else {
                have == line
            }
        })
    }

    /// The value of `KEY=`, if it carries one.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
    }
}

/// A bound notification socket, readable by anyone (an agent running as
/// another user must be able to send to it).
pub struct NotifyListener {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
    /// Everything received so far.
    pub received: Vec<Notification>,
}

impl NotifyListener {
    pub fn bind() -> NotifyListener {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the socket's directory");
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
            .expect("chmod the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        NotifyListener {
            socket,
            path,
            _dir: dir,
            received: Vec::new(),
        }
    }

    /// What `NOTIFY_SOCKET` should say.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives for `duration` and returns what came in that time.
    pub fn collect_for(&mut self, duration: Duration) -> Vec<Notification> {
        let first = self.received.len();
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            self.receive_one();
        }
        self.received[first..].to_vec()
    }

    /// Receives until a notification carries `line` (see
    /// [`Notification::has`]); panics after `timeout` with what came.
    pub fn wait_for(&mut self, line: &str, timeout: Duration) -> Notification {
        let first = self.received.len();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self.received[first..].iter().find(|n| n.has(line)) {
                return found.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no {line} within {timeout:?}; received: {:?}",
                self.received[first..]
                    .iter()
                    .map(|n| &n.lines)
                    .collect::<Vec<_>>()
            );
            self.receive_one();
        }
    }

    /// Stops process `pid` (SIGSTOP) for `duration`, then lets it go on
    /// (SIGCONT); returns how many `WATCHDOG=1` came while it was stopped.
    pub fn watchdog_pings_while_stopped(&mut self, pid: u32, duration: Duration) -> usize {
        // SAFETY: kill(2) on a process the caller started.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        // A ping sent just before the stop may still be on its way.
        std::thread::sleep(Duration::from_millis(200));
        self.collect_for(Duration::from_millis(100));
        let while_stopped = self.collect_for(duration);
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        count(&while_stopped, "WATCHDOG=1")
    }

    fn receive_one(&mut self) {
        let mut buffer = [0u8; 4096];
        if let Ok(length) = self.socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..length]);
            self.received.push(Notification {
                at: Instant::now(),
                lines: text.lines().map(str::to_string).collect(),
            });
        }
    }
}

/// How many of `notifications` carry `line` (see [`Notification::has`]).
pub fn count(notifications: &[Notification], line: &str) -> usize {
    notifications.iter().filter(|n| n.has(line)).count()
}
