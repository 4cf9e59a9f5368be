//! Anti-entropy push-pull over TCP (see `shoal_protocol::anti_entropy`): the
//! initiator side, the responder side, and framing. All of it runs in its
//! own tasks; the core loop only merges through the [`AgentHandle`]:
//! our next KV page (up to [`shoal_protocol::anti_entropy::PAGE_BYTES`] of entries
//! walked out of the store) is built here, on the blocking pool, from the
//! published snapshot's store (see `shoal_protocol::node::build_page`).
//!
//! What a connection may cost before it has shown anything (a frame that
//! opens with the cluster's key, or in a plaintext cluster a well-formed
//! digest):
//!
//! - its first frame (the digest) must arrive within
//!   [`FIRST_FRAME_DEADLINE`], and may be at most [`FIRST_FRAME_MAX`]
//!   bytes: the agent allocates no more than that for a stranger;
//! - one source IP holds at most [`MAX_PER_PEER`] exchanges at once, and
//!   opens them at a bounded rate (see `rate`); the agent serves at most
//!   `MAX_EXCHANGES` at once; connections past these limits are closed at
//!   once, not queued.
//!
//! After the first frame, each frame (at most [`MAX_FRAME`]) must arrive
//! within `FRAME_TIMEOUT`, and a whole exchange, however many KV pages it
//! carries, ends within `EXCHANGE_TIMEOUT` and `MAX_STEPS` messages.
//!
//! Outgoing exchanges leave from the address the agent is bound to (when
//! it is bound to one), so peers see, and limit, each agent by its own
//! address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::anti_entropy::{SyncMessage, SyncStep};
use shoal_protocol::codec::{DecodeError, MAX_FRAME};
use shoal_protocol::envelope::{Envelope, EnvelopeError, PayloadKind};
use shoal_protocol::node::build_page;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::anti_entropy_counters::{AntiEntropyCounters, Outcome, Role};
use super::rate::{MAX_PER_PEER, PeerRateLimit, PeerSlots};
use crate::frame::{self, FrameError};
use crate::handle::AgentHandle;
use crate::snapshot::Snapshot;

/// How long a connection may take to send its first frame.
pub const FIRST_FRAME_DEADLINE: Duration = Duration::from_secs(2);
/// Largest first frame (a digest) accepted, envelope included. A digest
/// carries, per member, its record's name and order and its identity:
/// with names at their 128-byte limit that is about 160 bytes, so 2 MiB
/// holds a 10,000-member cluster (1.6 MB; 0.6 MB with 30-byte names).
pub const FIRST_FRAME_MAX: usize = 2 * 1024 * 1024;
/// How long any later frame may take.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one whole exchange may take: long enough for a few hundred
/// KV pages on a slow link.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `shoal join` waits for the exchange with an address: one
/// with a live agent takes milliseconds.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most messages in one exchange: a store of 4 GiB in 2 MiB pages, both
/// ways. Only a peer that keeps asking for the same pages gets near it.
const MAX_STEPS: usize = 4096;
/// Exchanges running at once, each way; more are skipped, not queued.
const MAX_EXCHANGES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("bad envelope: {0}")]
    Envelope(#[from] shoal_protocol::envelope::EnvelopeError),
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    #[error("expected a sync frame, got a {0:?} envelope")]
    WrongKind(PayloadKind),
    #[error("expected {expected}, got {got}: steps out of order")]
    OutOfOrder { expected: SyncStep, got: SyncStep },
    #[error("the core loop answered {to} with {answer:?} instead of {expected:?}")]
    WrongAnswer {
        to: SyncStep,
        expected: Option<SyncStep>,
        answer: Option<SyncStep>,
    },
    #[error("more than {MAX_STEPS} messages in one exchange")]
    TooManySteps,
    #[error("the agent is shutting down")]
    Closed,
    #[error("timed out")]
    Timeout,
}

