//! What the readers see of the WAN pool, the second gossip pool a WAN
//! member (`wan.enabled`) runs to join datacenters (started by
//! `daemon::wan`): its members and the door to its core; and the
//! [`Forwarder`], which sends reads to other datacenters (see
//! `shoal_protocol::forward`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::seq::SliceRandom;
use shoal_protocol::MemberStatus;
use shoal_protocol::codec::MAX_FRAME;
use shoal_protocol::envelope::{Envelope, PayloadKind};
use shoal_protocol::forward::{ForwardRequest, ForwardResponse, MAX_HOPS};
use shoal_protocol::record::WAN_TAG;
use tokio::net::TcpStream;

pub use crate::frame::FrameError;
use tokio::sync::{Semaphore, watch};

use crate::core_counters::CoreCounters;
use crate::handle::AgentHandle;
use crate::snapshot::Snapshot;

/// The WAN pool as readers see it.
#[derive(Clone)]
pub struct WanView {
    /// Its core (`join`, `force-leave`).
    pub agent: AgentHandle,
    /// Its members, as its core last published them.
    pub snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    pub status_rx: watch::Receiver<Arc<CoreCounters>>,
}

impl WanView {
    /// The live WAN members of datacenter `dc`, other than this agent.
    pub fn live_members_of(&self, dc: &str) -> Vec<SocketAddr> {
        let snapshot = self.snapshot_rx.borrow();
        snapshot
            .members
            .iter()
            .filter(|member| member.id != snapshot.local.id)
            .filter(|member| member.status == MemberStatus::Alive)
            .filter(|member| {
                member
                    .record
                    .as_ref()
                    .is_some_and(|record| record.datacenter.eq_ignore_ascii_case(dc))
            })
            .map(|member| member.id.addr)
            .collect()
    }
}

/// A datacenter as the WAN pool sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct WanDatacenter {
    pub name: String,
    /// Its live WAN members (`node.dc`), with their coordinates when
    /// known.
    pub members: Vec<(String, Option<shoal_protocol::coordinate::Coordinate>)>,
    /// The median estimated round trip from this agent to its members
    /// (zero for ours); `None` without coordinates.
    pub rtt: Option<Duration>,
}

impl WanView {
    /// Ours, then every datacenter with a live WAN member, nearest first
    /// (by the median estimated round trip to its members; those without
    /// coordinates last, by name), as Consul sorts them.
    pub fn datacenters(&self, ours: &str) -> Vec<WanDatacenter> {
        let snapshot = self.snapshot_rx.borrow().clone();
        let coordinates = self.status_rx.borrow().coordinates.clone();
        let local = snapshot.local.name.clone();
        let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        by_name.entry(ours.to_string()).or_default();
        for member in snapshot.members.iter() {
            if member.status == MemberStatus::Alive
                && let Some(record) = &member.record
            {
                by_name
                    .entry(record.datacenter.clone())
                    .or_default()
                    .push(record.name.clone());
            }
        }
        let mut all: Vec<WanDatacenter> = by_name
            .into_iter()
            .map(|(name, members)| {
                let mut rtts: Vec<Duration> = members
                    .iter()
                    .filter_map(|member| coordinates.rtt(&local, member))
                    .collect();
                rtts.sort_unstable();
                let rtt = if name == ours {
                    Some(Duration::ZERO)
                } else {
                    rtts.get(rtts.len() / 2).copied()
                };
                let members = members
                    .into_iter()
                    .map(|member| {
                        let coordinate = coordinates.get(&member).cloned();
                        (member, coordinate)
                    })
                    .collect();
                WanDatacenter { name, members, rtt }
            })
            .collect();
        // Stable: equal distances (and no coordinates) stay by name.
        all.sort_by_key(|dc| (dc.name != ours, dc.rtt.is_none(), dc.rtt));
        all
    }
}

/// The live members of our datacenter, other than this agent, that are
/// WAN members: their names and WAN addresses (the `wan` tag of their
/// record).
pub fn lan_wan_members(snapshot: &Snapshot) -> Vec<(String, SocketAddr)> {
    snapshot
        .members
        .iter()
        .filter(|member| member.id != snapshot.local.id)
        .filter(|member| member.status == MemberStatus::Alive)
        .filter_map(|member| {
            let record = member.record.as_ref()?;
            let addr = record.tags.get(WAN_TAG)?.parse().ok()?;
            Some((record.name.clone(), addr))
        })
        .collect()
}

/// A WAN member's name: `node.dc`, as Consul's servers are named in their
/// WAN pool.
pub fn wan_name(node: &str, datacenter: &str) -> String {
    format!("{node}.{datacenter}")
}

