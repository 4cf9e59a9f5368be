//! `shoal agent`: binds the sockets, starts the tasks, and runs until
//! shutdown.
//!
//! Two runtimes, one thread each (three with DNS): the core loop, its
//! timer scheduler and its UDP receive loop run on the `shoal-gossip`
//! thread (`spawn_core_thread`); everything else (HTTP, filters,
//! templates, watches, reload, check runners, anti-entropy connections,
//! disk writes) runs on the main one. They meet only through channels, so
//! however heavy the API's work, the loop answers probes on time.
//!
//! - [`core_loop`]: the core loop, the one task that owns the node (foca,
//!   cluster state, timers) and answers [`crate::handle::AgentHandle`].
//! - [`scheduler`]: delivers timers in order.
//! - [`anti_entropy`]: TCP anti-entropy exchanges;
//!   [`anti_entropy_counters`]: what they count.
//! - [`rate`]: the per-peer rate limit on exchanges accepted.
//! - [`forward`]: the WAN listener's side of reads forwarded between
//!   datacenters.
//! - [`index`]: `X-Consul-Index`, monotonic across restarts.
//! - [`registrar`]: the loop's side of the registry: check runners and
//!   persistence of API registrations.
//! - [`reload`]: config hot reload (file watch, SIGHUP, `PUT /v1/agent/reload`).
//! - [`systemd`]: readiness, status and watchdog over `sd_notify`.
//! - [`wan`]: a WAN member's second pool, which joins datacenters.

pub mod anti_entropy;
pub mod anti_entropy_counters;
pub mod core_loop;
pub mod forward;
pub mod index;
pub mod rate;
pub mod registrar;
pub mod reload;
pub mod scheduler;
pub mod systemd;
pub mod wan;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use shoal_protocol::codec::MAX_DATAGRAM;
use shoal_protocol::envelope::{Envelope, cluster_id};
use shoal_protocol::keyring::Keyring;
use shoal_protocol::{Node, NodeId, NodeRecord};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::checks::CheckResult;
use crate::config::AgentConfig;
use crate::fault::FaultInjection;
use crate::kv::KvState;
use crate::persist::DataDirGuard;
use crate::snapshot::Snapshot;
use anti_entropy::SyncService;
use core_loop::{CoreLoop, Inputs};
use registrar::Registrar;
use scheduler::ScheduledTimer;

/// Datagrams queued for the core loop before the receiver drops them.
const DATAGRAM_QUEUE: usize = 1024;
/// Timers due and queued for the core loop.
const TIMER_QUEUE: usize = 1024;
/// Check results queued for the core loop.
const RESULT_QUEUE: usize = 256;
/// How long background tasks get to stop once the agent has left.
const TASKS_GRACE: Duration = Duration::from_secs(3);

/// The sockets the agent serves on, bound before anything else starts so
/// that a busy port is reported at once.
pub struct Listeners {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    pub http: TcpListener,
    /// The WAN pool's, when this agent is a WAN member.
    pub wan: Option<(UdpSocket, TcpListener)>,
    /// `None`: DNS is off (or its default address was taken).
    pub dns: Option<crate::dns::server::DnsListeners>,
}

impl Listeners {
    pub async fn bind(config: &AgentConfig) -> anyhow::Result<Self> {
        let udp = UdpSocket::bind(config.bind).await.with_context(|| {
            format!(
                "cannot bind the gossip UDP socket to {} (config key `bind`)",
                config.bind
            )
        })?;
        let tcp = TcpListener::bind(config.bind).await.with_context(|| {
            format!(
                "cannot bind the gossip TCP listener to {} (config key `bind`)",
                config.bind
            )
        })?;
        let http = TcpListener::bind(config.http_addr).await.with_context(|| {
            format!(
                "cannot bind the HTTP API to {} (config key `http_addr`)",
                config.http_addr
            )
        })?;
        let dns = crate::dns::server::DnsListeners::bind(&config.dns)?;
        let wan = match &config.wan {
            Some(wan) => Some(wan::bind(wan).await?),
            None => None,
        };
        Ok(Self {
            udp,
            tcp,
            http,
            wan,
            dns,
        })
    }
}

