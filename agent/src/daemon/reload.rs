//! Config hot reload: the agent's config file and `config_dir` are watched
//! (inotify through `notify`), and SIGHUP and `PUT /v1/agent/reload` ask
//! for the same thing. A reload re-runs [`AgentConfig::load`] with the
//! flags and `SHOAL_*` variables the agent started with, then:
//!
//! - a file that does not load (syntax error, invalid value, half-written)
//!   changes nothing: the error is logged and shown in `/v1/agent/self`
//!   (`Stats.reload.last_error`, `Config.ReloadError`);
//! - services, checks and node tags are handed to the core loop with
//!   [`AgentHandle::reload`] (it owns them), `[[templates]]` to the
//!   template runners and `[[watches]]` to the watch manager (both kept in
//!   step by [`crate::runners::Runners`]), and the log level is swapped in
//!   place;
//! - settings read once at start (addresses, data dir, cluster, node name,
//!   gossip tuning, ...) keep their running values and are reported as
//!   needing a restart.
//!
//! Editors save by writing a new file and renaming it over the old one, so
//! the watch is on the config file's directory, not the file itself, and
//! events are debounced: a burst of writes is one reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{AgentConfig, DnsConfig, Overrides};
use crate::handle::{AgentHandle, LiveConfig};
use crate::logging::LogControl;
use crate::reload_handle::{ReloadHandle, ReloadReply, ReloadStatus, Reloaded, Trigger};

/// Quiet time after the last file event before a reload starts.
pub const DEBOUNCE: Duration = Duration::from_millis(300);
/// A file rewritten without pause still reloads this often.
const DEBOUNCE_MAX: Duration = Duration::from_secs(3);

/// What `shoal agent` hands the daemon so that it can reload itself.
pub struct ReloadSetup {
    /// The flags and `SHOAL_*` variables given at start, applied on every load.
    pub overrides: Overrides,
    /// `None` when `RUST_LOG` pins the filter: `log_level` is then not reloaded.
    pub log: Option<LogControl>,
}

/// The runners a reload reconfigures beside the core loop.
pub struct ConfiguredRunners {
    pub templates: crate::template::Templates,
    pub watches: crate::watches::Watches,
}

