//! The front door to the core loop: [`AgentHandle`] and the vocabulary it
//! speaks.
//!
//! The loop owns the node, the registry and the KV state. Everyone else
//! (HTTP handlers, config reload, the anti-entropy transport) asks it for
//! changes through an [`AgentHandle`] and reads what it publishes in
//! snapshots. Only this file builds `Command`s, and it imports none of the
//! daemon's other files: the loop and its helpers depend on it, never on
//! each other through it.

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_protocol::anti_entropy::SyncMessage;
use shoal_protocol::event::{EventError, EventRequest, UserEvent};
use shoal_protocol::kv::{KvEntry, KvError};
use shoal_protocol::node::OurPage;
use shoal_protocol::record::CheckStatus;
use shoal_protocol::{ForceLeaveError, ForceLeft};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::checks::CheckDefinition;
use crate::kv::{KvAck, KvRequest};
use crate::registry::{RegistryError, ServiceDefinition};

/// Requests queued for the loop before senders wait their turn.
const COMMAND_QUEUE: usize = 256;
/// Local KV writes between the caller and the disk at once. Past this, a
/// write waits for one to finish: a disk that can't keep up slows clients
/// down rather than filling the agent's memory with their values (the loop
/// itself never waits for the disk: see `kv::disk`).
pub const KV_WRITES_IN_FLIGHT: usize = 64;

