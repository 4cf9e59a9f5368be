//! `shoal agent`: binds the sockets, starts the tasks, and runs until
//! shutdown.
//!
//! - [`gossip`]: the loop that owns the node (foca + cluster state).
//! - [`http`]: serves the HTTP API with connection limits and timeouts.
//! - [`scheduler`]: delivers timers in order.
//! - [`sync`]: TCP anti-entropy exchanges.
//! - [`rate`]: the per-peer rate limit on exchanges accepted.
//! - [`snapshot`]: what readers see.
//! - [`local`]: the loop's side of the local registry.
//! - [`fault`]: test-only fault injection.

pub mod fault;
pub mod gossip;
pub mod http;
pub mod index;
pub mod local;
pub mod rate;
pub mod scheduler;
pub mod snapshot;
pub mod sync;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use shoal_protocol::codec::MAX_DATAGRAM;
use shoal_protocol::envelope::{Envelope, cluster_id};
use shoal_protocol::{Node, NodeId, NodeRecord};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::config::AgentConfig;
use crate::persist::DataDirGuard;
use gossip::{GossipLoop, Inputs};
use snapshot::Snapshot;

/// Datagrams queued for the gossip loop before the receiver drops them.
const DATAGRAM_QUEUE: usize = 1024;

/// The sockets the agent serves on, bound before anything else starts so
/// that a busy port is reported at once.
pub struct Listeners {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    pub http: TcpListener,
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
        Ok(Self { udp, tcp, http })
    }
}

/// Runs the agent until `shutdown` is cancelled (SIGTERM, SIGINT or
/// `PUT /v1/agent/leave`), then leaves the cluster gracefully and returns.
/// `reload` is how it loads its configuration again (file changes, SIGHUP,
/// `PUT /v1/agent/reload`).
pub async fn run(
    config: AgentConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
    reload: crate::reload::ReloadSetup,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let data_dir = Arc::new(DataDirGuard::open(&config.data_dir)?);
    let now_millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or_default();
    let generation = data_dir.next_generation(now_millis)?;
    let id = NodeId {
        addr: config.advertise,
        generation,
    };
    let mut record = NodeRecord::new(id, config.node_name.clone());
    record.datacenter = config.datacenter.clone();
    record.tags = config.tags.clone();

    let keyring = match config.encrypt {
        Some(key) => shoal_protocol::keyring::Keyring::with_primary(key),
        None => shoal_protocol::keyring::Keyring::default(),
    };
    let envelope = Envelope::with_keyring(cluster_id(&config.cluster), keyring.clone());
    let node = Node::new(
        record,
        config.gossip.clone(),
        envelope.clone(),
        // From the OS: it also seeds the nonces of sealed datagrams.
        rand::random(),
    );

    let tracker = TaskTracker::new();
    let tasks_stop = CancellationToken::new();
    let (schedule_tx, schedule_rx) = mpsc::unbounded_channel();
    let (timers_tx, timers_rx) = mpsc::channel(1024);
    let (datagrams_tx, datagrams_rx) = mpsc::channel(DATAGRAM_QUEUE);
    let (commands_tx, commands_rx) = mpsc::channel(256);
    let (results_tx, results_rx) = mpsc::channel(256);
    let (persist_tx, persist_rx) = mpsc::unbounded_channel();
    let initial = Snapshot {
        index: 1,
        local: node.local_record(),
        members: node.members(),
        local_checks: Vec::new(),
        kv: Default::default(),
        checks_loaded: false,
        counters: Default::default(),
        name_conflicts: 0,
        send_failures: 0,
        receive_drops: 0,
    };
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(initial));

    tracker.spawn(scheduler::scheduler_loop(
        schedule_rx,
        timers_tx,
        tasks_stop.clone(),
    ));
    tracker.spawn(local::persist_loop(persist_rx, data_dir.clone()));

    let lookup_rx = snapshot_rx.clone();
    let dependency: crate::checks::DependencyLookup =
        Arc::new(move |service: &str| crate::catalog::count_passing(&lookup_rx.borrow(), service));
    let mut local_state =
        local::LocalState::new(results_tx, dependency, tasks_stop.child_token(), persist_tx);
    if let Some(saved) = local::read_saved(&data_dir) {
        local_state.restore(&saved);
    }
    local_state
        .load_config(config.services.clone(), config.checks.clone())
        .context("loading the configured services and checks")?;

    let (database, loaded) = crate::kv::disk::open(data_dir.path())?;
    let (disk_tx, disk_rx) = mpsc::unbounded_channel();
    tracker.spawn(crate::kv::disk::writer_loop(
        database,
        data_dir.path().join(crate::kv::disk::FILE),
        disk_rx,
    ));
    let mut node = node;
    let mut kv_state = crate::kv::KvState::new(
        keyring.clone(),
        config.node_name.clone(),
        disk_tx,
        config.kv_tombstone_grace,
    );
    kv_state.restore(&mut node, loaded);

    let socket = Arc::new(listeners.udp);
    let receive_drops = Arc::new(AtomicU64::new(0));
    let faults = Arc::new(fault::FaultInjection::new(config.fault_injection));
    tracker.spawn(receive_loop(
        socket.clone(),
        faults.clone(),
        datagrams_tx,
        receive_drops.clone(),
        tasks_stop.clone(),
    ));

    let sync = sync::SyncService::new(
        envelope,
        commands_tx.clone(),
        tracker.clone(),
        faults.clone(),
    );
    tracker.spawn(sync.clone().serve(listeners.tcp, tasks_stop.clone()));

    let reload = crate::reload::spawn(
        reload,
        config.clone(),
        commands_tx.clone(),
        &tracker,
        tasks_stop.clone(),
    );

    let left = CancellationToken::new();
    let api_state = api::ApiState {
        config: config.clone(),
        reload,
        snapshot_rx,
        shutdown: shutdown.clone(),
        left: left.clone(),
        commands_tx: commands_tx.clone(),
        faults: faults.clone(),
        keyring: keyring.clone(),
    };
    let http_addr = listeners.http.local_addr()?;
    tracker.spawn(http::serve(
        listeners.http,
        api::router(api_state),
        Arc::new(http::HttpCounters::default()),
        tasks_stop.clone(),
    ));

    tracing::info!(
        node = %config.node_name,
        %id,
        bind = %config.bind,
        http = %http_addr,
        cluster = %config.cluster,
        seeds = ?config.join,
        "shoal agent running"
    );

    let gossip = GossipLoop {
        node,
        socket,
        schedule_tx,
        snapshot_tx,
        sync,
        data_dir: data_dir.clone(),
        receive_drops,
        send_failures: 0,
        index: 1,
        local: local_state,
        kv: kv_state,
        faults,
    };
    gossip
        .run(
            Inputs {
                timers_rx,
                datagrams_rx,
                commands_rx,
                results_rx,
            },
            shutdown,
        )
        .await;

    left.cancel();
    tasks_stop.cancel();
    tracker.close();
    if tokio::time::timeout(std::time::Duration::from_secs(3), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 3s");
    }
    Ok(())
}

/// Receives datagrams and queues them for the gossip loop; drops (and
/// counts) what the loop can't keep up with, and anything oversized.
async fn receive_loop(
    socket: Arc<UdpSocket>,
    faults: Arc<fault::FaultInjection>,
    datagrams_tx: mpsc::Sender<Vec<u8>>,
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
        if datagrams_tx.try_send(buffer[..length].to_vec()).is_err() {
            drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}