/// Runs the agent until `shutdown` is cancelled (SIGTERM, SIGINT or
/// `PUT /v1/agent/leave`), then leaves the cluster gracefully and returns.
/// `reload` is how it loads its configuration again (file changes, SIGHUP,
/// `PUT /v1/agent/reload`); `systemd` tells the service manager how it is
/// doing (inert when not started by systemd).
pub async fn run(
    config: AgentConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
    reload: reload::ReloadSetup,
    systemd: systemd::Notifier,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let systemd = Arc::new(systemd);
    let tasks = Tasks::default();
    // Not tracked: it ends on its own within seconds.
    tokio::spawn(crate::resident::trim_heap_after_start_up());
    let faults = Arc::new(FaultInjection::new(config.fault_injection));
    let core = Core::build(
        &config,
        (listeners.udp, listeners.tcp),
        None,
        None,
        faults.clone(),
        systemd.clone(),
        &tasks,
    )?;
    let forward_server = Arc::new(forward::ForwardServer::new(
        config.datacenter.clone(),
        config.http_addr,
    ));
    let wan = match listeners.wan {
        Some(sockets) => Some(wan::start(
            &config,
            sockets,
            &core,
            forward_server.clone(),
            faults.clone(),
            &tasks,
            shutdown.clone(),
        )?),
        None => None,
    };
    let forwarder = Arc::new(forwarder(&config, &core, wan.as_ref(), faults.clone()));
    let agent = core.agent.clone();
    let snapshot_rx = core.snapshot_rx.clone();
    let status_rx = core.status_rx.clone();
    let templates = crate::template::Templates::spawn(
        config.templates.clone(),
        snapshot_rx.clone(),
        &tasks.tracker,
        tasks.stop.clone(),
    );
    let watch_counters = Arc::new(crate::watches::WatchCounters::default());
    let watches = crate::watches::Watches::spawn(
        config.watches.clone(),
        snapshot_rx.clone(),
        watch_counters.clone(),
        &tasks.tracker,
        tasks.stop.clone(),
    );
    let reload = reload::spawn(
        reload,
        config.clone(),
        agent.clone(),
        reload::ConfiguredRunners {
            templates: templates.clone(),
            watches,
        },
        systemd.clone(),
        &tasks.tracker,
        tasks.stop.clone(),
    );
    let left = CancellationToken::new();
    crate::logging::cluster::spawn(
        crate::logging::cluster::ClusterLog {
            seeds: config.join.clone(),
            local: config.advertise,
            envelope: core.envelope.clone(),
        },
        snapshot_rx.clone(),
        status_rx.clone(),
        &tasks.tracker,
        tasks.stop.clone(),
        tracing::Span::none(),
    );
    let dns_counters = Arc::new(crate::dns::DnsCounters::default());
    let dns_addr = serve_dns(
        listeners.dns,
        dns_responder(
            &config,
            (snapshot_rx.clone(), status_rx.clone()),
            dns_counters.clone(),
            Some(forwarder.clone()),
        ),
        &tasks,
    )?;
    if systemd.is_active() {
        tasks.spawn(systemd::notify_loop(
            systemd.clone(),
            systemd::NotifyInputs {
                snapshot_rx: snapshot_rx.clone(),
                status_rx: status_rx.clone(),
                seeds: config
                    .join
                    .iter()
                    .copied()
                    .filter(|seed| *seed != config.advertise && *seed != config.bind)
                    .collect(),
                join_ready_timeout: config.join_ready_timeout,
                shutdown: shutdown.clone(),
                stop: tasks.stop.clone(),
            },
        ));
    }
    // The API's own counters, and every source of counters in the order
    // `/metrics` shows them.
    let blocking = Arc::new(api::blocking::BlockingCounters::default());
    let cache = Arc::new(api::cache::ResponseCache::default());
    let requests = Arc::new(api::request_counters::RequestCounters::default());
    let http = Arc::new(api::server::HttpCounters::default());
    let templates = templates.stats();
    let event_counters = core.loop_.event_counters.clone();
    let mut metrics = crate::metrics::Registry::default();
    metrics
        .add(core.loop_.sync.counters())
        .add(core.loop_.kv.counters.clone())
        .add(core.loop_.kv.quarantine.clone())
        .add(core.loop_.registrar.counters.clone())
        .add(requests.clone())
        .add(http.clone())
        .add(cache.clone())
        .add(blocking.clone())
        .add(templates.clone())
        .add(watch_counters.clone())
        .add(event_counters.clone())
        .add(dns_counters.clone())
        .add(forwarder.counters.clone())
        .add(Arc::new(crate::process::ProcessCounters));
    let kv_quarantine = core.loop_.kv.quarantine.clone();
    let http_addr = serve_api(
        listeners.http,
        api::ApiState {
            config: config.clone(),
            reload,
            snapshot_rx,
            status_rx,
            blocking,
            shutdown: shutdown.clone(),
            left: left.clone(),
            agent,
            faults,
            keyring: core.keyring.clone(),
            templates,
            events: event_counters,
            watches: watch_counters,
            metrics: Arc::new(metrics),
            requests,
            http,
            dns: dns_counters,
            cache,
            kv_quarantine,
            wan: wan.as_ref().map(|wan| wan.view.clone()),
            forwarder: forwarder.clone(),
        },
        &forward_server,
        forwarder,
        &tasks,
    )?;

    tracing::info!(
        node = %config.node_name,
        id = %core.loop_.node.local_record().id,
        bind = %config.bind,
        http = %http_addr,
        dns = %dns_addr.map_or("off".to_string(), |addr| addr.to_string()),
        wan = %config.wan.as_ref().map_or("off".to_string(), |wan| wan.bind.to_string()),
        cluster = %config.cluster,
        seeds = ?config.join,
        "shoal agent running"
    );
    let outcome = core
        .spawn("shoal-gossip", shutdown.clone(), tracing::Span::none())?
        .await
        .context("the gossip thread stopped unexpectedly")?;
    if let Some(wan) = wan {
        // The LAN pool is left (on the signal, or because our name is
        // taken there): the WAN pool is left too.
        shutdown.cancel();
        if let Ok(Err(taken)) = wan.done.await {
            tracing::error!("WAN pool: {taken}");
        }
    }

    left.cancel();
    tasks.stop().await;
    Ok(outcome?)
}

