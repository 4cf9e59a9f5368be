//! A WAN member's second gossip pool: the one that joins datacenters.
//!
//! An agent with `wan.enabled` runs a second core (see `super::Core`):
//! its own foca, cluster state, timer scheduler, UDP socket and TCP
//! listener, on a thread of its own (`shoal-wan`), with memberlist's WAN
//! timings and the LAN pool's keyring. It is the same core as the LAN
//! pool's, so it probes, suspects, refutes, exchanges state and logs as
//! that one does; it carries no services, checks or KV (its store takes
//! nothing: `kv_max_bytes` 0, and a keyring of its own, so no entry a
//! WAN peer sends is stored or can touch the keys). Its
//! members are named `node.dc` and carry their datacenter, which is how
//! a WAN member knows which datacenters exist and whom to ask there.
//!
//! Inside its datacenter, a WAN member says so in its LAN record
//! ([`shoal_protocol::record::WAN_TAG`]: its WAN address), so every LAN
//! agent knows which of its neighbours can reach other datacenters.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Core, Tasks, core_loop::NameTaken};
use crate::config::{AgentConfig, DataDir, WanConfig};
use crate::fault::FaultInjection;
use crate::wan::{WanView, wan_name};

/// Binds the WAN pool's sockets (before anything starts, like the LAN's).
pub(super) async fn bind(wan: &WanConfig) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let udp = UdpSocket::bind(wan.bind).await.with_context(|| {
        format!(
            "cannot bind the WAN gossip UDP socket to {} (config key `wan.bind`)",
            wan.bind
        )
    })?;
    let tcp = TcpListener::bind(wan.bind).await.with_context(|| {
        format!(
            "cannot bind the WAN gossip TCP listener to {} (config key `wan.bind`)",
            wan.bind
        )
    })?;
    Ok((udp, tcp))
}

/// The WAN pool, running.
pub(super) struct WanPool {
    pub view: WanView,
    /// Seals the pool's traffic (forwarded reads too).
    pub envelope: shoal_protocol::envelope::Envelope,
    /// Answers once the pool has been left (on the agent's shutdown).
    pub done: oneshot::Receiver<Result<(), NameTaken>>,
}

/// The WAN pool's cluster name: the LAN pool's, suffixed, so that the two
/// pools' packets never open in each other's envelopes.
pub(super) fn wan_cluster(cluster: &str) -> String {
    format!("{cluster}/wan")
}

/// Starts the WAN pool beside the LAN pool `lan`: its data (generation,
/// index) under the LAN data dir's `wan/`, its traffic sealed with the
/// LAN pool's keyring and cluster name, suffixed so that the two pools
/// never take each other's packets.
pub(super) fn start(
    config: &AgentConfig,
    sockets: (UdpSocket, TcpListener),
    lan: &Core,
    forward: Arc<super::forward::ForwardServer>,
    faults: Arc<FaultInjection>,
    tasks: &Tasks,
    shutdown: CancellationToken,
) -> anyhow::Result<WanPool> {
    let settings = config
        .wan
        .as_ref()
        .context("the WAN pool started without `[wan]`")?;
    let mut wan = config.clone();
    wan.node_name = wan_name(&config.node_name, &config.datacenter);
    wan.cluster = wan_cluster(&config.cluster);
    wan.data_dir = DataDir::Path(lan.loop_.data_dir.path().join("wan"));
    wan.bind = settings.bind;
    wan.advertise = settings.advertise;
    wan.join = settings.join.clone();
    wan.gossip = settings.gossip.clone();
    wan.gossip.max_clock_drift = config.gossip.max_clock_drift;
    // Nothing is replicated between datacenters: every KV entry a WAN
    // peer sends is refused (and counted), whatever it is.
    wan.gossip.kv_max_bytes = 0;
    wan.tags = Default::default();
    wan.services = Vec::new();
    wan.checks = Vec::new();
    wan.wan = None;
    let core = Core::build(
        &wan,
        sockets,
        Some(lan.keyring.clone()),
        Some(forward),
        faults,
        Arc::new(super::systemd::Notifier::inert()),
        tasks,
    )
    .context("starting the WAN pool")?;
    let span = tracing::info_span!("wan");
    crate::logging::cluster::spawn(
        crate::logging::cluster::ClusterLog {
            seeds: settings.join.clone(),
            local: settings.advertise,
            envelope: core.envelope.clone(),
        },
        core.snapshot_rx.clone(),
        core.status_rx.clone(),
        &tasks.tracker,
        tasks.stop.clone(),
        span.clone(),
    );
    let view = WanView {
        agent: core.agent.clone(),
        snapshot_rx: core.snapshot_rx.clone(),
        status_rx: core.status_rx.clone(),
    };
    tracing::info!(
        name = %wan.node_name,
        bind = %settings.bind,
        advertise = %settings.advertise,
        seeds = ?settings.join,
        "WAN pool member `{}`",
        wan.node_name
    );
    let envelope = core.envelope.clone();
    let done = core.spawn("shoal-wan", shutdown, span)?;
    Ok(WanPool {
        view,
        envelope,
        done,
    })
}
