//! Churn during a lookup measurement: a cluster that changes while the
//! measured agent answers lookups, as a real one does.
//!
//! On a *peer* of the measured agent (so the measured agent pays only for
//! what it learns by gossip, not for the writes themselves), every 100 ms
//! one KV write (`PUT /v1/kv/churn/k<0..9>`: 10 writes/s), and once a
//! second a service registration (`churn`, instance `churn-1`) that is
//! deregistered half a second later: 1 registration/s, each a change of
//! the catalog cluster-wide. The lookup cache keys its entries on the
//! cluster and KV indexes as a whole, so a change to another service or
//! another key invalidates the looked-up entry as much as a change to it
//! would, while the looked-up answer keeps the very bytes the bare server
//! sends.
//!
//! The driver runs on a thread of its own with its own runtime: wrk runs
//! as a blocking child on the main thread, and the open-loop generator's
//! timing must not share a thread with it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use hyper::Method;

use crate::http::HttpClient;

/// One KV write per tick; a registration every 10th tick, its
/// deregistration 5 ticks later.
const TICK: Duration = Duration::from_millis(100);
const TICKS_PER_REGISTRATION: u64 = 10;

/// What the driver has done so far (monotonic).
#[derive(Debug, Default)]
struct Done {
    registrations: AtomicU64,
    deregistrations: AtomicU64,
    kv_writes: AtomicU64,
    failures: AtomicU64,
}

/// Counts of [`Done`] at one moment, or between two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChurnCounts {
    pub registrations: u64,
    pub deregistrations: u64,
    pub kv_writes: u64,
    /// Requests the peer refused or did not answer in time.
    pub failures: u64,
}

impl ChurnCounts {
    pub fn since(&self, before: &ChurnCounts) -> ChurnCounts {
        ChurnCounts {
            registrations: self.registrations - before.registrations,
            deregistrations: self.deregistrations - before.deregistrations,
            kv_writes: self.kv_writes - before.kv_writes,
            failures: self.failures - before.failures,
        }
    }
}

/// The running driver; [`Churn::stop`] ends it.
pub struct Churn {
    stop: Arc<AtomicBool>,
    done: Arc<Done>,
    thread: JoinHandle<Result<()>>,
}

impl Churn {
    /// Starts churning on the agent whose API is at `peer`.
    pub fn start(peer: SocketAddr) -> Result<Churn> {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Done::default());
        let thread = std::thread::Builder::new().name("churn".into()).spawn({
            let (stop, done) = (stop.clone(), done.clone());
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                tokio::task::LocalSet::new().block_on(&runtime, churn_loop(peer, &stop, &done))
            }
        })?;
        Ok(Churn { stop, done, thread })
    }

    /// What was done since the start.
    pub fn counts(&self) -> ChurnCounts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ChurnCounts {
            registrations: load(&self.done.registrations),
            deregistrations: load(&self.done.deregistrations),
            kv_writes: load(&self.done.kv_writes),
            failures: load(&self.done.failures),
        }
    }

    /// Stops the driver (the churn instance may stay registered).
    pub fn stop(self) -> Result<ChurnCounts> {
        self.stop.store(true, Ordering::Relaxed);
        let counts = self.counts();
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the churn thread panicked"))??;
        Ok(counts)
    }
}

async fn churn_loop(peer: SocketAddr, stop: &AtomicBool, done: &Done) -> Result<()> {
    let mut client = HttpClient::new(peer);
    let mut ticks = tokio::time::interval(TICK);
    // Late ticks are sent at once, so a slow answer does not lower the
    // rate over the run; the counts say what was actually done.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let registration = serde_json::json!({ "Name": "churn", "ID": "churn-1", "Port": 9090 });
    let mut tick = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        let value = Bytes::from(tick.to_string());
        let key = format!("/v1/kv/churn/k{}", tick % 10);
        count(
            put(&mut client, &key, value).await,
            &done.kv_writes,
            &done.failures,
        );
        match tick % TICKS_PER_REGISTRATION {
            0 => count(
                put(
                    &mut client,
                    "/v1/agent/service/register",
                    Bytes::from(registration.to_string()),
                )
                .await,
                &done.registrations,
                &done.failures,
            ),
            5 => count(
                put(
                    &mut client,
                    "/v1/agent/service/deregister/churn-1",
                    Bytes::new(),
                )
                .await,
                &done.deregistrations,
                &done.failures,
            ),
            _ => {}
        }
        tick += 1;
    }
    Ok(())
}

async fn put(client: &mut HttpClient, path: &str, body: Bytes) -> Result<()> {
    let response = client
        .request(Method::PUT, path, body, Duration::from_secs(2))
        .await?;
    anyhow::ensure!(
        response.status.is_success(),
        "{path} answered {}",
        response.status
    );
    Ok(())
}

fn count(result: Result<()>, done: &AtomicU64, failures: &AtomicU64) {
    match result {
        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
        Err(_) => failures.fetch_add(1, Ordering::Relaxed),
    };
}