/// One gossip pool's core, built and ready to run: the LAN pool's, and
/// a WAN member's second one (see [`wan`]). Everything a reader needs from
/// it is here; the loop itself starts with [`Core::spawn`].
struct Core {
    loop_: CoreLoop,
    inputs: Inputs,
    runtime: CoreRuntime,
    agent: crate::handle::AgentHandle,
    snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    status_rx: watch::Receiver<Arc<crate::core_counters::CoreCounters>>,
    envelope: Envelope,
    keyring: Keyring,
}

impl Core {
    /// Opens `config`'s data dir and KV store, builds the node (sealing
    /// with `keyring` when given, else with the configured key), starts
    /// the timer scheduler, the check runners' registry and the transport
    /// on `sockets`, and wires the loop that will own them.
    fn build(
        config: &AgentConfig,
        sockets: (UdpSocket, TcpListener),
        keyring: Option<Keyring>,
        forward: Option<Arc<forward::ForwardServer>>,
        faults: Arc<FaultInjection>,
        systemd: Arc<systemd::Notifier>,
        tasks: &Tasks,
    ) -> anyhow::Result<Self> {
        let data_dir = Arc::new(DataDirGuard::open(&config.data_dir)?);
        let Identity {
            mut node,
            envelope,
            keyring,
        } = identity(config, &data_dir, keyring)?;
        let (agent, commands_rx) = crate::handle::channel();
        let index = start_index(&data_dir, &mut node)?;
        // The WAN pool's store never holds anything (its `kv_max_bytes` is
        // 0): with a keyring of its own, no entry a peer sends could
        // change the keys the pools share.
        let kv_keyring = if forward.is_some() {
            Keyring::default()
        } else {
            keyring.clone()
        };
        let kv = open_kv(config, &data_dir, &mut node, kv_keyring, tasks)?;
        let (snapshot_tx, snapshot_rx) =
            watch::channel(Arc::new(first_snapshot(&node, index.current())));
        let (status_tx, status_rx) = watch::channel(Arc::default());
        let runtime = CoreRuntime::new()?;
        let (schedule_tx, timers_rx) = spawn_scheduler(&runtime, tasks);
        let (registrar, results_rx) =
            spawn_registry(config, &data_dir, snapshot_rx.clone(), tasks)?;
        let (udp, tcp) = sockets;
        // Outgoing exchanges leave from the address we are bound to.
        let sync = SyncService::new(
            envelope.clone(),
            agent.clone(),
            snapshot_rx.clone(),
            tcp.local_addr().ok().map(|addr| addr.ip()),
            tasks.tracker.clone(),
            faults.clone(),
        );
        let sync = match forward {
            Some(server) => sync.with_forward(server),
            None => sync,
        };
        let transport = spawn_transport(&runtime, udp, tcp, sync, faults.clone(), tasks)?;
        let loop_ = CoreLoop {
            node,
            socket: transport.socket,
            schedule_tx,
            snapshot_tx,
            status_tx,
            sync: transport.sync,
            data_dir,
            receive_drops: transport.receive_drops,
            send_failures: 0,
            index,
            suspects: Default::default(),
            registrar,
            kv,
            faults,
            name_taken: None,
            events: Default::default(),
            event_counters: Arc::default(),
            work: tokio::runtime::Handle::current(),
            systemd,
            coordinates: Default::default(),
        };
        let inputs = Inputs {
            timers_rx,
            datagrams_rx: transport.datagrams_rx,
            commands_rx,
            results_rx,
        };
        Ok(Self {
            loop_,
            inputs,
            runtime,
            agent,
            snapshot_rx,
            status_rx,
            envelope,
            keyring,
        })
    }

