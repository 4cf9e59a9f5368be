//! The agent's log output to stderr, off every caller's thread: a line is
//! formatted where it is logged, then handed to a bounded queue that one
//! writer thread (`shoal-log`) empties. When stderr is slow (a full pipe, a
//! stalled journald), lines are dropped and counted rather than blocking
//! the caller: the core loop must never wait on a log write, or a slow
//! terminal would get this node declared dead.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines queued for stderr at most; past it they are dropped and counted.
pub const QUEUE_LINES: usize = 4096;
/// How long [`flush`] waits for the queue to drain at exit.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Message {
    Line(Vec<u8>),
    /// Answered once every line queued before it is written.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The queue to the writer thread; see [`NonBlockingStderr`].
#[derive(Clone)]
pub struct NonBlockingStderr {
    queue_tx: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

static INSTALLED: OnceLock<NonBlockingStderr> = OnceLock::new();

impl NonBlockingStderr {
    /// Starts the writer thread; the first call installs the writer that
    /// [`flush`] waits for.
    pub fn spawn() -> std::io::Result<Self> {
        let (queue_tx, queue_rx) = sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer_dropped = dropped.clone();
        std::thread::Builder::new()
            .name("shoal-log".into())
            .spawn(move || write_loop(queue_rx, writer_dropped))?;
        let writer = Self { queue_tx, dropped };
        let _ = INSTALLED.set(writer.clone());
        Ok(writer)
    }

    /// Lines dropped because stderr could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Waits (a bounded time) until every line logged so far is on stderr:
/// called before the process exits, so its last lines are not lost.
pub fn flush() {
    let Some(writer) = INSTALLED.get() else {
        return;
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // Never a blocking send: with stderr stalled (a full pipe) the queue
    // stays full, and the process must still exit.
    let deadline = std::time::Instant::now() + FLUSH_WAIT;
    let mut message = Message::Flush(done_tx);
    loop {
        match writer.queue_tx.try_send(message) {
            Ok(()) => {
                let _ = done_rx
                    .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
                return;
            }
            Err(std::sync::mpsc::TrySendError::Full(back))
                if std::time::Instant::now() < deadline =>
            {
                message = back;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(_) => return,
        }
    }
}

fn write_loop(queue_rx: Receiver<Message>, dropped: Arc<AtomicU64>) {
    let mut reported = 0;
    let mut stderr = std::io::stderr();
    while let Ok(message) = queue_rx.recv() {
        match message {
            Message::Line(line) => {
                let _ = stderr.write_all(&line);
            }
            Message::Flush(done_tx) => {
                let _ = stderr.flush();
                let _ = done_tx.send(());
            }
        }
        // Said once the queue has room again, so the reader knows there
        // is a gap (and how large).
        let now = dropped.load(Ordering::Relaxed);
        if now != reported {
            let _ = writeln!(
                stderr,
                "shoal: {} log lines dropped: stderr was too slow to take them",
                now - reported
            );
            reported = now;
        }
    }
}

/// One formatted line; queued when dropped (tracing's formatter writes a
/// whole event, then drops its writer).
pub struct QueuedLine {
    line: Vec<u8>,
    target: NonBlockingStderr,
}

impl Write for QueuedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.line);
        match self.target.queue_tx.try_send(Message::Line(line)) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.target.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for NonBlockingStderr {
    type Writer = QueuedLine;

    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine {
            line: Vec::with_capacity(256),
            target: self.clone(),
        }
    }
}
