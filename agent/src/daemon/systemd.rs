//! systemd integration over `sd_notify(3)` (`Type=notify` in
//! `packaging/shoal.service`):
//!
//! - `READY=1` once the HTTP API and DNS are bound (they are before the
//!   daemon starts), the core loop runs, and either a member has
//!   answered, there is no seed to wait for, or `join_ready_timeout` has
//!   passed, then with `STATUS=alone: ...; retrying`. An unreachable seed
//!   never hangs a single-node or first-of-cluster start.
//! - `STATUS=` when it changes (looked at every few seconds): members
//!   alive, local checks critical.
//! - `RELOADING=1` ... `READY=1` around a reload ([`super::reload`]).
//! - `STOPPING=1` once the agent starts leaving.
//! - `WATCHDOG=1` from the core loop itself ([`super::core_loop`]) every
//!   half `WATCHDOG_USEC`, not from a timer task of its own: a wedged loop
//!   stops the pings, and systemd restarts the agent.
//!
//! Without `NOTIFY_SOCKET` the [`Notifier`] is inert and no task runs.
//! Every message is one non-blocking datagram: when the socket is full the
//! message is dropped (and counted), the core loop never waits.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;
use shoal_protocol::MemberStatus;
use shoal_protocol::record::CheckStatus;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::core_counters::CoreCounters;
use crate::snapshot::Snapshot;

/// How often the status line is recomputed (it is sent only when it
/// changed): counting members and checks in a snapshot is cheap.
const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// The agent's side of systemd's notification socket.
#[derive(Debug, Default)]
pub struct Notifier {
    /// Connected to `NOTIFY_SOCKET`, non-blocking; `None`: inert.
    socket: Option<UnixDatagram>,
    /// `WATCHDOG_USEC`, when systemd watches us.
    watchdog: Option<Duration>,
    /// `READY=1` was sent: reloads may now say `RELOADING=1`/`READY=1`.
    ready: AtomicBool,
    /// The last `STATUS=` sent, repeated with the `READY=1` after a reload.
    status: Mutex<String>,
    /// Messages not sent (socket full or gone).
    dropped: AtomicU64,
}

impl Notifier {
    /// A notifier that sends nothing (not started by systemd).
    pub fn inert() -> Self {
        Self::default()
    }

    /// Connects to `NOTIFY_SOCKET` and reads `WATCHDOG_USEC`, then removes
    /// them (and `WATCHDOG_PID`) from the environment, as `sd_notify(3)`'s
    /// `unset_environment` does: exec checks, template commands and watch
    /// handlers must not inherit the agent's socket.
    ///
    /// # Safety
    ///
    /// Changes the environment: call it before any other thread runs
    /// (before the async runtime starts).
    pub unsafe fn from_env() -> Self {
        let path = std::env::var_os("NOTIFY_SOCKET");
        let watchdog = sd_notify::watchdog_enabled();
        // SAFETY: the caller guarantees no other thread reads the environment.
        unsafe {
            std::env::remove_var("NOTIFY_SOCKET");
            std::env::remove_var("WATCHDOG_USEC");
            std::env::remove_var("WATCHDOG_PID");
        }
        let Some(path) = path else {
            return Self::inert();
        };
        match connect(&path) {
            Ok(socket) => Self {
                socket: Some(socket),
                watchdog: watchdog.filter(|usec| !usec.is_zero()),
                ..Self::default()
            },
            Err(error) => {
                tracing::warn!(
                    socket = %path.to_string_lossy(),
                    %error,
                    "cannot reach systemd's NOTIFY_SOCKET: readiness and watchdog are not reported"
                );
                Self::inert()
            }
        }
    }

