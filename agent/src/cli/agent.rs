//! `shoal agent`: flags, logging, signals and exit codes.
//!
//! Exit codes: 0 after a graceful leave, 1 when the agent could not start
//! or failed while running, 2 for a bad configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, Overrides};
use crate::daemon;

/// Flags of `shoal agent`. Each can also be set in the config file and by
/// the `SHOAL_*` variable shown; flags win over variables, which win over
/// the file.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// TOML config file (see config/agent.toml).
    #[arg(long, env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of service files (*.toml) [default: config.d beside the
    /// config file, when it exists].
    #[arg(long, env = "SHOAL_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Development mode: everything on 127.0.0.1, a temporary data dir, no
    /// config file needed.
    #[arg(long, env = "SHOAL_DEV")]
    pub dev: bool,
    /// Node name, unique in the cluster [default: the host name].
    #[arg(long, env = "SHOAL_NODE", value_name = "NAME")]
    pub node: Option<String>,
    /// Datacenter label [default: dc1].
    #[arg(long, env = "SHOAL_DATACENTER", value_name = "NAME")]
    pub datacenter: Option<String>,
    /// Cluster name: agents of other clusters are ignored [default: shoal].
    #[arg(long, env = "SHOAL_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,
    /// Gossip encryption key, base64 of 32 bytes (`shoal keygen`). Every
    /// agent of the cluster needs it.
    #[arg(
        long,
        env = "SHOAL_ENCRYPT",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub encrypt: Option<String>,
    /// Gossip address, UDP and TCP [default: 0.0.0.0:7946; 127.0.0.1:7946 with --dev].
    #[arg(long, env = "SHOAL_BIND", value_name = "IP:PORT")]
    pub bind: Option<String>,
    /// DNS interface, UDP and TCP, or `off` [default: 127.0.0.1:8600].
    #[arg(long, env = "SHOAL_DNS_ADDR", value_name = "IP:PORT|off")]
    pub dns_addr: Option<String>,
    /// Gossip address peers use to reach this agent [default: the bind
    /// address, or this host's first IPv4 address when binding to 0.0.0.0].
    #[arg(long, env = "SHOAL_ADVERTISE", value_name = "IP:PORT")]
    pub advertise: Option<String>,
    /// Seed to join through; repeat for several [env: comma-separated].
    #[arg(
        long,
        env = "SHOAL_JOIN",
        value_name = "IP:PORT",
        value_delimiter = ','
    )]
    pub join: Vec<String>,
    /// Where the agent keeps its state.
    #[arg(long, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Node tag; repeat for several [env: comma-separated].
    #[arg(
        long = "tag",
        env = "SHOAL_TAGS",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub tags: Vec<String>,
    /// trace, debug, info, warn or error [default: info]; RUST_LOG, when
    /// set, takes precedence.
    #[arg(long, env = "SHOAL_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Test hook: lets `PUT /v1/shoal/fault` cut this agent off from chosen
    /// peers. Never in production.
    #[arg(long, hide = true)]
    pub fault_injection: bool,
    /// text or json [default: text].
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// HTTP API token: writes (and, with --acl-protect-reads, reads) must
    /// present it [default: none, the API is open to local callers].
    #[arg(
        long,
        env = "SHOAL_ACL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub acl_token: Option<String>,
    /// Reads need the token too.
    #[arg(long, env = "SHOAL_ACL_PROTECT_READS")]
    pub acl_protect_reads: bool,
    /// Let callers without a token change the gossip keyring (install, use,
    /// remove) on an agent that has no --acl-token. Off by default: the
    /// keys admit their holder to the cluster.
    #[arg(long, env = "SHOAL_ACL_ALLOW_UNAUTHENTICATED_KEYRING")]
    pub acl_allow_unauthenticated_keyring: bool,
    /// Allow exec checks (`Args`) registered through the HTTP API. Off by
    /// default: they run any command as the agent's user.
    #[arg(long, env = "SHOAL_ENABLE_SCRIPT_CHECKS")]
    pub enable_script_checks: bool,
    /// Allow exec checks from the config files [default: true].
    #[arg(long, env = "SHOAL_ENABLE_LOCAL_SCRIPT_CHECKS", value_name = "BOOL")]
    pub enable_local_script_checks: Option<bool>,
    /// Also be a member of the WAN pool, which joins datacenters: a
    /// handful of agents per datacenter, not all (`wan.enabled`).
    #[arg(long, env = "SHOAL_WAN")]
    pub wan: bool,
    /// WAN gossip address, UDP and TCP [default: the bind IP, port 8302].
    #[arg(long, env = "SHOAL_WAN_BIND", value_name = "IP:PORT")]
    pub wan_bind: Option<String>,
    /// WAN gossip address other datacenters reach this agent at [default:
    /// the WAN bind address, or the advertise IP when binding to 0.0.0.0].
    #[arg(long, env = "SHOAL_WAN_ADVERTISE", value_name = "IP:PORT")]
    pub wan_advertise: Option<String>,
    /// WAN member (of any datacenter) to join the WAN pool through;
    /// retried until one answers; repeat for several [env: comma-separated].
    #[arg(
        long,
        env = "SHOAL_JOIN_WAN",
        value_name = "IP:PORT",
        value_delimiter = ','
    )]
    pub join_wan: Vec<String>,
}