    /// Runs the loop on a thread of its own named `thread`, its lines
    /// logged in `span`; the answer comes when it has left the pool.
    fn spawn(
        self,
        thread: &str,
        shutdown: CancellationToken,
        span: tracing::Span,
    ) -> anyhow::Result<tokio::sync::oneshot::Receiver<Result<(), core_loop::NameTaken>>> {
        spawn_core_thread(
            thread,
            self.runtime,
            self.loop_,
            self.inputs,
            shutdown,
            span,
        )
    }
}

/// The agent's background tasks: one token stops them all, and the tracker
/// lets shutdown wait for them.
#[derive(Default)]
struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Stops every task and waits (a little) for them to finish.
    async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(TASKS_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within {TASKS_GRACE:?}");
        }
    }
}

/// Who this agent is in the cluster, and how its traffic is sealed.
struct Identity {
    node: Node,
    envelope: Envelope,
    keyring: Keyring,
}

/// Takes the next generation from the data dir (a restarted agent is a new
/// member of the cluster) and builds the node with its record and keys:
/// `keyring` when given (the WAN pool shares the LAN's), else one with
/// the configured key.
fn identity(
    config: &AgentConfig,
    data_dir: &DataDirGuard,
    keyring: Option<Keyring>,
) -> anyhow::Result<Identity> {
    let now_millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default();
    let previous_generation = data_dir.last_generation()?;
    let generation = data_dir.next_generation(now_millis)?;
    let drift = u64::try_from(config.gossip.max_clock_drift.as_millis()).unwrap_or(u64::MAX);
    if generation > now_millis.saturating_add(drift) {
        tracing::error!(
            generation,
            now_millis,
            "the persisted generation is ahead of the clock by more than max_clock_drift \
             (did the clock go back?): peers refuse this agent's record until the clock catches up"
        );
    }
    let id = NodeId {
        addr: config.advertise,
        generation,
    };
    let mut record = NodeRecord::new(id, config.node_name.clone());
    record.datacenter = config.datacenter.clone();
    record.tags = config.tags.clone();
    record.tags.insert(
        shoal_protocol::record::NODE_ID_TAG.into(),
        data_dir.node_id()?,
    );
    if let Some(wan) = &config.wan {
        // LAN agents forward what is for other datacenters to a WAN member.
        record.tags.insert(
            shoal_protocol::record::WAN_TAG.into(),
            wan.advertise.to_string(),
        );
    }

    let keyring = keyring.unwrap_or_else(|| match config.encrypt {
        Some(key) => Keyring::with_primary(key),
        None => Keyring::default(),
    });
    let envelope = Envelope::with_keyring(cluster_id(&config.cluster), keyring.clone())
        .with_range(wire::local_range());
    let mut node = Node::new(
        record,
        config.gossip.clone(),
        envelope.clone(),
        // From the OS: it also seeds the nonces of sealed datagrams.
        rand::random(),
    );
    if let Some(previous) = previous_generation {
        // Our record from before a restart at another address is ours, not
        // another agent's holding our name.
        node.set_previous_generation(previous);
    }
    Ok(Identity {
        node,
        envelope,
        keyring,
    })
}