/// Starts exchanges and serves them, sharing the limits.
#[derive(Clone)]
pub struct SyncService {
    envelope: Envelope,
    agent: AgentHandle,
    /// Our KV pages are built from the published snapshot's store.
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// The address outgoing exchanges leave from, when bound to one.
    local_ip: Option<IpAddr>,
    outgoing: Arc<Semaphore>,
    incoming: Arc<Semaphore>,
    per_peer: Arc<PeerSlots>,
    tracker: TaskTracker,
    faults: Arc<crate::fault::FaultInjection>,
    counters: Arc<AntiEntropyCounters>,
    /// Peers whose frames are in a wire version we don't speak.
    refusals: Arc<std::sync::Mutex<super::wire::RefusalLog>>,
    /// On the WAN listener: forwarded reads are served too.
    forward: Option<Arc<ForwardListener>>,
}

/// The WAN listener's forwarded reads, and how many connections may be
/// waiting to show what they carry, in all and from one address.
struct ForwardListener {
    server: Arc<super::forward::ForwardServer>,
    pending: Arc<Semaphore>,
    pending_per_peer: Arc<PeerSlots>,
}

/// Connections on the WAN listener waiting for their first frame's header.
const MAX_PENDING: usize = 128;
/// Of those, from one source IP.
const MAX_PENDING_PER_PEER: usize = 8;