/// Largest answer body forwarded: a frame's worth, less room for the
/// envelope and the headers.
pub const MAX_ANSWER: usize = MAX_FRAME - 64 * 1024;
/// How long a WAN member waits for an agent of the target datacenter to
/// answer a plain read, per attempt (a round trip across the WAN and a
/// read from memory: well under a second when the agent is reachable).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// A blocking query's default and longest wait (the API's own).
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The reads another datacenter answers (`?dc=`): the catalog, health,
/// the KV store and coordinates, as Consul forwards them; and
/// `/v1/catalog/datacenters`, which a LAN agent asks a WAN member of its
/// own datacenter. Nothing that writes, and nothing about one agent.
pub fn forwardable(path_and_query: &str) -> bool {
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(path, _)| path);
    const EXACT: [&str; 6] = [
        "/v1/catalog/services",
        "/v1/catalog/nodes",
        "/v1/catalog/datacenters",
        "/v1/coordinate/nodes",
        "/v1/kv",
        "/v1/kv/",
    ];
    const UNDER: [&str; 10] = [
        "/v1/catalog/service/",
        "/v1/catalog/node/",
        "/v1/catalog/node-services/",
        "/v1/health/service/",
        "/v1/health/checks/",
        "/v1/health/state/",
        "/v1/health/node/",
        "/v1/coordinate/node/",
        "/v1/kv/",
        "/v1/shoal/pick/",
    ];
    EXACT.contains(&path) || UNDER.iter().any(|prefix| path.starts_with(prefix))
}

/// How long one attempt at an agent of the target may take: a blocking
/// query's wait (`?index=` with `?wait=`, default 5 min, at most 10) and
/// then [`ATTEMPT_TIMEOUT`], else [`ATTEMPT_TIMEOUT`].
pub fn request_timeout(path_and_query: &str) -> Duration {
    let Some((_, query)) = path_and_query.split_once('?') else {
        return ATTEMPT_TIMEOUT;
    };
    let mut blocking = false;
    let mut wait = DEFAULT_WAIT;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "index" => blocking = true,
            "wait" => {
                if let Ok(parsed) = crate::duration::parse(value) {
                    wait = parsed.min(MAX_WAIT);
                }
            }
            _ => {}
        }
    }
    if blocking {
        wait + ATTEMPT_TIMEOUT
    } else {
        ATTEMPT_TIMEOUT
    }
}

/// Outgoing forwarded reads at once, from this agent; more are answered
/// 503 at once.
pub const MAX_FORWARDS_OUT: usize = 64;
/// Agents of the target tried for one read before giving up.
pub const FORWARD_ATTEMPTS: usize = 3;
/// How long a connection to the next hop may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections to one next hop kept open after an answer, for the next
/// read to skip the handshake (a round trip across the WAN).
const IDLE_PER_TARGET: usize = 4;
/// Connections kept open in all.
const IDLE_MAX: usize = 64;
/// How long a kept connection may wait for its next read; below the
/// other side's [`SERVED_IDLE_TIMEOUT`], so that it is rarely closed
/// under us.
const IDLE_KEEP: Duration = Duration::from_secs(30);
/// How long a WAN member keeps a connection open for the next read.
pub const SERVED_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The header a forwarder sets on an answer it made itself (no agent of
/// the target gave one): the next hop back may try another route.
pub const FORWARD_ERROR_HEADER: &str = "x-shoal-forward-error";

/// Why a read for another datacenter got no answer from it.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No agent to send it to: the reason, for the caller.
    #[error("{0}")]
    NoRoute(String),
    #[error(
        "{MAX_FORWARDS_OUT} reads for other datacenters are in flight from this agent already; retry"
    )]
    Busy,
    /// Every agent tried failed: what each said.
    #[error("{0}")]
    Failed(String),
}

/// What the WAN pool and forwarded reads count (`shoal_wan_*`).
#[derive(Default)]
pub struct WanCounters {
    /// Reads this agent sent to another datacenter (its API's and DNS's).
    pub reads_sent: AtomicU64,
    /// Of those, the ones no agent of the target answered.
    pub reads_unanswered: AtomicU64,
    /// Forwarded reads this agent served: answered for our datacenter or
    /// passed on to another.
    pub reads_served: AtomicU64,
    /// Forwarded reads refused past a budget (sent or served at once).
    pub reads_busy: AtomicU64,
    /// Connections this agent opened to send reads on (a kept one serves
    /// many reads).
    pub connections_opened: AtomicU64,
    /// The WAN pool, to count its live members at scrape time.
    pub pool: std::sync::OnceLock<WanView>,
}