/// The first `X-Consul-Index` of this start (see [`index`]): above every
/// index of earlier starts. Its ceiling is on disk before anyone sees it,
/// and the (still empty) KV store counts on from it.
fn start_index(data_dir: &DataDirGuard, node: &mut Node) -> anyhow::Result<index::IndexClock> {
    let clock = index::IndexClock::start_now(data_dir.index_ceiling()?);
    data_dir.store_index_ceiling(clock.ceiling())?;
    node.with_kv(|kv| kv.raise_index(clock.current()));
    Ok(clock)
}

/// What readers see before the loop publishes: ourselves alone, nothing
/// loaded yet.
fn first_snapshot(node: &Node, index: u64) -> Snapshot {
    Snapshot {
        index,
        cluster_index: index,
        kv_index: index,
        local: node.local_record(),
        members: Arc::new(node.members()),
        // The store loaded from disk: the API answers from this snapshot
        // until the core loop first publishes, and a key it holds must not
        // read as absent meanwhile.
        kv: node.kv(),
        checks_loaded: false,
        name_rival: None,
        events: Default::default(),
        event_index: index,
    }
}

/// Runs the core loop on a thread of its own, on `runtime` (where the
/// scheduler and the receive loop already wait); the answer comes when
/// it has left the cluster. Dropping the runtime then ends its other tasks.
fn spawn_core_thread(
    thread: &str,
    mut runtime: CoreRuntime,
    core: CoreLoop,
    inputs: Inputs,
    shutdown: CancellationToken,
    span: tracing::Span,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<Result<(), core_loop::NameTaken>>> {
    use tracing::Instrument;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let runtime = runtime.0.take().expect("the gossip runtime is taken once");
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let outcome = runtime.block_on(core.run(inputs, shutdown).instrument(span));
            let _ = done_tx.send(outcome);
        })
        .with_context(|| format!("cannot start the {thread} thread"))?;
    Ok(done_rx)
}

/// The gossip thread's runtime, until the thread takes it. Dropped before
/// (the agent failed to start), it shuts down without waiting: a runtime
/// dropped inside another one's async context must.
struct CoreRuntime(Option<tokio::runtime::Runtime>);

impl CoreRuntime {
    fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the gossip runtime")?;
        Ok(Self(Some(runtime)))
    }
}

impl std::ops::Deref for CoreRuntime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("the gossip runtime is still here")
    }
}

impl Drop for CoreRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Starts the timer scheduler on the gossip runtime: the loop submits
/// `(deadline, timer)` on the first channel and receives due timers, with
/// their deadlines, on the second.
fn spawn_scheduler(
    core_runtime: &CoreRuntime,
    tasks: &Tasks,
) -> (
    mpsc::UnboundedSender<ScheduledTimer>,
    mpsc::Receiver<ScheduledTimer>,
) {
    let (schedule_tx, schedule_rx) = mpsc::unbounded_channel();
    let (timers_tx, timers_rx) = mpsc::channel(TIMER_QUEUE);
    core_runtime.spawn(scheduler::scheduler_loop(
        schedule_rx,
        timers_tx,
        tasks.stop.clone(),
    ));
    (schedule_tx, timers_rx)
}