/// The payload kind of the first frame on `stream`, from its header
/// (not consumed), once it arrived within [`FIRST_FRAME_DEADLINE`].
async fn peek_kind(stream: &TcpStream) -> Option<PayloadKind> {
    // The frame's length, then the envelope's magic, version and kind.
    let mut header = [0u8; 10];
    tokio::time::timeout(FIRST_FRAME_DEADLINE, async {
        loop {
            let read = stream.peek(&mut header).await.ok()?;
            if read == header.len() {
                return Some(());
            }
            if read == 0 {
                return None;
            }
            // Part of it: wait for more.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .ok()??;
    match header[9] {
        3 => Some(PayloadKind::Forward),
        _ => Some(PayloadKind::Sync),
    }
}

impl SyncService {
    pub fn new(
        envelope: Envelope,
        agent: AgentHandle,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        local_ip: Option<IpAddr>,
        tracker: TaskTracker,
        faults: Arc<crate::fault::FaultInjection>,
    ) -> Self {
        let refusals = Arc::new(std::sync::Mutex::new(super::wire::RefusalLog::new(
            envelope.range(),
        )));
        Self {
            envelope,
            agent,
            snapshots,
            local_ip: local_ip.filter(|ip| !ip.is_unspecified()),
            outgoing: Arc::new(Semaphore::new(MAX_EXCHANGES)),
            incoming: Arc::new(Semaphore::new(MAX_EXCHANGES)),
            per_peer: Arc::new(PeerSlots::default()),
            tracker,
            refusals,
            faults,
            counters: Arc::default(),
            forward: None,
        }
    }

    /// Serves the reads other agents forward through this one (the WAN
    /// listener's).
    pub fn with_forward(mut self, server: Arc<super::forward::ForwardServer>) -> Self {
        self.forward = Some(Arc::new(ForwardListener {
            server,
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            pending_per_peer: Arc::new(PeerSlots::with_max(MAX_PENDING_PER_PEER)),
        }));
        self
    }

    /// The counters of exchanges, bytes and durations.
    pub fn counters(&self) -> Arc<AntiEntropyCounters> {
        self.counters.clone()
    }

    /// Starts an exchange with `peer` in the background; returns false when
    /// too many are running already.
    pub fn initiate(&self, peer: SocketAddr, digest: SyncMessage) -> bool {
        if self.faults.is_blocked(peer.ip()) {
            return true;
        }
        let Ok(permit) = self.outgoing.clone().try_acquire_owned() else {
            self.counters
                .exchange(Role::Initiated, Outcome::Refused, Duration::ZERO, 0);
            return false;
        };
        let service = self.clone();
        self.tracker.spawn(async move {
            let _permit = permit;
            let started = std::time::Instant::now();
            let result = tokio::time::timeout(EXCHANGE_TIMEOUT, service.exchange(peer, digest))
                .await
                .unwrap_or(Err(SyncError::Timeout));
            service.count(Role::Initiated, &result, started);
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "anti-entropy exchange failed");
            }
        });
        true
    }

    /// The exchange of `shoal join`: like [`SyncService::initiate`], but
    /// waiting for a slot rather than skipping, bounded by
    /// [`JOIN_TIMEOUT`], and answering `reply` with how it ended. Each
    /// attempt is logged: info when the address answered, warn with the
    /// reason when not.
    pub fn join(
        &self,
        peer: SocketAddr,
        digest: SyncMessage,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    ) {
        let service = self.clone();
        self.tracker.spawn(async move {
            let started = std::time::Instant::now();
            let result = tokio::time::timeout(JOIN_TIMEOUT, async {
                let _permit = service
                    .outgoing
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| SyncError::Closed)?;
                service.exchange(peer, digest).await
            })
            .await
            .unwrap_or(Err(SyncError::Timeout));
            service.count(Role::Initiated, &result, started);
            let answer = match result {
                Ok(_) => {
                    tracing::info!(%peer, "join: reached {peer} and exchanged state with it");
                    Ok(())
                }
                Err(error) => {
                    let reason = match error {
                        SyncError::Timeout => format!("no answer within {JOIN_TIMEOUT:?}"),
                        error => error.to_string(),
                    };
                    tracing::warn!(%peer, %reason, "join: could not reach {peer}: {reason}");
                    Err(reason)
                }
            };
            let _ = reply.send(answer);
        });
    }

    /// Counts an exchange that ended with `result` (bytes moved, or why
    /// it failed).
    fn count(&self, role: Role, result: &Result<u64, SyncError>, started: std::time::Instant) {
        let (outcome, bytes) = match result {
            Ok(bytes) => (Outcome::Completed, *bytes),
            Err(SyncError::Timeout) => (Outcome::Timeout, 0),
            Err(_) => (Outcome::Failed, 0),
        };
        self.counters
            .exchange(role, outcome, started.elapsed(), bytes);
    }

    /// The initiator's side: our digest out, then answer until done.
    /// Returns the bytes moved both ways.
    async fn exchange(&self, peer: SocketAddr, digest: SyncMessage) -> Result<u64, SyncError> {
        let mut stream = self.connect(peer).await?;
        stream.set_nodelay(true)?;
        // The highest wire version both speak, from the record of the
        // identity at that address (of an earlier one, after a restart,
        // it may no longer hold: see `ClusterState::wire_range_of`).
        let theirs = self
            .snapshots
            .borrow()
            .members
            .iter()
            .find(|member| member.id.addr == peer)
            .and_then(|member| member.record.as_ref().filter(|r| r.id == member.id))
            .map(|record| record.wire_range());
        let version = self.envelope.version_for(theirs);
        let bytes = self.converse(&mut stream, digest, 0, version).await?;
        stream.shutdown().await?;
        Ok(bytes)
    }

    /// A connection to `peer` from our own address.
    async fn connect(&self, peer: SocketAddr) -> std::io::Result<TcpStream> {
        frame::connect_from(self.local_ip, peer).await
    }

    /// Accepts exchanges until `shutdown`; on the WAN listener (with
    /// [`SyncService::with_forward`]), forwarded reads too.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let rate = Arc::new(std::sync::Mutex::new(PeerRateLimit::default()));
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accepting an anti-entropy connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.faults.is_blocked(peer.ip()) {
                continue;
            }
            let Some(forward) = self.forward.clone() else {
                if let Some(held) = self.admit(peer, &rate) {
                    let service = self.clone();
                    self.tracker
                        .spawn(async move { service.serve_exchange(stream, peer, held).await });
                }
                continue;
            };
            // Which of the two it is shows in its first frame's header,
            // awaited in a task of its own (a bounded number of them).
            let Some(pending_here) = forward.pending_per_peer.take(peer.ip()) else {
                tracing::debug!(%peer, "{MAX_PENDING_PER_PEER} connections opening from this address on the WAN listener already; closing");
                continue;
            };
            let Ok(pending) = forward.pending.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "too many connections opening on the WAN listener; closing");
                continue;
            };
            let service = self.clone();
            let rate = rate.clone();
            self.tracker.spawn(async move {
                let kind = peek_kind(&stream).await;
                drop((pending, pending_here));
                match kind {
                    Some(PayloadKind::Forward) => {
                        if let Err(error) = forward.server.serve(stream, &service.envelope).await {
                            tracing::debug!(%peer, %error, "forwarded read failed");
                        }
                    }
                    Some(_) => {
                        if let Some(held) = service.admit(peer, &rate) {
                            service.serve_exchange(stream, peer, held).await;
                        }
                    }
                    None => tracing::debug!(%peer, "no frame header in time; closing"),
                }
            });
        }
    }

    /// The limits an exchange from `peer` must pass (per-peer slots, the
    /// rate, the total): what it holds while it runs, or `None` (counted
    /// and closed).
    fn admit(
        &self,
        peer: SocketAddr,
        rate: &std::sync::Mutex<PeerRateLimit>,
    ) -> Option<(tokio::sync::OwnedSemaphorePermit, super::rate::PeerSlot)> {
        let refused = || {
            self.counters
                .exchange(Role::Served, Outcome::Refused, Duration::ZERO, 0)
        };
        let Some(slot) = self.per_peer.take(peer.ip()) else {
            refused();
            tracing::debug!(%peer, "{MAX_PER_PEER} anti-entropy exchanges from this address already; closing");
            return None;
        };
        {
            let mut rate = rate.lock().expect("rate limit lock poisoned");
            if !rate.allow(peer.ip(), std::time::Instant::now()) {
                refused();
                if rate.refused.is_power_of_two() {
                    tracing::warn!(%peer, refused = rate.refused, "anti-entropy exchanges too frequent from this peer; closing");
                }
                return None;
            }
        }
        let Ok(permit) = self.incoming.clone().try_acquire_owned() else {
            refused();
            tracing::debug!(%peer, "too many anti-entropy exchanges; closing");
            return None;
        };
        Some((permit, slot))
    }

    /// Serves one admitted exchange to its end.
    async fn serve_exchange(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        held: (tokio::sync::OwnedSemaphorePermit, super::rate::PeerSlot),
    ) {
        let _held = held;
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(EXCHANGE_TIMEOUT, self.respond(stream))
            .await
            .unwrap_or(Err(SyncError::Timeout));
        self.count(Role::Served, &result, started);
        match result {
            Err(SyncError::Envelope(EnvelopeError::UnknownVersion { theirs, .. })) => {
                self.refusals
                    .lock()
                    .expect("refusal log lock poisoned")
                    .note(peer, theirs, "tcp", None, std::time::Instant::now());
            }
            Err(error) => tracing::debug!(%peer, %error, "anti-entropy exchange refused"),
            Ok(_) => {}
        }
    }

    /// The responder's side: a digest in, quickly and small, then answer
    /// until done.
    async fn respond(&self, mut stream: TcpStream) -> Result<u64, SyncError> {
        stream.set_nodelay(true)?;
        let (first, read, version) = tokio::time::timeout(
            FIRST_FRAME_DEADLINE,
            read_frame(&mut stream, &self.envelope, FIRST_FRAME_MAX),
        )
        .await
        .map_err(|_| SyncError::Timeout)??;
        self.counters.received(read);
        expect(&first, SyncStep::Digest)?;
        let Some(delta) = self.step(first).await? else {
            return Ok(read as u64);
        };
        // Answered in the version the initiator chose (one we speak: the
        // frame opened).
        self.converse(&mut stream, delta, read as u64, version)
            .await
    }

    /// Sends `message`, then reads and answers until a message closes the
    /// exchange (either side's). Returns `bytes` plus the bytes it moved.
    async fn converse(
        &self,
        stream: &mut TcpStream,
        mut message: SyncMessage,
        mut bytes: u64,
        version: u8,
    ) -> Result<u64, SyncError> {
        for _ in 0..MAX_STEPS {
            let written = write_frame(stream, &self.envelope, version, &message).await?;
            self.counters.sent(written);
            bytes += written as u64;
            let Some(expected) = message.expects() else {
                return Ok(bytes);
            };
            let (incoming, read, _) =
                tokio::time::timeout(FRAME_TIMEOUT, read_frame(stream, &self.envelope, MAX_FRAME))
                    .await
                    .map_err(|_| SyncError::Timeout)??;
            self.counters.received(read);
            bytes += read as u64;
            expect(&incoming, expected)?;
            match self.step(incoming).await? {
                Some(answer) => message = answer,
                None => return Ok(bytes),
            }
        }
        Err(SyncError::TooManySteps)
    }

    /// Builds our page for one received message from the latest snapshot
    /// (on the blocking pool: a page walks and copies up to 2 MiB), hands
    /// both to the core loop (`Node::on_sync_with`), which merges the
    /// peer's side, and returns its answer, checked to be the step the
    /// message expects.
    async fn step(&self, message: SyncMessage) -> Result<Option<SyncMessage>, SyncError> {
        let to = message.step();
        let expected = message.expects();
        let kv = self.snapshots.borrow().kv.clone();
        let (message, ours) = tokio::task::spawn_blocking(move || {
            let ours = build_page(&kv, &message, |len| rand::random_range(0..len));
            (message, ours)
        })
        .await
        .map_err(|_| SyncError::Closed)?;
        let answer = self
            .agent
            .sync(message, ours)
            .await
            .map_err(|_| SyncError::Closed)?;
        if answer.as_ref().map(SyncMessage::step) != expected {
            return Err(SyncError::WrongAnswer {
                to,
                expected,
                answer: answer.as_ref().map(SyncMessage::step),
            });
        }
        Ok(answer)
    }
}

