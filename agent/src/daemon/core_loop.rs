//! The core loop: the one task that owns the [`Node`] (foca and the
//! cluster state). Everything else asks it for changes through an
//! [`AgentHandle`](crate::handle::AgentHandle) and reads the snapshots it
//! publishes. It never waits on I/O: datagrams go out with
//! `try_send_to`, and TCP exchanges run in tasks of their own.
//!
//! It runs on a thread of its own (`shoal-gossip`, with the timer
//! scheduler and the UDP receive loop; see `daemon::spawn_gossip_thread`),
//! so no API request, filter, template or anti-entropy connection can delay
//! a probe ack. What it starts (check runners, anti-entropy exchanges, disk
//! writes) it starts on the agent's main runtime, `CoreLoop::work`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_protocol::{Changes, NameEvent, Node};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::anti_entropy::SyncService;
use super::index::IndexClock;
use super::registrar::Registrar;
use super::scheduler::ScheduledTimer;
use crate::checks::CheckResult;
use crate::core_counters::CoreCounters;
use crate::handle::{Answer, Command, LiveConfig};
use crate::persist::DataDirGuard;
use crate::registry::{Change, RegistryError};
use crate::snapshot::Snapshot;

/// The receiving ends the loop listens on.
pub(super) struct Inputs {
    /// Due timers with their deadlines.
    pub timers_rx: mpsc::Receiver<ScheduledTimer>,
    /// Datagrams with the time they were received.
    pub datagrams_rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    pub commands_rx: mpsc::Receiver<Command>,
    pub results_rx: mpsc::Receiver<CheckResult>,
}

/// How often counters and check details are republished ([`CoreCounters`]).
const STATS_INTERVAL: Duration = Duration::from_secs(2);
/// How often KV tombstones are collected.
const KV_HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);
/// How often TTLs and deregister-after deadlines are checked.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);
/// Upper bound on a graceful leave, whatever the timers say.
const LEAVE_DEADLINE: Duration = Duration::from_secs(5);

/// The loop's state: everything it owns.
pub(super) struct CoreLoop {
    pub node: Node,
    pub socket: Arc<UdpSocket>,
    pub schedule_tx: mpsc::UnboundedSender<ScheduledTimer>,
    pub snapshot_tx: watch::Sender<Arc<Snapshot>>,
    pub status_tx: watch::Sender<Arc<CoreCounters>>,
    pub sync: SyncService,
    pub data_dir: Arc<DataDirGuard>,
    /// Datagrams the receive task dropped because the loop was behind.
    pub receive_drops: Arc<AtomicU64>,
    pub send_failures: u64,
    /// `X-Consul-Index`.
    pub index: IndexClock,
    /// Suspicions change no record: watched so that `shoal members` and
    /// the log show them.
    pub suspects: SuspectWatch,
    /// Services and checks registered on this agent.
    pub registrar: Registrar,
    /// The KV store's clock and disk.
    pub kv: crate::kv::KvState,
    /// Test-only: peers whose traffic is dropped.
    pub faults: Arc<crate::fault::FaultInjection>,
    /// Set when another live agent holds our node name: the loop leaves,
    /// and the agent exits with it.
    pub name_taken: Option<NameTaken>,
    /// Recent user events for this agent (filters evaluated here).
    pub events: crate::events::RecentEvents,
    pub event_counters: Arc<crate::events::EventCounters>,
    /// The agent's main runtime. The loop enters it while it handles an
    /// input, so that the tasks it spawns (check runners, anti-entropy
    /// exchanges, `spawn_blocking` writes) run there, not on its thread.
    pub work: tokio::runtime::Handle,
    /// systemd's watchdog is fed from this loop, not from a task of its
    /// own: a wedged loop stops the pings (see `daemon::systemd`).
    pub systemd: Arc<super::systemd::Notifier>,
    /// Members' coordinates as last taken (see `refresh_coordinates`).
    pub coordinates: Arc<crate::coordinates::NodeCoordinates>,
}