/// What the loop is asked to do. Those that need an answer carry a sender.
pub(super) enum Command {
    /// One step of an anti-entropy exchange (see `shoal_protocol::anti_entropy`):
    /// merge what the peer sent and answer with the next message, if any,
    /// carrying `ours`, the KV page the caller built for it off the loop
    /// (`shoal_protocol::node::build_page`). The caller has checked that
    /// the steps come in order.
    Sync {
        message: SyncMessage,
        ours: Option<OurPage>,
        reply: oneshot::Sender<Option<SyncMessage>>,
    },
    /// A KV write or delete, validated by the caller: written ahead to disk,
    /// not applied yet.
    KvWrite {
        request: KvRequest,
        reply: oneshot::Sender<Result<KvAck, KvError>>,
    },
    /// A KV write came back from the disk: apply it if it is durable.
    /// Answers why the node did not take it, if it did not.
    KvSettle {
        entries: Vec<KvEntry>,
        durable: bool,
        reply: oneshot::Sender<Result<(), KvError>>,
    },
    /// A change to what is registered on this agent, answered once it is
    /// applied (and, for API registrations, durable).
    Registry {
        request: RegistryRequest,
        reply: oneshot::Sender<Result<(), RegistrationError>>,
    },
    /// A config reload: replaces the config-sourced services and checks and
    /// the node tags.
    Reload {
        live: LiveConfig,
        reply: oneshot::Sender<Result<(), RegistryError>>,
    },
    /// Fire a user event (see `shoal_protocol::event`), checked by the
    /// caller; answered with the event as stamped.
    FireEvent {
        request: EventRequest,
        reply: oneshot::Sender<Result<UserEvent, EventError>>,
    },
    /// Join the cluster `addr` belongs to (`shoal join`): announce to it
    /// and run an anti-entropy exchange with it; answered when the
    /// exchange ends, with why it failed if it did.
    Join {
        addr: std::net::SocketAddr,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Move the failed member `name` to left everywhere, or forget it
    /// everywhere with `prune` (`shoal force-leave`).
    ForceLeave {
        name: String,
        prune: bool,
        reply: oneshot::Sender<Result<ForceLeft, ForceLeaveError>>,
    },
}

/// Changes to the registry, already validated by the caller.
pub(super) enum RegistryRequest {
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

/// The loop has stopped (the agent is shutting down): the request may or
/// may not have been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the agent is shutting down")]
pub struct AgentStopped;

/// Why a change to the registry was not made.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// Refused by the registry; nothing changed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Applied, but the registrations file could not be written: the change
    /// is live now and lost at the next restart.
    #[error("could not persist the registration: {0}")]
    Persist(String),
    #[error(transparent)]
    Stopped(#[from] AgentStopped),
}

/// Why a KV write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum KvWriteError {
    /// Refused, and not applied: a bad key, a value too large, a store
    /// past `kv.max_bytes`, a key stamped too far in the future.
    #[error(transparent)]
    Refused(#[from] KvError),
    /// The disk did not take the write, so it was not applied: nobody ever
    /// sees it.
    #[error("the write could not be made durable, so it was not applied: {0}")]
    NotDurable(String),
    #[error(transparent)]
    Stopped(#[from] AgentStopped),
}

/// Why a user event was not fired.
#[derive(Debug, thiserror::Error)]
pub enum FireEventError {
    #[error(transparent)]
    Refused(#[from] EventError),
    #[error(transparent)]
    Stopped(#[from] AgentStopped),
}

/// Why `shoal join` did not reach an address.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Nothing changed: the exchange with the address failed (refused,
    /// timed out, another cluster or key, not a shoal agent).
    #[error("{0}")]
    Unreachable(String),
    #[error(transparent)]
    Stopped(#[from] AgentStopped),
}

/// Why a force-leave was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ForceLeaveFailed {
    /// Refused (unknown name, a live member, this agent); nothing changed.
    #[error(transparent)]
    Refused(#[from] ForceLeaveError),
    #[error(transparent)]
    Stopped(#[from] AgentStopped),
}

/// What a config reload changes while running; the loop applies it.
pub struct LiveConfig {
    pub services: Vec<ServiceDefinition>,
    pub checks: Vec<CheckDefinition>,
    pub tags: BTreeMap<String, String>,
}

/// Why a reloaded configuration was not applied.
#[derive(Debug, thiserror::Error)]
pub enum LiveConfigError {
    /// The services and checks were refused; the running ones and the node
    /// tags stay as they were.
    #[error("services and checks: {0}")]
    Registry(RegistryError),
    #[error(transparent)]
    Stopped(#[from] AgentStopped),
}

/// The one way to ask the core loop for a change. Cheap to clone; every
/// method waits until the loop has answered (and, for writes that must be
/// durable, until the disk has).
#[derive(Clone)]
pub struct AgentHandle {
    commands_tx: mpsc::Sender<Command>,
    /// Permits for local KV writes on their way to disk.
    kv_writes: Arc<Semaphore>,
}

/// A command's answer, held back by the loop until it has published what
/// the command changed: the caller reads the snapshot on another thread,
/// and must see its own write once it hears back (read-your-writes).
pub(super) enum Answer {
    /// Sends the reply.
    Send(Box<dyn FnOnce() + Send>),
    /// A registry change the caller hears about once it is on disk.
    Persist(oneshot::Sender<Result<(), RegistrationError>>),
}

impl Answer {
    pub(super) fn send<T: Send + 'static>(reply: oneshot::Sender<T>, value: T) -> Self {
        Answer::Send(Box::new(move || {
            let _ = reply.send(value);
        }))
    }
}

/// A handle and the receiving end the loop listens on.
pub(super) fn channel() -> (AgentHandle, mpsc::Receiver<Command>) {
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let kv_writes = Arc::new(Semaphore::new(KV_WRITES_IN_FLIGHT));
    (
        AgentHandle {
            commands_tx,
            kv_writes,
        },
        commands_rx,
    )
}

impl AgentHandle {
    /// Sends the command `build` makes around a reply sender, and waits for
    /// the reply.
    async fn ask<T>(
        &self,
        build: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, AgentStopped> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.commands_tx
            .send(build(reply_tx))
            .await
            .map_err(|_| AgentStopped)?;
        reply_rx.await.map_err(|_| AgentStopped)
    }

    async fn registry(&self, request: RegistryRequest) -> Result<(), RegistrationError> {
        self.ask(|reply| Command::Registry { request, reply })
            .await?
    }

    /// Registers (or replaces) a service from the API; `raw` is the request
    /// body as persisted, to register it again after a restart.
    pub async fn register_service(
        &self,
        definition: ServiceDefinition,
        raw: Option<serde_json::Value>,
    ) -> Result<(), RegistrationError> {
        self.registry(RegistryRequest::RegisterService { definition, raw })
            .await
    }

    pub async fn deregister_service(&self, id: String) -> Result<(), RegistrationError> {
        self.registry(RegistryRequest::DeregisterService { id })
            .await
    }

    /// Registers (or replaces) a check from the API; `raw` as for
    /// [`AgentHandle::register_service`].
    pub async fn register_check(
        &self,
        definition: CheckDefinition,
        raw: Option<serde_json::Value>,
    ) -> Result<(), RegistrationError> {
        self.registry(RegistryRequest::RegisterCheck { definition, raw })
            .await
    }

    pub async fn deregister_check(&self, id: String) -> Result<(), RegistrationError> {
        self.registry(RegistryRequest::DeregisterCheck { id }).await
    }

    /// A TTL check reports its status; `output` replaces its output.
    pub async fn ttl_update(
        &self,
        id: String,
        status: CheckStatus,
        output: Option<String>,
    ) -> Result<(), RegistrationError> {
        self.registry(RegistryRequest::TtlUpdate { id, status, output })
            .await
    }

    /// Puts the whole node in maintenance (`Some(reason)`) or takes it out
    /// (`None`).
    pub async fn node_maintenance(&self, reason: Option<String>) -> Result<(), RegistrationError> {
        self.registry(RegistryRequest::NodeMaintenance { reason })
            .await
    }

    /// Puts one service in maintenance (`Some(reason)`) or takes it out.
    pub async fn service_maintenance(
        &self,
        id: String,
        reason: Option<String>,
    ) -> Result<(), RegistrationError> {
        self.registry(RegistryRequest::ServiceMaintenance { id, reason })
            .await
    }

    /// Writes to the KV store and answers once the write is durable on this
    /// agent's disk, then applied (and on its way to the cluster). `false`:
    /// a `cas` did not match, or a newer write to the key arrived while
    /// this one went to disk; either way it was not applied.
    pub async fn kv_write(&self, request: KvRequest) -> Result<bool, KvWriteError> {
        let permit = self
            .kv_writes
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AgentStopped)?;
        let ack = self
            .ask(|reply| Command::KvWrite { request, reply })
            .await??;
        let Some(durable) = ack.durable else {
            return Ok(ack.written);
        };
        // Settle in a task of its own: if the caller goes away (an HTTP
        // client hangs up), the write is still applied, or forgotten as
        // pending, once the disk has answered.
        let agent = self.clone();
        let entries = ack.entries;
        let settled = tokio::spawn(async move {
            let _permit = permit;
            let outcome = durable
                .await
                .unwrap_or_else(|_| Err(AgentStopped.to_string()));
            let durable = outcome.is_ok();
            let applied = agent
                .ask(|reply| Command::KvSettle {
                    entries,
                    durable,
                    reply,
                })
                .await;
            (outcome, applied)
        });
        let (outcome, applied) = settled.await.map_err(|_| AgentStopped)?;
        outcome.map_err(KvWriteError::NotDurable)?;
        match applied? {
            Ok(()) => Ok(ack.written),
            Err(KvError::Superseded) => Ok(false),
            Err(error) => Err(KvWriteError::Refused(error)),
        }
    }

    /// Replaces the config-sourced services and checks and the node tags;
    /// the tags change only if the services and checks were accepted.
    pub async fn reload(&self, live: LiveConfig) -> Result<(), LiveConfigError> {
        self.ask(|reply| Command::Reload { live, reply })
            .await?
            .map_err(LiveConfigError::Registry)
    }

    /// Fires a user event cluster-wide.
    pub async fn fire_event(&self, request: EventRequest) -> Result<UserEvent, FireEventError> {
        Ok(self
            .ask(|reply| Command::FireEvent { request, reply })
            .await??)
    }

    /// One step of an anti-entropy exchange, for the transport: the loop
    /// merges `message` (`Node::on_sync`) and answers with the next step,
    /// or `None` after the closing Records.
    pub async fn sync(
        &self,
        message: SyncMessage,
        ours: Option<OurPage>,
    ) -> Result<Option<SyncMessage>, AgentStopped> {
        self.ask(|reply| Command::Sync {
            message,
            ours,
            reply,
        })
        .await
    }

    /// Joins the cluster `addr` belongs to; returns once an exchange with
    /// it finished (or failed, saying why).
    pub async fn join(&self, addr: std::net::SocketAddr) -> Result<(), JoinError> {
        self.ask(|reply| Command::Join { addr, reply })
            .await?
            .map_err(JoinError::Unreachable)
    }

    /// Force-leaves the failed member `name` (with `prune`, forgets it
    /// everywhere now).
    pub async fn force_leave(
        &self,
        name: String,
        prune: bool,
    ) -> Result<ForceLeft, ForceLeaveFailed> {
        Ok(self
            .ask(|reply| Command::ForceLeave { name, prune, reply })
            .await??)
    }
}