/// Checks that `message` is the step `expected`.
fn expect(message: &SyncMessage, expected: SyncStep) -> Result<(), SyncError> {
    let got = message.step();
    if got != expected {
        return Err(SyncError::OutOfOrder { expected, got });
    }
    Ok(())
}

/// Writes one frame; returns its length on the wire.
async fn write_frame(
    stream: &mut TcpStream,
    envelope: &Envelope,
    version: u8,
    message: &SyncMessage,
) -> Result<usize, SyncError> {
    Ok(frame::write(stream, envelope, version, PayloadKind::Sync, message).await?)
}

/// Reads one frame of at most `limit` bytes: a longer one is refused from
/// its length prefix, before anything is allocated for it. Returns the
/// message, the frame's length on the wire and its wire version.
async fn read_frame(
    stream: &mut TcpStream,
    envelope: &Envelope,
    limit: usize,
) -> Result<(SyncMessage, usize, u8), SyncError> {
    Ok(frame::read(stream, envelope, limit, PayloadKind::Sync).await?)
}

impl From<FrameError> for SyncError {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::Io(error) => SyncError::Io(error),
            FrameError::TooLarge { size, limit } => SyncError::FrameTooLarge { size, limit },
            FrameError::Envelope(error) => SyncError::Envelope(error),
            FrameError::Decode(error) => SyncError::Decode(error),
            FrameError::WrongKind { got, .. } => SyncError::WrongKind(got),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::NodeId;
    use shoal_protocol::anti_entropy::{Digest, DigestEntry};
    use shoal_protocol::codec;
    use shoal_protocol::envelope::cluster_id;
    use shoal_protocol::keyring::{KEY_LEN, Keyring};

