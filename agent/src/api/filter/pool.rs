//! The filter pool: where `?filter=` expressions are compiled and
//! evaluated. [`FILTER_WORKERS`] threads of their own, started at the first
//! filter, at a lower CPU priority (nice +10): a filter load then takes the
//! CPU the rest of the agent leaves, and never delays the thread that
//! serves the other requests, nor the gossip thread. More requests than
//! workers wait their turn asynchronously (no thread held).

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Semaphore, oneshot};

/// Filters compiled and evaluated at once. Two keep a heavy filter load to
/// two cores' worth at most, at low priority.
pub const FILTER_WORKERS: usize = 2;
/// The workers' nice value: a weight of about a tenth of a normal thread's
/// when both want the CPU.
const WORKER_NICE: libc::c_int = 10;

type Job = Box<dyn FnOnce() + Send>;

/// See the module doc.
#[derive(Debug)]
pub struct FilterPool {
    turns: Arc<Semaphore>,
    /// Started with the first job.
    jobs_tx: OnceLock<Mutex<mpsc::Sender<Job>>>,
}

/// The pool could not run the work (its threads are gone).
#[derive(Debug, thiserror::Error)]
#[error("the filter pool is not running")]
pub struct PoolStopped;

impl Default for FilterPool {
    fn default() -> Self {
        Self {
            turns: Arc::new(Semaphore::new(FILTER_WORKERS)),
            jobs_tx: OnceLock::new(),
        }
    }
}

impl FilterPool {
    /// Runs `work` on one of the workers, once one is free; its turn is
    /// held until `work` ends, even if the caller is gone by then.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolStopped> {
        let turn = self
            .turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolStopped)?;
        let (done_tx, done_rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let value = work();
            // Free the turn before the caller hears back, so that a caller
            // that runs again at once finds it free.
            drop(turn);
            let _ = done_tx.send(value);
        });
        self.jobs_tx
            .get_or_init(start_workers)
            .lock()
            .map_err(|_| PoolStopped)?
            .send(job)
            .map_err(|_| PoolStopped)?;
        done_rx.await.map_err(|_| PoolStopped)
    }
}

/// Starts the workers; they end when the pool (the sender) is dropped.
fn start_workers() -> Mutex<mpsc::Sender<Job>> {
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    for worker in 0..FILTER_WORKERS {
        let jobs_rx = jobs_rx.clone();
        let started = std::thread::Builder::new()
            .name(format!("shoal-filter-{worker}"))
            .spawn(move || {
                lower_priority();
                loop {
                    let Ok(job) = jobs_rx
                        .lock()
                        .map_err(drop)
                        .and_then(|rx| rx.recv().map_err(drop))
                    else {
                        return;
                    };
                    // A panic (a bug) costs its request, not the worker.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        if let Err(error) = started {
            tracing::error!(%error, "cannot start a filter worker");
        }
    }
    Mutex::new(jobs_tx)
}

/// Lowers the calling thread's CPU priority (Linux nice is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, WORKER_NICE) } != 0 {
            tracing::debug!("could not lower the filter workers' priority");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_a_worker_thread_and_turns_are_bounded() {
        let pool = Arc::new(FilterPool::default());
        let name = pool
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(name.is_some_and(|name| name.starts_with("shoal-filter-")));
        // More jobs than workers all finish.
        let jobs: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.run(move || i * 2).await.unwrap() })
            })
            .collect();
        let mut sum = 0;
        for job in jobs {
            sum += job.await.unwrap();
        }
        assert_eq!(sum, 56);
        assert_eq!(pool.turns.available_permits(), FILTER_WORKERS);
    }
}
