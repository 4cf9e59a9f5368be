//! Delivers the node's timers in deadline order from one task.
//!
//! foca requires every timer, in order. Spawning a sleep per timer can
//! reorder timers that fall due together, so all of them live in one heap
//! keyed by `(deadline, rank, sequence)` and come back in batches.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use shoal_protocol::NodeTimer;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A timer with its deadline: submitted that way, and delivered that way
/// so the receiver can tell how late it handles it.
pub type ScheduledTimer = (Instant, NodeTimer);

struct Pending {
    deadline: Instant,
    rank: u8,
    sequence: u64,
    timer: NodeTimer,
}

impl Pending {
    fn key(&self) -> (Instant, u8, u64) {
        (self.deadline, self.rank, self.sequence)
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        other.key().cmp(&self.key())
    }
}

/// Runs until `shutdown`: takes `(deadline, timer)` from `submit_rx` and
/// sends due timers, in order and with their deadlines (so the receiver can
/// tell how late it handles them), to `fire_tx`.
pub async fn scheduler_loop(
    mut submit_rx: mpsc::UnboundedReceiver<ScheduledTimer>,
    fire_tx: mpsc::Sender<ScheduledTimer>,
    shutdown: CancellationToken,
) {
    let mut heap = BinaryHeap::new();
    let mut sequence = 0u64;
    loop {
        let next_deadline = heap.peek().map(|pending: &Pending| pending.deadline);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            submitted = submit_rx.recv() => match submitted {
                Some((deadline, timer)) => {
                    sequence += 1;
                    heap.push(Pending { deadline, rank: timer.rank(), sequence, timer });
                }
                None => return,
            },
            _ = tokio::time::sleep_until(next_deadline.unwrap_or_else(Instant::now)), if next_deadline.is_some() => {
                let now = Instant::now();
                while heap.peek().is_some_and(|pending| pending.deadline <= now) {
                    let pending = heap.pop().expect("peeked");
                    if fire_tx.send((pending.deadline, pending.timer)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn timers_fire_in_deadline_then_rank_order() {
        let (submit_tx, submit_rx) = mpsc::unbounded_channel();
        let (fire_tx, mut fire_rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        tokio::spawn(scheduler_loop(submit_rx, fire_tx, shutdown.clone()));
        let now = Instant::now();
        submit_tx
            .send((now + Duration::from_millis(30), NodeTimer::FinishLeave))
            .unwrap();
        submit_tx
            .send((now + Duration::from_millis(10), NodeTimer::AntiEntropy))
            .unwrap();
        submit_tx
            .send((now + Duration::from_millis(10), NodeTimer::Rejoin(1)))
            .unwrap();
        submit_tx
            .send((now + Duration::from_millis(20), NodeTimer::Rejoin(2)))
            .unwrap();
        let mut fired = Vec::new();
        for _ in 0..4 {
            fired.push(fire_rx.recv().await.unwrap().1);
        }
        assert_eq!(
            fired,
            [
                NodeTimer::Rejoin(1),
                NodeTimer::AntiEntropy,
                NodeTimer::Rejoin(2),
                NodeTimer::FinishLeave
            ]
        );
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_fires_with_its_deadline_even_when_late() {
        let (submit_tx, submit_rx) = mpsc::unbounded_channel();
        let (fire_tx, mut fire_rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        tokio::spawn(scheduler_loop(submit_rx, fire_tx, shutdown.clone()));
        let deadline = Instant::now();
        tokio::time::advance(Duration::from_millis(40)).await;
        submit_tx.send((deadline, NodeTimer::AntiEntropy)).unwrap();
        let (fired_deadline, timer) = fire_rx.recv().await.unwrap();
        assert_eq!(timer, NodeTimer::AntiEntropy);
        assert_eq!(fired_deadline, deadline);
        assert!(Instant::now() - fired_deadline >= Duration::from_millis(40));
        shutdown.cancel();
    }
}
