//! One task per configured item, kept in step with the configuration as it
//! reloads: the manager behind `[[templates]]` and `[[watches]]`.
//!
//! [`Runners::spawn`] starts a manager task that starts a runner for each
//! item; [`Runners::reconfigure`] hands it the reloaded list. Items that
//! stayed equal keep running untouched, removed or changed ones are stopped
//! (their token cancelled), new or changed ones start. Each runner's token
//! is a child of the agent's stop token, so shutdown stops them all.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The handle of a manager: where reloaded lists go.
#[derive(Debug)]
pub struct Runners<T> {
    items_tx: watch::Sender<Arc<Vec<T>>>,
}

impl<T> Clone for Runners<T> {
    fn clone(&self) -> Self {
        Self {
            items_tx: self.items_tx.clone(),
        }
    }
}

impl<T> Runners<T>
where
    T: PartialEq + Clone + Send + Sync + 'static,
{
    /// Starts the manager on `tracker`. `runner(item, token)` is one
    /// item's runner, spawned on `tracker` (it must end when `token` is
    /// cancelled); `stopped(item)` is told of each item removed, after its
    /// token was cancelled and before anything new starts.
    pub fn spawn<R>(
        items: Vec<T>,
        tracker: &TaskTracker,
        stop: CancellationToken,
        runner: impl FnMut(&T, CancellationToken) -> R + Send + 'static,
        stopped: impl FnMut(&T) + Send + 'static,
    ) -> Self
    where
        R: Future<Output = ()> + Send + 'static,
    {
        let (items_tx, items_rx) = watch::channel(Arc::new(items));
        tracker.spawn(manage_loop(
            items_rx,
            tracker.clone(),
            stop,
            runner,
            stopped,
        ));
        Self { items_tx }
    }

    /// Applies a reloaded list.
    pub fn reconfigure(&self, items: Vec<T>) {
        self.items_tx.send_replace(Arc::new(items));
    }
}

async fn manage_loop<T: PartialEq + Clone, R>(
    mut items_rx: watch::Receiver<Arc<Vec<T>>>,
    tracker: TaskTracker,
    stop: CancellationToken,
    mut runner: impl FnMut(&T, CancellationToken) -> R,
    mut stopped: impl FnMut(&T),
) where
    R: Future<Output = ()> + Send + 'static,
{
    let mut running: Vec<(T, CancellationToken)> = Vec::new();
    loop {
        let wanted = items_rx.borrow_and_update().clone();
        let mut previous = std::mem::take(&mut running);
        let mut new = Vec::new();
        for item in wanted.iter() {
            // One runner per item, equal items included.
            match previous.iter().position(|(old, _)| old == item) {
                Some(at) => running.push(previous.swap_remove(at)),
                None => new.push(item),
            }
        }
        for (item, token) in previous {
            token.cancel();
            stopped(&item);
        }
        for item in new {
            let token = stop.child_token();
            tracker.spawn(runner(item, token.clone()));
            running.push((item.clone(), token));
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            // Every handle dropped (shutting down): what runs keeps running
            // until `stop`.
            changed = items_rx.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_reload_stops_what_went_and_starts_what_came() {
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let tokens = Arc::new(Mutex::new(Vec::<(u32, CancellationToken)>::new()));
        let (started, removed) = (tokens.clone(), log.clone());
        let runners = Runners::spawn(
            vec![1, 2, 2],
            &tracker,
            stop.clone(),
            move |item: &u32, token| {
                started.lock().unwrap().push((*item, token));
                std::future::ready(())
            },
            move |item: &u32| removed.lock().unwrap().push(format!("stopped {item}")),
        );
        let settle = || tokio::time::sleep(Duration::from_millis(100));
        settle().await;
        let items = |tokens: &Mutex<Vec<(u32, CancellationToken)>>| {
            let mut live: Vec<u32> = tokens
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, token)| !token.is_cancelled())
                .map(|(item, _)| *item)
                .collect();
            live.sort();
            live
        };
        assert_eq!(items(&tokens), [1, 2, 2]);
        runners.reconfigure(vec![2, 3]);
        settle().await;
        assert_eq!(items(&tokens), [2, 3]);
        assert_eq!(tokens.lock().unwrap().len(), 4, "2 kept running, 3 started");
        let mut stopped = log.lock().unwrap().clone();
        stopped.sort();
        assert_eq!(stopped, ["stopped 1", "stopped 2"]);
        stop.cancel();
        settle().await;
        assert!(items(&tokens).is_empty());
    }
}