/// The registry with the API registrations saved in the data dir and the
/// configured services and checks, its persistence task, and the channel
/// its check runners report on. Dependency checks count passing instances
/// in the latest snapshot.
fn spawn_registry(
    config: &AgentConfig,
    data_dir: &Arc<DataDirGuard>,
    snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    tasks: &Tasks,
) -> anyhow::Result<(Registrar, mpsc::Receiver<CheckResult>)> {
    let (persist_tx, persist_rx) = mpsc::unbounded_channel();
    tasks.spawn(registrar::persist_loop(persist_rx, data_dir.clone()));
    let (results_tx, results_rx) = mpsc::channel(RESULT_QUEUE);
    let dependency: crate::checks::DependencyLookup = Arc::new(move |service: &str| {
        crate::catalog::count_passing(&snapshot_rx.borrow().members, service)
    });
    let mut registrar =
        Registrar::new(results_tx, dependency, tasks.stop.child_token(), persist_tx);
    if let Some(saved) = registrar::read_saved(data_dir) {
        registrar.restore(&saved, config.enable_script_checks);
    }
    registrar
        .load_config(config.services.clone(), config.checks.clone())
        .context("loading the configured services and checks")?;
    Ok((registrar, results_rx))
}

/// Opens the KV database, starts its writer task, and loads what it holds
/// into `node`.
fn open_kv(
    config: &AgentConfig,
    data_dir: &DataDirGuard,
    node: &mut Node,
    keyring: Keyring,
    tasks: &Tasks,
) -> anyhow::Result<KvState> {
    let (database, loaded) = crate::kv::disk::open(data_dir.path())?;
    let (disk_tx, disk_rx) = mpsc::channel(crate::kv::disk::QUEUE);
    let mut kv = KvState::new(
        keyring.clone(),
        config.node_name.clone(),
        disk_tx,
        config.kv_tombstone_grace,
        config.gossip.max_clock_drift,
    );
    tasks.spawn(crate::kv::disk::writer_loop(
        database,
        data_dir.path().join(crate::kv::disk::FILE),
        disk_rx,
        kv.counters.clone(),
    ));
    kv.restore(node, loaded);
    if crate::kv::keyring_origin(config.encrypt.as_ref(), &keyring, &node.kv())
        .overrides_configured_key
    {
        // A keyring operation wrote it; it stays in force until the next
        // one, whatever `encrypt` says (shown in /v1/agent/self too).
        tracing::warn!(
            "the gossip keyring stored in the KV (_shoal/keyring) overrides the configured encrypt key, which is not its primary key; change keys with `shoal keyring`"
        );
    }
    Ok(kv)
}

/// The gossip transport as the loop sees it.
struct Transport {
    /// Datagrams go out on it straight from the loop (`try_send_to`).
    socket: Arc<UdpSocket>,
    /// Datagrams received, with the time they arrived.
    datagrams_rx: mpsc::Receiver<(Instant, Vec<u8>)>,
    /// Datagrams the receive task dropped because the loop was behind.
    receive_drops: Arc<AtomicU64>,
    /// Starts anti-entropy exchanges.
    sync: SyncService,
}

/// Starts receiving datagrams on `udp` (on the gossip runtime, which the
/// socket moves to) and serving anti-entropy exchanges on `tcp` (on this
/// one).
fn spawn_transport(
    core_runtime: &CoreRuntime,
    udp: UdpSocket,
    tcp: TcpListener,
    sync: SyncService,
    faults: Arc<FaultInjection>,
    tasks: &Tasks,
) -> anyhow::Result<Transport> {
    // Registered with the gossip runtime's reactor: readiness must not
    // wait for the main thread to be free.
    let udp = udp.into_std().context("moving the gossip socket")?;
    let socket = {
        let _gossip = core_runtime.enter();
        Arc::new(UdpSocket::from_std(udp).context("moving the gossip socket")?)
    };
    let receive_drops = Arc::new(AtomicU64::new(0));
    let (datagrams_tx, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
    core_runtime.spawn(receive_loop(
        socket.clone(),
        wire::RefusalLog::new(wire::local_range()),
        faults.clone(),
        datagrams_tx,
        receive_drops.clone(),
        tasks.stop.clone(),
    ));
    tasks.spawn(sync.clone().serve(tcp, tasks.stop.clone()));
    Ok(Transport {
        socket,
        datagrams_rx,
        receive_drops,
        sync,
    })
}

/// Serves the HTTP API on `listener`, and (on a WAN member) to the reads
/// other agents forward here; returns the address it serves on.
fn serve_api(
    listener: TcpListener,
    state: api::ApiState,
    forward_server: &forward::ForwardServer,
    forwarder: Arc<crate::wan::Forwarder>,
    tasks: &Tasks,
) -> anyhow::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let counters = state.http.clone();
    // Forwarded DNS questions are answered as ours are, counted apart
    // from the DNS interface's own.
    let dns = dns_responder(
        &state.config,
        (state.snapshot_rx.clone(), state.status_rx.clone()),
        Arc::default(),
        None,
    );
    let api = api::router(state);
    forward_server.ready(forwarder, api.clone(), dns);
    tasks.spawn(api::server::serve(
        listener,
        api,
        counters,
        tasks.stop.clone(),
    ));
    Ok(addr)
}

