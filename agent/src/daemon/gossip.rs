//! The gossip loop: the one task that owns the [`Node`] (foca and the
//! cluster state). Everything else talks to it through channels and reads
//! the snapshots it publishes. It never waits on I/O: datagrams go out with
//! `try_send_to`, and TCP exchanges run in tasks of their own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_protocol::sync::SyncMessage;
use shoal_protocol::{Node, NodeTimer};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::local::LocalState;
use super::snapshot::Snapshot;
use super::sync::SyncService;
use crate::checks::{CheckDefinition, CheckResult};
use crate::local::registry::RegistryError;
use crate::local::service::ServiceDefinition;
use crate::persist::DataDirGuard;
use shoal_protocol::record::CheckStatus;

/// Requests from other tasks. Those that need an answer carry a sender.
pub enum Command {
    /// One step of an anti-entropy exchange (see `shoal_protocol::sync`):
    /// merge what the peer sent and answer with the next message, if any.
    /// The caller has checked that the steps come in order.
    Sync {
        message: SyncMessage,
        reply: oneshot::Sender<Option<SyncMessage>>,
    },
    /// A KV write or delete, validated by the API.
    Kv {
        request: crate::kv::KvRequest,
        reply: oneshot::Sender<Result<crate::kv::KvAck, shoal_protocol::kv::KvError>>,
    },
    /// A KV write came back from the disk: apply it if it is durable.
    KvSettle {
        entries: Vec<shoal_protocol::kv::KvEntry>,
        durable: bool,
        reply: oneshot::Sender<()>,
    },
    /// A change to what is registered on this agent, answered once it is
    /// applied (and, for API registrations, durable).
    Local {
        request: LocalRequest,
        reply: oneshot::Sender<Result<(), LocalError>>,
    },
    /// A config reload: replaces the config-sourced services and checks and
    /// the node tags (see `crate::reload`).
    Reload {
        live: crate::reload::LiveConfig,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Changes to the local registry, already validated by the API.
pub enum LocalRequest {
    RegisterService {
        definition: ServiceDefinition,
        raw: Option<serde_json::Value>,
    },
    DeregisterService {
        id: String,
    },
    RegisterCheck {
        definition: CheckDefinition,
        raw: Option<serde_json::Value>,
    },
    DeregisterCheck {
        id: String,
    },
    TtlUpdate {
        id: String,
        status: CheckStatus,
        output: Option<String>,
    },
    NodeMaintenance {
        reason: Option<String>,
    },
    ServiceMaintenance {
        id: String,
        reason: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("could not persist the registration: {0}")]
    Persist(String),
}

/// The receiving ends the loop listens on.
pub struct Inputs {
    pub timers_rx: mpsc::Receiver<NodeTimer>,
    pub datagrams_rx: mpsc::Receiver<Vec<u8>>,
    pub commands_rx: mpsc::Receiver<Command>,
    pub results_rx: mpsc::Receiver<CheckResult>,
}

/// How often counters are republished when nothing else changes.
const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// How often KV tombstones are collected and "last in touch" is saved.
const KV_HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);
/// How often TTLs and deregister-after deadlines are checked.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);
/// Upper bound on a graceful leave, whatever the timers say.
const LEAVE_DEADLINE: Duration = Duration::from_secs(5);

pub struct GossipLoop {
    pub node: Node,
    pub socket: Arc<UdpSocket>,
    pub schedule_tx: mpsc::UnboundedSender<(Instant, NodeTimer)>,
    pub snapshot_tx: watch::Sender<Arc<Snapshot>>,
    pub sync: SyncService,
    pub data_dir: Arc<DataDirGuard>,
    /// Datagrams the receive task dropped because the loop was behind.
    pub receive_drops: Arc<AtomicU64>,
    pub send_failures: u64,
    pub index: u64,
    /// Services and checks registered on this agent.
    pub local: LocalState,
    /// The KV store's clock and disk.
    pub kv: crate::kv::KvState,
    /// Test-only: peers whose traffic is dropped.
    pub faults: Arc<super::fault::FaultInjection>,
}

impl GossipLoop {
    /// Runs until the node has left the cluster after `shutdown`.
    pub async fn run(mut self, mut inputs: Inputs, shutdown: CancellationToken) {
        self.node.start();
        self.push_local(crate::local::registry::Change::Status);
        self.flush();
        let mut stats = tokio::time::interval(STATS_INTERVAL);
        stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut kv_housekeeping = tokio::time::interval(KV_HOUSEKEEPING_INTERVAL);
        kv_housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leave_deadline: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if leave_deadline.is_none() => {
                    tracing::info!("leaving the cluster");
                    self.node.begin_leave();
                    leave_deadline = Some(Instant::now() + LEAVE_DEADLINE);
                }
                _ = tokio::time::sleep_until(leave_deadline.unwrap_or_else(Instant::now)), if leave_deadline.is_some() => {
                    tracing::warn!("graceful leave did not finish in time; stopping anyway");
                    return;
                }
                Some(timer) = inputs.timers_rx.recv() => self.node.handle_timer(timer),
                Some(packet) = inputs.datagrams_rx.recv() => {
                    if let Err(error) = self.node.handle_datagram(&packet) {
                        tracing::debug!(%error, "dropped a datagram");
                    }
                }
                Some(command) = inputs.commands_rx.recv() => self.handle_command(command),
                Some(result) = inputs.results_rx.recv() => {
                    let change = self.local.apply_result(result);
                    self.push_local(change);
                }
                _ = housekeeping.tick() => {
                    let change = self.local.housekeeping();
                    self.push_local(change);
                }
                _ = kv_housekeeping.tick() => self.kv.housekeeping(&mut self.node),
                _ = stats.tick() => self.publish(),
            }
            self.flush();
            if self.node.has_left() {
                tracing::info!("left the cluster");
                return;
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::Sync { message, reply } => {
                if !matches!(message, SyncMessage::Records(_)) {
                    // The answer carries our KV entries: never hand stale
                    // ones to a peer.
                    self.kv.before_contact(&mut self.node);
                }
                let _ = reply.send(self.node.on_sync(message));
            }
            Command::Kv { request, reply } => {
                let _ = reply.send(self.kv.handle(&mut self.node, request));
            }
            Command::KvSettle {
                entries,
                durable,
                reply,
            } => {
                self.kv.settle(&mut self.node, entries, durable);
                let _ = reply.send(());
            }
            Command::Local { request, reply } => {
                let change = self.local.handle(request, reply);
                self.push_local(change);
            }
            Command::Reload { live, reply } => {
                let _ = reply.send(self.apply_reload(live));
            }
        }
    }