/// Starts the reload task: file watch, SIGHUP and API requests.
pub fn spawn(
    setup: ReloadSetup,
    config: Arc<AgentConfig>,
    agent: AgentHandle,
    runners: ConfiguredRunners,
    systemd: Arc<super::systemd::Notifier>,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> ReloadHandle {
    let (requests_tx, requests_rx) = mpsc::channel(8);
    let (status_tx, status_rx) = watch::channel(ReloadStatus::default());
    let ConfiguredRunners { templates, watches } = runners;
    let reloader = Reloader {
        watches,
        overrides: setup.overrides,
        log: setup.log,
        running: config,
        agent,
        templates,
        systemd,
        status_tx,
        watcher: None,
    };
    tracker.spawn(reloader.run(requests_rx, stop));
    ReloadHandle {
        requests_tx,
        status_rx,
    }
}

struct Reloader {
    overrides: Overrides,
    log: Option<LogControl>,
    /// The configuration in force (restart-only keys as at start).
    running: Arc<AgentConfig>,
    agent: AgentHandle,
    templates: crate::template::Templates,
    /// Told `RELOADING=1` and `READY=1` around every reload.
    systemd: Arc<super::systemd::Notifier>,
    status_tx: watch::Sender<ReloadStatus>,
    watches: crate::watches::Watches,
    /// Kept alive: dropping it stops the watch.
    watcher: Option<notify::RecommendedWatcher>,
}

impl Reloader {
    async fn run(mut self, mut requests_rx: mpsc::Receiver<ReloadReply>, stop: CancellationToken) {
        let (events_tx, mut events_rx) = mpsc::channel::<()>(1);
        self.watch_config_files(&events_tx);
        let mut hangups =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGHUP; reload with `shoal reload`");
                    None
                }
            };
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                Some(reply) = requests_rx.recv() => {
                    let _ = reply.send(self.reload(Trigger::Api).await);
                }
                Some(()) = recv_signal(&mut hangups) => {
                    tracing::info!("SIGHUP received: reloading the configuration");
                    let _ = self.reload(Trigger::Signal).await;
                }
                Some(()) = events_rx.recv() => {
                    debounce(&mut events_rx).await;
                    tracing::info!("configuration files changed: reloading");
                    if self.reload(Trigger::File).await.is_ok() {
                        // config_dir may have moved.
                        self.watch_config_files(&events_tx);
                    }
                }
            }
        }
    }

    /// (Re)starts the watch on the config file's directory and `config_dir`.
    fn watch_config_files(&mut self, events_tx: &mpsc::Sender<()>) {
        let Some(file) = self.overrides.config_file.clone() else {
            return;
        };
        let file = absolute(&file);
        let file_dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let config_dir = self
            .running
            .config_dir
            .clone()
            .map(|dir| absolute(&dir))
            .unwrap_or_else(|| file_dir.join("config.d"));
        let relevant = Relevant {
            file: file.clone(),
            config_dir: config_dir.clone(),
        };
        let events_tx = events_tx.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            match event {
                Ok(event) if relevant.matches(&event) => {
                    // Full: a reload is already pending, which is enough.
                    let _ = events_tx.try_send(());
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "config file watch error"),
            }
        });
        let mut watcher = match watcher {
            Ok(watcher) => watcher,
            Err(error) => {
                tracing::warn!(%error, "cannot watch the config files; reload with SIGHUP or `shoal reload`");
                return;
            }
        };
        let mut watching = Vec::new();
        for dir in [&file_dir, &config_dir] {
            if !dir.is_dir() || watching.contains(&dir.display().to_string()) {
                continue;
            }
            match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => watching.push(dir.display().to_string()),
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "cannot watch a config directory")
                }
            }
        }
        tracing::debug!(?watching, "watching the configuration");
        self.status_tx
            .send_modify(|status| status.watching = watching);
        self.watcher = Some(watcher);
    }

    /// Loads the configuration again and applies what can change live.
    async fn reload(&mut self, trigger: Trigger) -> Result<Reloaded, String> {
        self.systemd.reloading();
        let result = self.load_and_apply(trigger).await;
        self.systemd.reloaded();
        result
    }

    async fn load_and_apply(&mut self, trigger: Trigger) -> Result<Reloaded, String> {
        let overrides = self.overrides.clone();
        let loaded = tokio::task::spawn_blocking(move || AgentConfig::load(&overrides))
            .await
            .map_err(|error| format!("the config loader panicked: {error}"))
            .and_then(|loaded| loaded.map_err(|error| error.to_string()));
        let result = match loaded {
            Ok(config) => self.apply(config).await,
            Err(error) => Err(error),
        };
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        self.status_tx.send_modify(|status| {
            status.last_trigger = Some(trigger);
            match &result {
                Ok(reloaded) => {
                    status.reloads += 1;
                    status.last_success = Some(now);
                    status.last_error = None;
                    status.needs_restart = reloaded.needs_restart.clone();
                }
                Err(error) => {
                    status.failures += 1;
                    status.last_error = Some(error.clone());
                }
            }
        });
        match &result {
            Ok(reloaded) => {
                let changed = if reloaded.changed.is_empty() {
                    "nothing".to_string()
                } else {
                    reloaded.changed.join(", ")
                };
                tracing::info!(
                    services = reloaded.services,
                    checks = reloaded.checks,
                    log_level = %reloaded.log_level,
                    %changed,
                    ?trigger,
                    "configuration reloaded: changed {changed}; now {} services, {} checks",
                    reloaded.services,
                    reloaded.checks
                )
            }
            Err(error) => tracing::error!(
                %error,
                "configuration reload refused; the previous configuration keeps running"
            ),
        }
        result
    }

    async fn apply(&mut self, loaded: AgentConfig) -> Result<Reloaded, String> {
        let needs_restart = restart_only_changes(&self.running, &loaded);
        if !needs_restart.is_empty() {
            tracing::warn!(
                keys = %needs_restart.join(", "),
                "config change needs a restart: {}; keeping the running values until then",
                needs_restart.join(", ")
            );
        }
        let live = LiveConfig {
            services: loaded.services.clone(),
            checks: loaded.checks.clone(),
            tags: loaded.tags.clone(),
        };
        self.agent
            .reload(live)
            .await
            .map_err(|error| error.to_string())?;

        if loaded.log_level != self.running.log_level {
            match &self.log {
                Some(set_level) => set_level(&loaded.log_level)
                    .map_err(|error| format!("log_level: cannot apply: {error}"))?,
                None => {
                    tracing::warn!("log_level changed, but RUST_LOG is set and takes precedence")
                }
            }
        }

        if loaded.templates != self.running.templates {
            self.templates.reconfigure(loaded.templates.clone());
        }

        let mut running = (*self.running).clone();
        let changed: Vec<&'static str> = [
            ("services", running.services != loaded.services),
            ("checks", running.checks != loaded.checks),
            ("tags", running.tags != loaded.tags),
            ("log_level", running.log_level != loaded.log_level),
            ("templates", running.templates != loaded.templates),
            ("watches", running.watches != loaded.watches),
        ]
        .into_iter()
        .filter_map(|(part, differs)| differs.then_some(part))
        .collect();
        running.services = loaded.services;
        running.checks = loaded.checks;
        running.tags = loaded.tags;
        running.log_level = loaded.log_level;
        running.config_dir = loaded.config_dir;
        running.templates = loaded.templates;
        if running.watches != loaded.watches {
            self.watches.reconfigure(loaded.watches.clone());
        }
        running.watches = loaded.watches;
        let reloaded = Reloaded {
            services: running.services.len(),
            // Every check the agent runs: node-level ones and each
            // service's own (a service with a check is not "0 checks").
            checks: running.checks.len()
                + running
                    .services
                    .iter()
                    .map(|service| service.checks.len())
                    .sum::<usize>(),
            log_level: running.log_level.clone(),
            needs_restart,
            changed,
        };
        self.running = Arc::new(running);
        Ok(reloaded)
    }
}