    pub fn is_active(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends one notification; never blocks. A failure is counted and
    /// logged at debug level (systemd may simply be gone).
    pub fn send(&self, states: &[NotifyState]) {
        let Some(socket) = &self.socket else {
            return;
        };
        let mut message = String::new();
        for state in states {
            let _ = writeln!(message, "{state}");
        }
        if let Err(error) = socket.send(message.as_bytes()) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%error, "systemd notification not sent");
        }
    }

    /// The watchdog's timer for the core loop: half `WATCHDOG_USEC`, as
    /// `sd_watchdog_enabled(3)` advises; `None` when nobody watches.
    pub fn watchdog_timer(&self) -> Option<Interval> {
        self.socket.as_ref()?;
        let mut timer = tokio::time::interval(self.watchdog? / 2);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Some(timer)
    }

    /// `WATCHDOG=1`: the core loop is alive.
    pub fn ping_watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// `READY=1` with a status line.
    fn ready(&self, status: String) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
        self.ready.store(true, Ordering::Release);
    }

    /// `STATUS=`, and remembers it for [`Notifier::reloaded`].
    fn status(&self, status: String) {
        self.send(&[NotifyState::Status(&status)]);
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }

    /// `RELOADING=1` (with the `MONOTONIC_USEC=` systemd 253 wants beside
    /// it), once the agent has been ready: before that, systemd is still
    /// waiting for the first `READY=1`.
    pub fn reloading(&self) {
        if !self.ready.load(Ordering::Acquire) {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[
                NotifyState::Reloading,
                now,
                NotifyState::Status("reloading the configuration"),
            ]),
            Err(_) => self.send(&[
                NotifyState::Reloading,
                NotifyState::Status("reloading the configuration"),
            ]),
        }
    }

    /// `READY=1` after a reload, whatever its outcome (a refused file
    /// keeps the previous configuration running), with the last status.
    pub fn reloaded(&self) {
        if !self.ready.load(Ordering::Acquire) {
            return;
        }
        let status = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    fn stopping(&self) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status("leaving the cluster"),
        ]);
    }
}

/// Connects a datagram socket to `NOTIFY_SOCKET`: a path, or `@name` for
/// an abstract socket.
fn connect(path: &OsStr) -> io::Result<UnixDatagram> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    match path.as_bytes().strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.connect_addr(&addr)?;
        }
        _ => socket.connect(path)?,
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Waits for the watchdog timer's next tick; never, without one.
pub async fn watchdog_tick(timer: &mut Option<Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What the readiness and status task reads: the published snapshots and
/// status, and when to give up waiting for a seed.
pub(super) struct NotifyInputs {
    pub snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    pub status_rx: watch::Receiver<Arc<CoreCounters>>,
    /// Seeds other than this agent itself.
    pub seeds: Vec<SocketAddr>,
    pub join_ready_timeout: Duration,
    /// Cancelled when the agent starts leaving (signal, API).
    pub shutdown: CancellationToken,
    /// Cancelled when the agent's tasks stop (also after a refused name).
    pub stop: CancellationToken,
}

/// Why the agent reported ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Readiness {
    /// No seed to wait for: the first of its cluster.
    NoSeeds,
    /// A member answered.
    Joined,
    /// No seed answered within `join_ready_timeout`; still retrying.
    Alone,
}

/// Sends `READY=1` when the agent is ready, then status lines, then
/// `STOPPING=1`. Runs only with an active notifier.
pub(super) async fn notify_loop(notifier: Arc<Notifier>, mut inputs: NotifyInputs) {
    let started = Instant::now();
    let deadline = started + inputs.join_ready_timeout;
    if !inputs.seeds.is_empty() {
        notifier.status(format!(
            "joining: waiting up to {} for a seed ({})",
            crate::duration::format(inputs.join_ready_timeout),
            list(&inputs.seeds)
        ));
    }
    let readiness = loop {
        if let Some(readiness) = joined(&inputs.snapshot_rx.borrow(), &inputs.seeds) {
            break readiness;
        }
        tokio::select! {
            biased;
            _ = inputs.shutdown.cancelled() => return notifier.stopping(),
            _ = inputs.stop.cancelled() => return notifier.stopping(),
            changed = inputs.snapshot_rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => break Readiness::Alone,
        }
    };
    let mut line = status_line(&inputs);
    let status = match readiness {
        Readiness::Alone => format!(
            "alone: no seed answered within {}; retrying ({}); {}",
            crate::duration::format(inputs.join_ready_timeout),
            list(&inputs.seeds),
            counts(&inputs)
        ),
        Readiness::NoSeeds | Readiness::Joined => line.clone(),
    };
    tracing::info!(
        ?readiness,
        after_ms = started.elapsed().as_millis() as u64,
        "ready: told systemd (READY=1)"
    );
    notifier.ready(status);
    let mut ticks = tokio::time::interval_at(started + STATUS_INTERVAL, STATUS_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = inputs.shutdown.cancelled() => return notifier.stopping(),
            _ = inputs.stop.cancelled() => return notifier.stopping(),
            _ = ticks.tick() => {
                let next = status_line(&inputs);
                if next != line {
                    notifier.status(next.clone());
                    line = next;
                }
            }
        }
    }
}