/// What sends reads to other datacenters: sealed for the WAN pool (its
/// cluster name, our keyring), from the WAN address on a WAN member,
/// from the LAN one elsewhere.
fn forwarder(
    config: &AgentConfig,
    lan: &Core,
    wan: Option<&wan::WanPool>,
    faults: Arc<FaultInjection>,
) -> crate::wan::Forwarder {
    let envelope = match wan {
        Some(wan) => wan.envelope.clone(),
        None => Envelope::with_keyring(
            cluster_id(&wan::wan_cluster(&config.cluster)),
            lan.keyring.clone(),
        )
        .with_range(wire::local_range()),
    };
    let local_ip = config.wan.as_ref().map_or(config.bind, |wan| wan.bind).ip();
    crate::wan::Forwarder::new(
        config.datacenter.clone(),
        envelope,
        lan.snapshot_rx.clone(),
        wan.map(|wan| wan.view.clone()),
        Some(local_ip),
        faults,
    )
}

/// Serves DNS on the agent's runtime, if it is on; returns the address.
fn serve_dns(
    listeners: Option<crate::dns::server::DnsListeners>,
    responder: crate::dns::respond::Responder,
    tasks: &Tasks,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(listeners) = listeners else {
        return Ok(None);
    };
    let addr = listeners.local_addr()?;
    tasks.spawn(crate::dns::server::spawn(
        listeners,
        responder,
        tasks.stop.clone(),
    ));
    Ok(Some(addr))
}

/// What answers DNS questions as our DNS interface does: from the
/// snapshots, counting in `counters`; questions about other datacenters
/// go there through `forwarder` when given.
fn dns_responder(
    config: &AgentConfig,
    (snapshot_rx, status_rx): (
        watch::Receiver<Arc<Snapshot>>,
        watch::Receiver<Arc<crate::core_counters::CoreCounters>>,
    ),
    counters: Arc<crate::dns::DnsCounters>,
    forwarder: Option<Arc<crate::wan::Forwarder>>,
) -> crate::dns::respond::Responder {
    crate::dns::respond::Responder {
        config: Arc::new(config.dns.clone()),
        datacenter: config.datacenter.clone(),
        snapshot_rx,
        status_rx,
        counters,
        skipped: Default::default(),
        forwarder,
    }
}

/// Receives datagrams and queues them for the core loop; drops (and
/// counts) what the loop can't keep up with, and anything oversized.
async fn receive_loop(
    socket: Arc<UdpSocket>,
    mut refusals: wire::RefusalLog,
    faults: Arc<FaultInjection>,
    datagrams_tx: mpsc::Sender<(Instant, Vec<u8>)>,
    drops: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    // Larger than any valid datagram, so that oversized ones are seen whole
    // and refused rather than truncated into something parseable.
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            received = socket.recv_from(&mut buffer) => received,
        };
        let (length, from): (usize, SocketAddr) = match received {
            Ok(pair) => pair,
            Err(error) => {
                // ICMP errors from earlier sends surface here on some systems.
                tracing::trace!(%error, "UDP receive error");
                continue;
            }
        };
        if faults.is_blocked(from.ip()) {
            continue;
        }
        if length > MAX_DATAGRAM {
            drops.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, length, "dropped an oversized datagram");
            continue;
        }
        // Refused (and counted) by the core loop's envelope; logged here,
        // where the sender is known.
        refusals.check(
            from,
            &buffer[..length],
            "udp",
            None,
            std::time::Instant::now(),
        );
        // Stamped so that the loop can tell how long it kept the datagram
        // waiting (local health counts that lag).
        let stamped = (Instant::now(), buffer[..length].to_vec());
        if datagrams_tx.try_send(stamped).is_err() {
            drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}