/// Which file events concern the configuration.
struct Relevant {
    file: PathBuf,
    config_dir: PathBuf,
}

impl Relevant {
    fn matches(&self, event: &notify::Event) -> bool {
        // Reading the files ourselves produces access events: never react
        // to those (or to metadata-only changes such as atime), or every
        // reload would trigger the next.
        let kind_counts = match event.kind {
            EventKind::Access(_) => false,
            EventKind::Modify(notify::event::ModifyKind::Metadata(_)) => false,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any => {
                true
            }
            EventKind::Other => false,
        };
        kind_counts
            && event.paths.iter().any(|path| {
                path == &self.file
                    || path == &self.config_dir
                    || (path.parent() == Some(self.config_dir.as_path())
                        && path.extension().is_some_and(|ext| ext == "toml"))
            })
    }
}

/// Waits until no event has come for [`DEBOUNCE`] (at most [`DEBOUNCE_MAX`]).
async fn debounce(events_rx: &mut mpsc::Receiver<()>) {
    let deadline = Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet_until = (Instant::now() + DEBOUNCE).min(deadline);
        match tokio::time::timeout_at(quiet_until, events_rx.recv()).await {
            Ok(Some(())) if Instant::now() < deadline => continue,
            _ => return,
        }
    }
}

async fn recv_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Keys whose new value differs from the running one but can only be
/// applied by a restart, by config key name.
pub fn restart_only_changes(running: &AgentConfig, loaded: &AgentConfig) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differs = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_string());
        }
    };
    differs("node_name", running.node_name != loaded.node_name);
    differs("datacenter", running.datacenter != loaded.datacenter);
    differs("cluster", running.cluster != loaded.cluster);
    // The keyring replicates through the KV once running; `encrypt` only
    // seeds it at start (rotate with `shoal keyring`).
    differs("encrypt", running.encrypt != loaded.encrypt);
    differs("acl", running.acl != loaded.acl);
    // The fire budget is read by the API, which keeps the config it started with.
    differs("events", running.events != loaded.events);
    differs(
        "enable_script_checks",
        running.enable_script_checks != loaded.enable_script_checks,
    );
    differs("data_dir", running.data_dir != loaded.data_dir);
    differs("bind", running.bind != loaded.bind);
    differs("advertise", running.advertise != loaded.advertise);
    differs("http_addr", running.http_addr != loaded.http_addr);
    // The DNS server reads its settings once, at start.
    differs("dns_addr", running.dns.addr != loaded.dns.addr);
    differs(
        "dns",
        DnsConfig {
            addr: None,
            ..running.dns.clone()
        } != DnsConfig {
            addr: None,
            ..loaded.dns.clone()
        },
    );
    differs("join", running.join != loaded.join);
    differs(
        "join_ready_timeout",
        running.join_ready_timeout != loaded.join_ready_timeout,
    );
    differs("log_format", running.log_format != loaded.log_format);
    // GossipConfig has no PartialEq; its Debug form lists every field.
    // Two of them are keys of their own in the file.
    let gossip_table = |gossip: &shoal_protocol::GossipConfig| {
        format!(
            "{:?}",
            shoal_protocol::GossipConfig {
                max_clock_drift: Duration::ZERO,
                kv_max_bytes: 0,
                ..gossip.clone()
            }
        )
    };
    differs(
        "gossip",
        gossip_table(&running.gossip) != gossip_table(&loaded.gossip),
    );
    // The WAN pool is started (or not) once; its Debug form lists every
    // field, its gossip settings included.
    differs(
        "wan",
        format!("{:?}", running.wan) != format!("{:?}", loaded.wan),
    );
    differs(
        "max_clock_drift",
        running.gossip.max_clock_drift != loaded.gossip.max_clock_drift,
    );
    differs(
        "kv.max_bytes",
        running.gossip.kv_max_bytes != loaded.gossip.kv_max_bytes,
    );
    differs(
        "kv.tombstone_grace",
        running.kv_tombstone_grace != loaded.kv_tombstone_grace,
    );
    keys
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