impl AgentArgs {
    fn overrides(&self, http_addr: Option<String>) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            dev: self.dev,
            node_name: self.node.clone(),
            datacenter: self.datacenter.clone(),
            cluster: self.cluster.clone(),
            data_dir: self.data_dir.clone(),
            bind: self.bind.clone(),
            advertise: self.advertise.clone(),
            http_addr,
            dns_addr: self.dns_addr.clone(),
            join: self.join.clone(),
            tags: self.tags.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
            config_dir: self.config_dir.clone(),
            fault_injection: self.fault_injection,
            acl_token: self.acl_token.clone(),
            acl_protect_reads: self.acl_protect_reads,
            acl_allow_unauthenticated_keyring: self.acl_allow_unauthenticated_keyring,
            encrypt: self.encrypt.clone(),
            enable_script_checks: self.enable_script_checks,
            enable_local_script_checks: self.enable_local_script_checks,
            wan: self.wan,
            wan_bind: self.wan_bind.clone(),
            wan_advertise: self.wan_advertise.clone(),
            join_wan: self.join_wan.clone(),
        }
    }
}

pub fn run(args: &AgentArgs, http_addr: Option<String>) -> ExitCode {
    let overrides = args.overrides(http_addr);
    let config = match AgentConfig::load(&overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("Error: {error}");
            return ExitCode::from(2);
        }
    };
    crate::resident::limit_malloc_arenas();
    let log = init_logging(&config);
    for note in &config.port_defaults {
        tracing::info!("{note}");
    }
    // SAFETY: no other thread runs yet (the runtime starts below).
    let systemd = unsafe { daemon::systemd::Notifier::from_env() };
    // One thread: the agent's work is small, and a single thread keeps the
    // resident footprint low. Checks and file I/O go to blocking threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let listeners = daemon::Listeners::bind(&config).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let reload = crate::daemon::reload::ReloadSetup { overrides, log };
        daemon::run(config, listeners, shutdown, reload, systemd).await
    });
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Once: the log is on standard error already (text or JSON, as
            // the operator chose), and a second copy there reads as a
            // second failure.
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    };
    // Lines still queued for stderr (the log is written off the loop).
    crate::logging::writer::flush();
    code
}

/// Installs the logger (see [`crate::logging`]).
fn init_logging(config: &AgentConfig) -> Option<crate::logging::LogControl> {
    crate::logging::init(&config.log_level, config.log_format)
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