/// The suspect members as last published ([`Node::suspects_fingerprint`]),
/// compared on every housekeeping tick.
#[derive(Default)]
pub(super) struct SuspectWatch {
    fingerprint: u64,
    moved: bool,
}

/// Another live agent holds this agent's node name, so it did not join:
/// its record would have hidden the other agent's services.
#[derive(Debug, thiserror::Error)]
#[error(
    "node name `{name}` is already held by the live agent at {holder}, so this agent did not join the cluster; give it another name (--node or node_name), or stop the other agent first"
)]
pub struct NameTaken {
    pub name: String,
    pub holder: SocketAddr,
}

impl CoreLoop {
    /// Runs until the node has left the cluster after `shutdown`, or
    /// because its name is taken (the error).
    pub async fn run(
        mut self,
        inputs: Inputs,
        shutdown: CancellationToken,
    ) -> Result<(), NameTaken> {
        self.run_until_left(inputs, shutdown).await;
        match self.name_taken.take() {
            Some(taken) => Err(taken),
            None => Ok(()),
        }
    }

    async fn run_until_left(&mut self, mut inputs: Inputs, shutdown: CancellationToken) {
        self.set_clock();
        self.node.start();
        {
            let work = self.work.clone();
            let _work = work.enter();
            self.push_registry(Change::Status);
        }
        self.flush();
        let mut stats = tokio::time::interval(STATS_INTERVAL);
        stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut kv_housekeeping = tokio::time::interval(KV_HOUSEKEEPING_INTERVAL);
        kv_housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watchdog = self.systemd.watchdog_timer();
        let mut leave_deadline: Option<Instant> = None;
        // Entered only around synchronous work: timers and sockets created
        // while it is entered would belong to the main runtime.
        let work = self.work.clone();
        loop {
            // Datagrams, timers and exchanges are judged against the time
            // they are handled at (the bounds on peers' times, the age of
            // tombstones): set it before every call into the node.
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if leave_deadline.is_none() => {
                    self.set_clock();
                    tracing::info!("leaving the cluster");
                    self.node.begin_leave();
                    leave_deadline = Some(Instant::now() + LEAVE_DEADLINE);
                }
                _ = tokio::time::sleep_until(leave_deadline.unwrap_or_else(Instant::now)), if leave_deadline.is_some() => {
                    tracing::warn!("graceful leave did not finish in time; stopping anyway");
                    return;
                }
                _ = super::systemd::watchdog_tick(&mut watchdog) => self.systemd.ping_watchdog(),
                Some((deadline, timer)) = inputs.timers_rx.recv() => {
                    self.set_clock();
                    self.note_lag(deadline);
                    self.node.handle_timer(timer);
                }
                Some((received, packet)) = inputs.datagrams_rx.recv() => {
                    self.set_clock();
                    self.note_lag(received);
                    if let Err(error) = self.node.handle_datagram(&packet) {
                        tracing::debug!(%error, "dropped a datagram");
                    }
                }
                Some(command) = inputs.commands_rx.recv() => {
                    let _work = work.enter();
                    self.set_clock();
                    let answer = self.handle_command(command);
                    // Readers (on other threads) see what the command
                    // changed before its caller hears back.
                    self.flush();
                    self.registrar.answer(answer);
                }
                Some(result) = inputs.results_rx.recv() => {
                    let _work = work.enter();
                    self.set_clock();
                    let change = self.registrar.apply_result(result);
                    self.push_registry(change);
                }
                _ = housekeeping.tick() => {
                    let _work = work.enter();
                    self.set_clock();
                    let change = self.registrar.housekeeping();
                    self.push_registry(change);
                    let fingerprint = self.node.suspects_fingerprint();
                    if fingerprint != self.suspects.fingerprint {
                        self.suspects = SuspectWatch { fingerprint, moved: true };
                    }
                }
                _ = kv_housekeeping.tick() => {
                    let _work = work.enter();
                    self.set_clock();
                    self.kv.housekeeping(&mut self.node);
                }
                _ = stats.tick() => {
                    self.refresh_coordinates();
                    self.publish_status();
                }
            }
            self.flush();
            self.faults.stall_if_asked();
            if self.name_taken.is_some() && leave_deadline.is_none() {
                // Never offered our record: leaving only tells the members
                // that our address is gone.
                self.node.begin_leave();
                leave_deadline = Some(Instant::now() + LEAVE_DEADLINE);
                self.flush();
            }
            if self.node.has_left() {
                tracing::info!("left the cluster");
                return;
            }
        }
    }

    fn set_clock(&mut self) {
        self.node.set_clock(crate::kv::wall_clock());
    }

    /// Tells local health how late the loop got to an event due at `due`
    /// (a timer's deadline, a datagram's arrival), as the simulator does: a
    /// loop that falls behind makes this node slower to accuse others.
    fn note_lag(&mut self, due: Instant) {
        let lag = Instant::now().saturating_duration_since(due);
        if !lag.is_zero() {
            self.node.note_lag(lag);
        }
    }

    /// Carries out a command; its answer is given once what it changed is
    /// published (see [`Answer`]).
    fn handle_command(&mut self, command: Command) -> Answer {
        match command {
            // Our page comes built (off the loop, by the sync task); the
            // loop merges the peer's page and records, bounded by the page
            // size (2 MiB).
            Command::Sync {
                message,
                ours,
                reply,
            } => Answer::send(reply, self.node.on_sync_with(message, ours)),
            Command::KvWrite { request, reply } => {
                Answer::send(reply, self.kv.handle(&mut self.node, request))
            }
            Command::KvSettle {
                entries,
                durable,
                reply,
            } => Answer::send(reply, self.kv.settle(&mut self.node, entries, durable)),
            Command::Registry { request, reply } => {
                let (change, answer) = self.registrar.handle(request, reply);
                self.push_registry(change);
                answer
            }
            Command::Reload { live, reply } => Answer::send(reply, self.apply_reload(live)),
            Command::FireEvent { request, reply } => {
                let fired = self.node.fire_event(request);
                if fired.is_ok() {
                    self.event_counters.fired.fetch_add(1, Ordering::Relaxed);
                }
                Answer::send(reply, fired)
            }
            Command::Join { addr, reply } => {
                // The exchange answers the caller when it ends; the loop
                // does not wait for it.
                self.node.announce_to(addr);
                self.sync.join(addr, self.node.sync_open(), reply);
                Answer::Send(Box::new(|| {}))
            }
            Command::ForceLeave { name, prune, reply } => {
                let done = self.node.force_leave(&name, prune);
                match &done {
                    Ok(done) => {
                        tracing::info!(member = %name, prune, ?done, "force-leave of member `{name}`: {done:?}")
                    }
                    Err(error) => {
                        tracing::info!(member = %name, prune, %error, "force-leave refused")
                    }
                }
                Answer::send(reply, done)
            }
        }
    }

    /// Applies a reloaded configuration; tags change only if the services
    /// and checks were accepted.
    fn apply_reload(&mut self, live: LiveConfig) -> Result<(), RegistryError> {
        let loaded = self.registrar.load_config(live.services, live.checks);
        self.push_registry(Change::Status);
        loaded?;
        // The node ID and the wire versions ride in the tags; a reload
        // keeps them.
        let mut tags = live.tags;
        for reserved in shoal_protocol::record::RESERVED_TAGS {
            if let Some(value) = self.node.local_record().tags.get(reserved) {
                tags.insert(reserved.into(), value.clone());
            }
        }
        if self.node.local_record().tags != tags {
            self.node.update_local(|record| record.tags = tags);
        }
        Ok(())
    }

    /// Copies the registry into our node record: a status change gets a new
    /// version and is gossiped; output alone rides along quietly.
    fn push_registry(&mut self, change: Change) {
        if change == Change::None {
            return;
        }
        let (services, checks) = self.registrar.records();
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
        let work = self.work.clone();
        let _work = work.enter();
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
        for event in self.node.take_name_events() {
            self.on_name_event(event);
        }
        let delivered = self.node.take_user_events();
        let events = !delivered.is_empty()
            && self
                .events
                .take(delivered, &self.node.local_record(), &self.event_counters);
        let mut changes = self.node.take_changes();
        changes.cluster |= std::mem::take(&mut self.suspects.moved);
        if changes.any() || events {
            if let Some(ceiling) = self.index.advance(self.node.kv_index()) {
                let data_dir = self.data_dir.clone();
                tokio::task::spawn_blocking(move || {
                    if let Err(error) = data_dir.store_index_ceiling(ceiling) {
                        tracing::error!(%error, "could not persist the index ceiling");
                    }
                });
            }
            self.publish(changes, events);
        }
    }

    /// Logs what happened to our node name; a taken name stops the agent.
    fn on_name_event(&mut self, event: NameEvent) {
        let name = self.node.local_record().name;
        match event {
            NameEvent::Taken { holder } => {
                let taken = NameTaken {
                    name,
                    holder: holder.addr,
                };
                tracing::error!(holder = %holder, "{taken}");
                self.name_taken = Some(taken);
            }
            NameEvent::Conflict { rival } => tracing::error!(
                rival = %rival,
                "node name `{name}` is also claimed by the live agent at {}: the catalog shows only one of the two agents' services; rename one of them (--node or node_name)",
                rival.addr
            ),
            NameEvent::Resolved { rival } => tracing::info!(
                rival = %rival,
                "the other agent that claimed node name `{name}` is gone"
            ),
        }
    }

    fn start_sync(&mut self, peer: SocketAddr) {
        if !self.sync.initiate(peer, self.node.sync_open()) {
            tracing::debug!(%peer, "anti-entropy skipped: too many exchanges running");
        }
    }

    /// Publishes a snapshot with what changed, reusing the rest of the
    /// previous one (the membership is not copied again for a KV write),
    /// and the status with it.
    fn publish(&mut self, changes: Changes, events: bool) {
        let index = self.index.current();
        let previous = self.snapshot_tx.borrow().clone();
        let cluster = changes.cluster || !previous.checks_loaded;
        let snapshot = Snapshot {
            index,
            cluster_index: if cluster {
                index
            } else {
                previous.cluster_index
            },
            kv_index: if changes.kv { index } else { previous.kv_index },
            local: if cluster {
                self.node.local_record()
            } else {
                previous.local.clone()
            },
            members: if cluster {
                Arc::new(self.node.members())
            } else {
                previous.members.clone()
            },
            kv: if changes.kv {
                self.node.kv()
            } else {
                previous.kv.clone()
            },
            checks_loaded: true,
            name_rival: self.node.name_rival(),
            events: if events {
                self.events.list()
            } else {
                previous.events.clone()
            },
            event_index: if events { index } else { previous.event_index },
        };
        self.snapshot_tx.send_replace(Arc::new(snapshot));
        self.publish_status();
    }

    /// Takes the members' coordinates (they move with every probe, so
    /// only on the stats timer: O(members) every couple of seconds).
    fn refresh_coordinates(&mut self) {
        self.coordinates = std::sync::Arc::new(crate::coordinates::NodeCoordinates::new(
            self.node.local_record().name,
            self.node.coordinates(),
        ));
    }

    /// Publishes counters and check details; wakes no blocking query.
    fn publish_status(&self) {
        self.event_counters.copy_from(self.node.event_counters());
        let status = CoreCounters {
            counters: self.node.counters().clone(),
            name_conflicts: self.node.name_conflicts(),
            send_failures: self.send_failures,
            receive_drops: self.receive_drops.load(Ordering::Relaxed),
            local_checks: self.registrar.check_details(),
            health_score: self.node.local_health().score(),
            health: self.node.local_health().stats().clone(),
            suspicion: self.node.suspicion_stats().clone(),
            coordinates: self.coordinates.clone(),
            vivaldi: self.node.coordinate_stats().clone(),
        };
        self.status_tx.send_replace(Arc::new(status));
    }
}
