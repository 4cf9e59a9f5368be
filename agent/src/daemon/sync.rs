//! Anti-entropy push-pull over TCP (see `shoal_protocol::sync`): the
//! initiator side, the responder side, and framing. All of it runs in its
//! own tasks; the gossip loop only answers through the
//! [`AgentHandle`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_protocol::codec::{self, DecodeError, MAX_FRAME};
use shoal_protocol::envelope::{Envelope, PayloadKind};
use shoal_protocol::sync::{SyncMessage, SyncStep};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handle::AgentHandle;

/// How long one whole exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Exchanges running at once, each way; more are skipped, not queued.
const MAX_EXCHANGES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    FrameTooLarge(usize),
    #[error("bad envelope: {0}")]
    Envelope(#[from] shoal_protocol::envelope::EnvelopeError),
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    #[error("expected a sync frame, got a {0:?} envelope")]
    WrongKind(PayloadKind),
    #[error("expected {expected}, got {got}: steps out of order")]
    OutOfOrder { expected: SyncStep, got: SyncStep },
    #[error("the gossip loop answered {to} with {answer:?} instead of {expected:?}")]
    WrongAnswer {
        to: SyncStep,
        expected: Option<SyncStep>,
        answer: Option<SyncStep>,
    },
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
    outgoing: Arc<Semaphore>,
    incoming: Arc<Semaphore>,
    tracker: TaskTracker,
    faults: Arc<super::fault::FaultInjection>,
}

impl SyncService {
    pub fn new(
        envelope: Envelope,
        agent: AgentHandle,
        tracker: TaskTracker,
        faults: Arc<super::fault::FaultInjection>,
    ) -> Self {
        Self {
            envelope,
            agent,
            outgoing: Arc::new(Semaphore::new(MAX_EXCHANGES)),
            incoming: Arc::new(Semaphore::new(MAX_EXCHANGES)),
            tracker,
            faults,
        }
    }

    /// Starts an exchange with `peer` in the background; returns false when
    /// too many are running already.
    pub fn initiate(&self, peer: SocketAddr, digest: SyncMessage) -> bool {
        if self.faults.is_blocked(peer.ip()) {
            return true;
        }
        let Ok(permit) = self.outgoing.clone().try_acquire_owned() else {
            return false;
        };
        let service = self.clone();
        self.tracker.spawn(async move {
            let _permit = permit;
            let result = tokio::time::timeout(EXCHANGE_TIMEOUT, service.exchange(peer, digest))
                .await
                .unwrap_or(Err(SyncError::Timeout));
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "anti-entropy exchange failed");
            }
        });
        true
    }

    /// The initiator's side: Digest out, Delta in, Records out.
    async fn exchange(&self, peer: SocketAddr, digest: SyncMessage) -> Result<(), SyncError> {
        let mut stream = TcpStream::connect(peer).await?;
        stream.set_nodelay(true)?;
        write_frame(&mut stream, &self.envelope, &digest).await?;
        let delta = read_step(&mut stream, &self.envelope, SyncStep::Delta).await?;
        // `step` checked that the answer is the closing Records.
        if let Some(records) = self.step(delta).await? {
            write_frame(&mut stream, &self.envelope, &records).await?;
        }
        stream.shutdown().await?;
        Ok(())
    }

    /// Accepts exchanges until `shutdown`.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) {
        let mut rate = super::rate::PeerRateLimit::default();
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
            if !rate.allow(peer.ip(), std::time::Instant::now()) {
                if rate.refused.is_power_of_two() {
                    tracing::warn!(%peer, refused = rate.refused, "anti-entropy exchanges too frequent from this peer; closing");
                }
                continue;
            }
            let Ok(permit) = self.incoming.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "too many anti-entropy exchanges; closing");
                continue;
            };
            let service = self.clone();
            self.tracker.spawn(async move {
                let _permit = permit;
                let result = tokio::time::timeout(EXCHANGE_TIMEOUT, service.respond(stream))
                    .await
                    .unwrap_or(Err(SyncError::Timeout));
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "anti-entropy exchange refused");
                }
            });
        }
    }

    /// The responder's side: Digest in, Delta out, Records in.
    async fn respond(&self, mut stream: TcpStream) -> Result<(), SyncError> {
        stream.set_nodelay(true)?;
        let digest = read_step(&mut stream, &self.envelope, SyncStep::Digest).await?;
        // `step` checked that the answer is a Delta.
        if let Some(delta) = self.step(digest).await? {
            write_frame(&mut stream, &self.envelope, &delta).await?;
        }
        let records = read_step(&mut stream, &self.envelope, SyncStep::Records).await?;
        self.step(records).await?;
        Ok(())
    }

    /// Hands one received message to the gossip loop (`Node::on_sync`) and
    /// returns its answer, checked to be the step that follows.
    async fn step(&self, message: SyncMessage) -> Result<Option<SyncMessage>, SyncError> {
        let to = message.step();
        let answer = self
            .agent
            .sync(message)
            .await
            .map_err(|_| SyncError::Closed)?;
        let expected = to.reply();
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

async fn write_frame(
    stream: &mut TcpStream,
    envelope: &Envelope,
    message: &SyncMessage,
) -> Result<(), SyncError> {
    let packet = envelope.seal(PayloadKind::Sync, &codec::encode(message), rand::random());
    if packet.len() > MAX_FRAME {
        return Err(SyncError::FrameTooLarge(packet.len()));
    }
    let mut frame = Vec::with_capacity(4 + packet.len());
    frame.extend_from_slice(&(packet.len() as u32).to_be_bytes());
    frame.extend_from_slice(&packet);
    stream.write_all(&frame).await?;
    Ok(())
}

async fn read_frame(stream: &mut TcpStream, envelope: &Envelope) -> Result<SyncMessage, SyncError> {
    let length = stream.read_u32().await? as usize;
    if length > MAX_FRAME {
        return Err(SyncError::FrameTooLarge(length));
    }
    let mut frame = vec![0u8; length];
    stream.read_exact(&mut frame).await?;
    let (kind, payload) = envelope.open(&frame)?;
    if kind != PayloadKind::Sync {
        return Err(SyncError::WrongKind(kind));
    }
    Ok(codec::decode_frame(&payload)?)
}

/// Reads the next message and checks that it is the step `expected`.
async fn read_step(
    stream: &mut TcpStream,
    envelope: &Envelope,
    expected: SyncStep,
) -> Result<SyncMessage, SyncError> {
    let message = read_frame(stream, envelope).await?;
    let got = message.step();
    if got != expected {
        return Err(SyncError::OutOfOrder { expected, got });
    }
    Ok(message)
}