impl crate::metrics::Counters for WanCounters {
    fn prefix(&self) -> &'static str {
        "shoal_wan_"
    }

    fn visit(&self, out: &mut crate::metrics::Exposition) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        out.counter(
            "shoal_wan_reads_sent_total",
            "Reads (HTTP ?dc= and DNS) this agent sent to another datacenter.",
            load(&self.reads_sent),
        );
        out.counter(
            "shoal_wan_reads_unanswered_total",
            "Reads sent to another datacenter that no agent of it answered (503 or SERVFAIL).",
            load(&self.reads_unanswered),
        );
        out.counter(
            "shoal_wan_reads_served_total",
            "Forwarded reads this WAN member answered for its datacenter or passed on.",
            load(&self.reads_served),
        );
        out.counter(
            "shoal_wan_reads_busy_total",
            "Forwarded reads refused past a budget (64 sent or 64 served at once).",
            load(&self.reads_busy),
        );
        out.counter(
            "shoal_wan_connections_opened_total",
            "Connections this agent opened to send reads to another datacenter on (each is kept for the next reads).",
            load(&self.connections_opened),
        );
        let alive = self.pool.get().map_or(0, |pool| {
            pool.snapshot_rx
                .borrow()
                .members
                .iter()
                .filter(|member| member.status == MemberStatus::Alive)
                .count()
        });
        out.gauge(
            "shoal_wan_members_alive",
            "Live members of the WAN pool, this agent included (0 when it is not a WAN member).",
            alive as f64,
        );
    }
}

/// Sends reads to other datacenters: through a WAN member of ours (a LAN
/// agent), or straight to a WAN member of the target (a WAN member).
/// Shared by the HTTP API, where reads with `?dc=` start, and the WAN
/// listener, where a WAN member takes them on.
pub struct Forwarder {
    /// Ours.
    pub datacenter: String,
    /// Seals for the WAN pool: its cluster name, the LAN pool's keyring.
    pub envelope: Envelope,
    /// Our LAN pool: which of our neighbours are WAN members.
    pub lan: watch::Receiver<Arc<Snapshot>>,
    /// The WAN pool, when this agent is a WAN member.
    pub wan: Option<WanView>,
    /// Outgoing connections leave from it, when bound to one.
    pub local_ip: Option<IpAddr>,
    pub faults: Arc<crate::fault::FaultInjection>,
    pub counters: Arc<WanCounters>,
    outgoing: Arc<Semaphore>,
    /// Connections kept open after an answer, by next hop, with when.
    idle: std::sync::Mutex<
        std::collections::HashMap<SocketAddr, Vec<(TcpStream, std::time::Instant)>>,
    >,
    /// When each datacenter's unanswered reads were last logged.
    warned: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// An unanswered read for a datacenter is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Datacenters whose last warning is remembered (a caller may name any).
const WARNED_MAX: usize = 64;

impl Forwarder {
    pub fn new(
        datacenter: String,
        envelope: Envelope,
        lan: watch::Receiver<Arc<Snapshot>>,
        wan: Option<WanView>,
        local_ip: Option<IpAddr>,
        faults: Arc<crate::fault::FaultInjection>,
    ) -> Self {
        let counters = Arc::new(WanCounters::default());
        if let Some(pool) = &wan {
            let _ = counters.pool.set(pool.clone());
        }
        Self {
            datacenter,
            envelope,
            lan,
            wan,
            local_ip: local_ip.filter(|ip| !ip.is_unspecified()),
            faults,
            counters,
            outgoing: Arc::new(Semaphore::new(MAX_FORWARDS_OUT)),
            idle: Default::default(),
            warned: Default::default(),
        }
    }

    /// Whether reads for other datacenters have a way out: this agent is a
    /// WAN member, or a live member of its datacenter is. Without one,
    /// DNS answers names of other datacenters from our own catalog (with
    /// nothing), as a lone datacenter always has.
    pub fn federated(&self) -> bool {
        if self.wan.is_some() {
            return true;
        }
        !lan_wan_members(&self.lan.borrow()).is_empty()
    }

    /// The datacenters this agent knows of: ours, and (on a WAN member)
    /// every datacenter of a live WAN member.
    pub fn known_datacenters(&self) -> Vec<String> {
        let mut known = vec![self.datacenter.clone()];
        if let Some(wan) = &self.wan {
            let snapshot = wan.snapshot_rx.borrow();
            for member in snapshot.members.iter() {
                if member.status == MemberStatus::Alive
                    && let Some(record) = &member.record
                    && !known.contains(&record.datacenter)
                {
                    known.push(record.datacenter.clone());
                }
            }
        }
        known
    }