    /// Applies a reloaded configuration; tags change only if the services
    /// and checks were accepted.
    fn apply_reload(&mut self, live: crate::reload::LiveConfig) -> Result<(), String> {
        let loaded = self.local.load_config(live.services, live.checks);
        self.push_local(crate::local::registry::Change::Status);
        loaded.map_err(|error| format!("services and checks: {error}"))?;
        if self.node.local_record().tags != live.tags {
            self.node.update_local(|record| record.tags = live.tags);
        }
        Ok(())
    }

    /// Copies the registry into our node record: a status change gets a new
    /// version and is gossiped; output alone rides along quietly.
    fn push_local(&mut self, change: crate::local::registry::Change) {
        use crate::local::registry::Change;
        if change == Change::None {
            return;
        }
        let (services, checks) = self.local.records();
        if change == Change::Status {
            self.node.update_local(|record| {
                record.services = services;
                record.checks = checks;
            });
        } else {
            self.node.refresh_local(|record| {
                record.services = services;
                record.checks = checks;
            });
        }
    }

    /// Carries out what the node asked for during the last call.
    fn flush(&mut self) {
        self.kv.flush(&mut self.node);
        let effects = self.node.effects();
        let mut datagrams = std::mem::take(&mut effects.datagrams);
        let mut timers = std::mem::take(&mut effects.timers);
        let mut syncs = std::mem::take(&mut effects.syncs);

        for (addr, packet) in datagrams.drain(..) {
            if self.faults.is_blocked(addr.ip()) {
                continue;
            }
            if let Err(error) = self.socket.try_send_to(&packet, addr) {
                self.send_failures += 1;
                tracing::trace!(%addr, %error, "datagram not sent");
            }
        }
        let now = Instant::now();
        for (after, timer) in timers.drain(..) {
            // The scheduler only stops at shutdown, when timers no longer matter.
            let _ = self.schedule_tx.send((now + after, timer));
        }
        syncs.sort_unstable();
        syncs.dedup();
        for peer in syncs.drain(..) {
            self.start_sync(peer);
        }

        // Hand the (empty) buffers back so their capacity is reused.
        let effects = self.node.effects();
        effects.datagrams = datagrams;
        effects.timers = timers;
        effects.syncs = syncs;

        if let Some(id) = self.node.take_renewed() {
            tracing::warn!(%id, "the cluster declared this node down; rejoined with a new identity");
            let data_dir = self.data_dir.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(error) = data_dir.store_generation(id.generation) {
                    tracing::error!(%error, "could not persist the new generation");
                }
            });
        }
        if self.node.take_changed() {
            self.index += 1;
            self.publish();
        }
    }

    fn start_sync(&mut self, peer: SocketAddr) {
        if !self.sync.initiate(peer, self.node.sync_open()) {
            tracing::debug!(%peer, "anti-entropy skipped: too many exchanges running");
        }
    }

    fn publish(&self) {
        let snapshot = Snapshot {
            index: self.index,
            local: self.node.local_record(),
            members: self.node.members(),
            local_checks: self.local.views(),
            kv: self.node.kv(),
            checks_loaded: true,
            counters: self.node.counters().clone(),
            name_conflicts: self.node.name_conflicts(),
            send_failures: self.send_failures,
            receive_drops: self.receive_drops.load(Ordering::Relaxed),
        };
        self.snapshot_tx.send_replace(Arc::new(snapshot));
    }
}
