//! The API's side of config hot reload (see `daemon::reload`, which runs
//! it): ask for a reload, read how reloads went. Kept apart from the daemon so that readers never import the
//! wiring that spawns them.

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

/// Why a reload ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    File,
    Signal,
    Api,
}

/// The outcome of reloads so far, shown in `/v1/agent/self`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadStatus {
    /// Successful reloads since start.
    pub reloads: u64,
    /// Reloads refused since start.
    pub failures: u64,
    /// RFC 3339 time of the last successful reload.
    pub last_success: Option<String>,
    /// Why the last reload was refused; cleared by the next good one.
    pub last_error: Option<String>,
    pub last_trigger: Option<Trigger>,
    /// Keys changed in the file that only take effect after a restart.
    pub needs_restart: Vec<String>,
    /// Directories watched for changes.
    pub watching: Vec<String>,
}

/// A successful reload, as `PUT /v1/agent/reload` reports it.
#[derive(Clone, Debug, Serialize)]
pub struct Reloaded {
    pub services: usize,
    pub checks: usize,
    pub log_level: String,
    pub needs_restart: Vec<String>,
    /// The live parts that changed (`services`, `checks`, `tags`,
    /// `log_level`, `templates`, `watches`), for the log.
    pub changed: Vec<&'static str>,
}

pub(crate) type ReloadReply = oneshot::Sender<Result<Reloaded, String>>;

/// The API's side: ask for a reload, read the status.
#[derive(Clone)]
pub struct ReloadHandle {
    pub(crate) requests_tx: mpsc::Sender<ReloadReply>,
    pub(crate) status_rx: watch::Receiver<ReloadStatus>,
}

impl ReloadHandle {
    /// Reloads now and answers with the outcome.
    pub async fn reload(&self) -> Result<Reloaded, String> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let stopped = || "the agent is shutting down".to_string();
        self.requests_tx
            .send(reply_tx)
            .await
            .map_err(|_| stopped())?;
        reply_rx.await.map_err(|_| stopped())?
    }

    pub fn status(&self) -> ReloadStatus {
        self.status_rx.borrow().clone()
    }
}
