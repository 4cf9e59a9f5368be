//! `GET /v1/agent/monitor`: the agent's log, streamed to the few clients
//! following it, each at its own level (which may be more verbose than the
//! agent's own `log_level`, as Consul's monitor allows) and format.
//!
//! Budgets: at most [`MAX_MONITORS`] clients at once (the API answers 429
//! past it), each with a queue of [`CLIENT_QUEUE_LINES`] lines. A client
//! that reads too slowly loses lines, counted and announced in its stream;
//! nothing waits for it, so a stalled monitor can't slow the core loop
//! that logged the line.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// Monitors at once.
pub const MAX_MONITORS: usize = 8;
/// Lines queued per monitor before its lines are dropped.
pub const CLIENT_QUEUE_LINES: usize = 512;

/// The output format a monitor asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct Client {
    id: u64,
    format: Format,
    level: Level,
    lines_tx: mpsc::Sender<Bytes>,
    dropped: Arc<AtomicU64>,
}

/// The monitors following the log. There is one per process
/// ([`hub`]), as there is one logger.
#[derive(Default)]
pub struct MonitorHub {
    clients: Mutex<Vec<Client>>,
    next_id: AtomicU64,
    /// Per format, the most verbose level a client wants, as
    /// [`level_rank`] (0: no client), read on every log call.
    text_level: AtomicU8,
    json_level: AtomicU8,
}

/// The process's monitor hub.
pub fn hub() -> &'static MonitorHub {
    static HUB: OnceLock<MonitorHub> = OnceLock::new();
    HUB.get_or_init(MonitorHub::default)
}

/// `ERROR` 1 .. `TRACE` 5; 0 is "nothing".
fn level_rank(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// Refused: [`MAX_MONITORS`] clients already follow the log.
#[derive(Debug, thiserror::Error)]
#[error("{MAX_MONITORS} monitors already follow this agent's log; try again when one has stopped")]
pub struct TooManyMonitors;

/// One client following the log; it stops receiving when dropped.
pub struct Subscription {
    id: u64,
    pub lines_rx: mpsc::Receiver<Bytes>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// Lines dropped since the last call because this client read too
    /// slowly.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        hub().unsubscribe(self.id);
    }
}

/// tracing caches, per call site, whether any layer wants its events: a
/// site first hit while no monitor wanted its level is off for good unless
/// the cache is rebuilt when the monitors' levels change.
fn rebuild_interest() {
    tracing::callsite::rebuild_interest_cache();
}

impl MonitorHub {
    /// Starts following the log at `level` (and the levels above it).
    pub fn subscribe(&self, level: Level, format: Format) -> Result<Subscription, TooManyMonitors> {
        let mut clients = self.lock();
        if clients.len() >= MAX_MONITORS {
            return Err(TooManyMonitors);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (lines_tx, lines_rx) = mpsc::channel(CLIENT_QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        clients.push(Client {
            id,
            format,
            level,
            lines_tx,
            dropped: dropped.clone(),
        });
        let changed = self.update_levels(&clients);
        drop(clients);
        if changed {
            rebuild_interest();
        }
        Ok(Subscription {
            id,
            lines_rx,
            dropped,
        })
    }

    /// Monitors following the log now.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    fn unsubscribe(&self, id: u64) {
        let mut clients = self.lock();
        clients.retain(|client| client.id != id);
        let changed = self.update_levels(&clients);
        drop(clients);
        if changed {
            rebuild_interest();
        }
    }

    /// Sets the levels monitors want; whether they changed.
    fn update_levels(&self, clients: &[Client]) -> bool {
        let most = |format: Format| {
            clients
                .iter()
                .filter(|client| client.format == format)
                .map(|client| level_rank(client.level))
                .max()
                .unwrap_or(0)
        };
        let text = self.text_level.swap(most(Format::Text), Ordering::Relaxed);
        let json = self.json_level.swap(most(Format::Json), Ordering::Relaxed);
        text != most(Format::Text) || json != most(Format::Json)
    }

    /// Whether some client of `format` wants lines at `level`: checked
    /// before a line is formatted, so that without monitors nothing is.
    pub fn wants(&self, format: Format, level: Level) -> bool {
        let most = match format {
            Format::Text => &self.text_level,
            Format::Json => &self.json_level,
        };
        level_rank(level) <= most.load(Ordering::Relaxed)
    }

    /// Hands a formatted line to every client that wants it; a client
    /// whose queue is full loses it (counted).
    fn dispatch(&self, format: Format, level: Level, line: Bytes) {
        let clients = self.lock();
        for client in clients.iter() {
            if client.format != format || level_rank(level) > level_rank(client.level) {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = client.lines_tx.try_send(line.clone())
            {
                client.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The writer of a monitor layer: one per format.
#[derive(Clone, Copy)]
pub struct MonitorWriter(pub Format);

/// One line for the monitors, handed over when dropped.
pub struct MonitorLine {
    format: Format,
    level: Level,
    line: Vec<u8>,
}

impl std::io::Write for MonitorLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MonitorLine {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            let line = Bytes::from(std::mem::take(&mut self.line));
            hub().dispatch(self.format, self.level, line);
        }
    }
}

impl<'a> MakeWriter<'a> for MonitorWriter {
    type Writer = MonitorLine;

    fn make_writer(&'a self) -> MonitorLine {
        MonitorLine {
            format: self.0,
            level: Level::TRACE,
            line: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> MonitorLine {
        MonitorLine {
            format: self.0,
            level: *meta.level(),
            line: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_does_not_read_loses_lines_counted_and_budgets_hold() {
        let hub = hub();
        let subscription = hub.subscribe(Level::INFO, Format::Text).unwrap();
        assert!(hub.wants(Format::Text, Level::WARN));
        assert!(!hub.wants(Format::Text, Level::DEBUG));
        assert!(!hub.wants(Format::Json, Level::ERROR));
        let extra = 40;
        for n in 0..CLIENT_QUEUE_LINES + extra {
            hub.dispatch(
                Format::Text,
                Level::INFO,
                Bytes::from(format!("line {n}\n")),
            );
        }
        hub.dispatch(
            Format::Text,
            Level::DEBUG,
            Bytes::from_static(b"too verbose\n"),
        );
        assert_eq!(subscription.take_dropped(), extra as u64);
        assert_eq!(subscription.take_dropped(), 0);
        let more: Vec<Subscription> = (1..MAX_MONITORS)
            .map(|_| hub.subscribe(Level::ERROR, Format::Json).unwrap())
            .collect();
        assert!(hub.subscribe(Level::ERROR, Format::Json).is_err());
        drop(more);
        drop(subscription);
        assert_eq!(hub.active(), 0);
        assert!(!hub.wants(Format::Text, Level::ERROR));
    }
}