    /// The digest of a 10,000-member cluster whose names all have the
    /// longest length allowed fits in a first frame, sealed.
    #[test]
    fn a_large_cluster_digest_fits_in_a_first_frame() {
        let members = 10_000u32;
        let generation = 1_800_000_000_000; // a wall clock in ms, as agents use
        let digest = SyncMessage::Digest(Digest {
            nodes: (0..members)
                .map(|i| DigestEntry {
                    name: format!("{i:0>128}"),
                    generation,
                    version: 100_000,
                })
                .collect(),
            kv_root: u64::MAX,
            kv_bucket_hashes: vec![u64::MAX; shoal_protocol::kv::BUCKETS],
            members: (0..members)
                .map(|i| NodeId {
                    addr: SocketAddr::from((i.to_be_bytes(), 65535)),
                    generation,
                })
                .collect(),
            kv_horizon: u64::MAX,
            nodes_hash: u64::MAX,
            members_hash: u64::MAX,
            summary: false,
        });
        let sealed = Envelope::with_keyring(
            cluster_id("shoal"),
            Keyring::with_primary([1; KEY_LEN]),
        )
        .seal(PayloadKind::Sync, &codec::encode(&digest), [0; 24]);
        eprintln!("a 10,000-member digest, sealed: {} bytes", sealed.len());
        assert!(
            sealed.len() <= FIRST_FRAME_MAX,
            "{} bytes for 10,000 members",
            sealed.len()
        );
        assert!(sealed.len() > FIRST_FRAME_MAX / 2, "the cap is not loose");
    }
}