/// `Some` once the core loop runs and the agent need not wait any more.
fn joined(snapshot: &Snapshot, seeds: &[SocketAddr]) -> Option<Readiness> {
    if !snapshot.checks_loaded {
        // The core loop has not published yet.
        return None;
    }
    if seeds.is_empty() {
        return Some(Readiness::NoSeeds);
    }
    (alive_members(snapshot) > 1).then_some(Readiness::Joined)
}

/// Members alive (suspects count, as in `shoal members`), ourselves included.
fn alive_members(snapshot: &Snapshot) -> usize {
    snapshot
        .members
        .iter()
        .filter(|member| matches!(member.status, MemberStatus::Alive | MemberStatus::Suspect))
        .count()
}

/// [`counts`], prefixed with `alone` while a seed is configured and
/// nobody answers.
fn status_line(inputs: &NotifyInputs) -> String {
    let alone = alive_members(&inputs.snapshot_rx.borrow()) <= 1 && !inputs.seeds.is_empty();
    if alone {
        format!("alone, retrying the seeds; {}", counts(inputs))
    } else {
        counts(inputs)
    }
}

/// `members alive: N, checks critical: M`.
fn counts(inputs: &NotifyInputs) -> String {
    let alive = alive_members(&inputs.snapshot_rx.borrow());
    let critical = inputs
        .status_rx
        .borrow()
        .local_checks
        .iter()
        .filter(|check| check.record.consul_status() == CheckStatus::Critical)
        .count();
    format!("members alive: {alive}, checks critical: {critical}")
}

fn list(seeds: &[SocketAddr]) -> String {
    seeds
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener bound where `NOTIFY_SOCKET` would point, and a notifier
    /// connected to it.
    fn pair() -> (UnixDatagram, Notifier, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some(connect(path.as_os_str()).unwrap()),
            watchdog: Some(Duration::from_secs(2)),
            ..Notifier::default()
        };
        (listener, notifier, dir)
    }

    fn receive(listener: &UnixDatagram) -> String {
        let mut buffer = [0u8; 4096];
        let length = listener.recv(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    }

    #[test]
    fn a_full_socket_drops_the_message_instead_of_blocking() {
        let (_listener, notifier, _dir) = pair();
        // Nobody reads: the receive queue fills, then sends fail at once.
        let started = std::time::Instant::now();
        for _ in 0..10_000 {
            notifier.ping_watchdog();
        }
        assert!(notifier.dropped.load(Ordering::Relaxed) > 0);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn reload_notifications_wait_for_readiness() {
        let (listener, notifier, _dir) = pair();
        listener.set_nonblocking(true).unwrap();
        notifier.reloading();
        notifier.reloaded();
        let mut buffer = [0u8; 64];
        assert!(listener.recv(&mut buffer).is_err(), "nothing before READY");
        listener.set_nonblocking(false).unwrap();
        notifier.ready("members alive: 1, checks critical: 0".into());
        assert_eq!(
            receive(&listener),
            "READY=1\nSTATUS=members alive: 1, checks critical: 0\n"
        );
        notifier.reloading();
        let reloading = receive(&listener);
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{reloading}"
        );
        notifier.reloaded();
        assert_eq!(
            receive(&listener),
            "READY=1\nSTATUS=members alive: 1, checks critical: 0\n"
        );
    }

    #[test]
    fn the_watchdog_timer_runs_at_half_watchdog_usec() {
        let (_listener, notifier, _dir) = pair();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _runtime = runtime.enter();
        let timer = notifier.watchdog_timer().unwrap();
        assert_eq!(timer.period(), Duration::from_secs(1));
        assert!(Notifier::inert().watchdog_timer().is_none());
    }
}