    /// Where `request` goes next, in the order to try, with how many hops
    /// it then has taken, and whether it goes to WAN members of ours
    /// (which then try the target's agents themselves).
    fn route(&self, request: &ForwardRequest) -> Result<(Vec<SocketAddr>, u8, bool), ForwardError> {
        let dc = &request.datacenter;
        let (mut targets, hops, ours) = match &self.wan {
            Some(wan) if !dc.eq_ignore_ascii_case(&self.datacenter) => {
                let targets = wan.live_members_of(dc);
                if targets.is_empty() {
                    let known = self.known_datacenters().join(", ");
                    return Err(ForwardError::NoRoute(format!(
                        "dc: no live WAN member of datacenter `{dc}` (the WAN pool has live members of: {known})"
                    )));
                }
                (targets, request.hops + 1, false)
            }
            _ => {
                let targets: Vec<SocketAddr> = lan_wan_members(&self.lan.borrow())
                    .into_iter()
                    .map(|(_, addr)| addr)
                    .collect();
                if targets.is_empty() {
                    return Err(ForwardError::NoRoute(format!(
                        "dc: no live agent of datacenter `{}` is a WAN member (start a few with --wan), so datacenter `{dc}` is out of reach",
                        self.datacenter
                    )));
                }
                (targets, request.hops, true)
            }
        };
        targets.shuffle(&mut rand::rng());
        targets.truncate(FORWARD_ATTEMPTS);
        Ok((targets, hops, ours))
    }

    /// A read this agent makes (its API's, its DNS's) for another
    /// datacenter: [`Forwarder::forward`], counted as sent.
    pub async fn send(
        &self,
        request: ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResponse, ForwardError> {
        self.counters.reads_sent.fetch_add(1, Ordering::Relaxed);
        let datacenter = request.datacenter.clone();
        let answer = self.forward(request, timeout).await;
        if let Err(error) = &answer {
            self.counters
                .reads_unanswered
                .fetch_add(1, Ordering::Relaxed);
            self.warn_unanswered(&datacenter, error);
        }
        answer
    }

    /// Logs an unanswered read at warn, once a minute per datacenter.
    fn warn_unanswered(&self, datacenter: &str, error: &ForwardError) {
        let now = std::time::Instant::now();
        let mut warned = self.warned.lock().expect("warned lock poisoned");
        if warned
            .get(datacenter)
            .is_some_and(|last| now.duration_since(*last) < WARN_EVERY)
        {
            return;
        }
        if warned.len() >= WARNED_MAX {
            warned.clear();
        }
        warned.insert(datacenter.to_string(), now);
        tracing::warn!(%datacenter, "a read for datacenter `{datacenter}` got no answer (again within a minute: counted in shoal_wan_reads_unanswered_total, not logged): {error}");
    }

    /// Sends `request` on and returns the answer, trying up to
    /// [`FORWARD_ATTEMPTS`] agents. Each attempt at an agent of the target
    /// may take `timeout`; through WAN members of ours, which make those
    /// attempts, the whole read may take all of them and
    /// [`ATTEMPT_TIMEOUT`] more, whichever of ours it goes through (so
    /// that the WAN member's own answer, with its reason, comes back in
    /// time, and a second one is tried only with the time left).
    pub async fn forward(
        &self,
        mut request: ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResponse, ForwardError> {
        let (targets, hops, ours) = self.route(&request)?;
        let deadline = ours.then(|| {
            std::time::Instant::now() + timeout * FORWARD_ATTEMPTS as u32 + ATTEMPT_TIMEOUT
        });
        if hops > MAX_HOPS {
            return Err(ForwardError::NoRoute(format!(
                "dc: this read for `{}` already went through a WAN member; it is not sent further",
                request.datacenter
            )));
        }
        request.hops = hops;
        let Ok(_permit) = self.outgoing.clone().try_acquire_owned() else {
            self.counters.reads_busy.fetch_add(1, Ordering::Relaxed);
            return Err(ForwardError::Busy);
        };
        let mut failures = Vec::new();
        for target in targets {
            let limit = deadline.map_or(timeout, |deadline| {
                deadline.saturating_duration_since(std::time::Instant::now())
            });
            if limit.is_zero() {
                break;
            }
            let attempt = tokio::time::timeout(limit, self.ask(target, &request)).await;
            match attempt {
                Ok(Ok(response)) if !is_forward_error(&response) => return Ok(response),
                Ok(Ok(response)) => failures.push(format!("{target}: {}", error_text(&response))),
                Ok(Err(error)) => failures.push(format!("{target}: {error}")),
                Err(_) => failures.push(format!("{target}: no answer within {limit:.1?}")),
            }
        }
        Err(ForwardError::Failed(format!(
            "dc: no answer from datacenter `{}`: {}",
            request.datacenter,
            failures.join("; ")
        )))
    }

    /// One attempt: the request to `target` and its answer, on a kept
    /// connection when there is one (if the other side closed it
    /// meanwhile, the read is asked again on a new one: reads can be
    /// repeated), else on a new connection; kept afterwards.
    async fn ask(
        &self,
        target: SocketAddr,
        request: &ForwardRequest,
    ) -> Result<ForwardResponse, FrameError> {
        if self.faults.is_blocked(target.ip()) {
            self.idle
                .lock()
                .expect("idle lock poisoned")
                .remove(&target);
            return Err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "blocked by fault injection",
            )));
        }
        if let Some(mut stream) = self.kept(target)
            && let Ok(response) = exchange(&mut stream, &self.envelope, request).await
        {
            self.keep(target, stream);
            return Ok(response);
        }
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(target))
            .await
            .map_err(|_| {
                FrameError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {CONNECT_TIMEOUT:?}"),
                ))
            })??;
        self.counters
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        stream.set_nodelay(true)?;
        let response = exchange(&mut stream, &self.envelope, request).await?;
        self.keep(target, stream);
        Ok(response)
    }

    /// A kept connection to `target` that has not waited too long.
    fn kept(&self, target: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.idle.lock().expect("idle lock poisoned");
        let streams = idle.get_mut(&target)?;
        let now = std::time::Instant::now();
        let found = std::iter::from_fn(|| streams.pop())
            .find(|(_, since)| now.duration_since(*since) < IDLE_KEEP)
            .map(|(stream, _)| stream);
        if streams.is_empty() {
            idle.remove(&target);
        }
        found
    }

    /// Keeps `stream` to `target` for the next read, within the limits
    /// (past them, it is closed); drops the ones that waited too long.
    fn keep(&self, target: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle.lock().expect("idle lock poisoned");
        let now = std::time::Instant::now();
        idle.retain(|_, streams| {
            streams.retain(|(_, since)| now.duration_since(*since) < IDLE_KEEP);
            !streams.is_empty()
        });
        let total: usize = idle.values().map(Vec::len).sum();
        let streams = idle.entry(target).or_default();
        if total < IDLE_MAX && streams.len() < IDLE_PER_TARGET {
            streams.push((stream, now));
        }
    }

    async fn connect(&self, peer: SocketAddr) -> std::io::Result<TcpStream> {
        crate::frame::connect_from(self.local_ip, peer).await
    }
}

/// A request and its answer on `stream`.
async fn exchange(
    stream: &mut TcpStream,
    envelope: &Envelope,
    request: &ForwardRequest,
) -> Result<ForwardResponse, FrameError> {
    write_frame(stream, envelope, request).await?;
    read_frame(stream, envelope, MAX_FRAME).await
}

/// What an error answer says: its JSON `error`, else its body.
fn error_text(response: &ForwardResponse) -> String {
    serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|body| body["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&response.body).into_owned())
}

/// Whether a forwarder (not the target's API) made this answer.
fn is_forward_error(response: &ForwardResponse) -> bool {
    response
        .headers
        .iter()
        .any(|(name, _)| name == FORWARD_ERROR_HEADER)
}

/// A forwarder's own answer: no agent of the target gave one.
pub fn forward_error(status: u16, message: &str) -> ForwardResponse {
    let mut response = ForwardResponse::error(status, message);
    response
        .headers
        .push((FORWARD_ERROR_HEADER.into(), "1".into()));
    response
}

/// Writes `message` as one forwarded-read frame, in the newest wire
/// version this agent speaks (every WAN member speaks it).
pub async fn write_frame<T: bincode::Encode>(
    stream: &mut TcpStream,
    envelope: &Envelope,
    message: &T,
) -> Result<usize, FrameError> {
    crate::frame::write(
        stream,
        envelope,
        envelope.range().max,
        PayloadKind::Forward,
        message,
    )
    .await
}

/// Reads one forwarded-read frame of at most `limit` bytes.
pub async fn read_frame<T: bincode::Decode<()>>(
    stream: &mut TcpStream,
    envelope: &Envelope,
    limit: usize,
) -> Result<T, FrameError> {
    Ok(
        crate::frame::read(stream, envelope, limit, PayloadKind::Forward)
            .await?
            .0,
    )
}
