//! Why a seed doesn't answer. Joining is a UDP announce that foca retries
//! with backoff, and UDP says nothing when it fails: no "connection
//! refused", no "wrong cluster". So when the agent has been alone for a
//! while despite its seeds (or a seed stays out of the member list), it
//! asks each silent seed over TCP, on the same port (the anti-entropy
//! listener), which tells the cases apart: nothing listening, no answer at
//! all, an HTTP server (the API port given instead of the gossip port), an
//! agent that hangs up on our first frame (another cluster name or
//! encryption key), or an agent of this cluster that answers over TCP (so
//! UDP is what is blocked).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use shoal_protocol::anti_entropy::{Digest, SyncMessage};
use shoal_protocol::codec;
use shoal_protocol::envelope::{Envelope, PayloadKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long each step of a probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a seed did not let us join, as far as a TCP probe can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedProblem {
    Refused,
    ConnectTimeout,
    Unreachable(String),
    Http,
    NotShoal,
    HungUp,
    Silent,
    /// It answers as an agent of this cluster over TCP: UDP is blocked,
    /// or it was busy.
    UdpOnly,
}

impl SeedProblem {
    /// One word for the `reason` field.
    pub fn reason(&self) -> &'static str {
        match self {
            SeedProblem::Refused => "connection refused",
            SeedProblem::ConnectTimeout => "timeout",
            SeedProblem::Unreachable(_) => "unreachable",
            SeedProblem::Http => "http port",
            SeedProblem::NotShoal => "not a shoal agent",
            SeedProblem::HungUp => "wrong cluster or key",
            SeedProblem::Silent => "no answer",
            SeedProblem::UdpOnly => "udp blocked",
        }
    }

    /// What it means and what to do.
    pub fn explain(&self, seed: SocketAddr) -> String {
        let secs = PROBE_TIMEOUT.as_secs();
        match self {
            SeedProblem::Refused => format!(
                "connection refused: nothing listens on {seed}; is an agent running there, with this gossip address (--bind)?"
            ),
            SeedProblem::ConnectTimeout => format!(
                "timeout: no answer from {seed} within {secs}s; the host is down, or a firewall drops the traffic"
            ),
            SeedProblem::Unreachable(error) => format!("cannot reach {seed}: {error}"),
            SeedProblem::Http => format!(
                "{seed} is an HTTP server: probably the agent's HTTP API port; --join takes the gossip address (--bind, port 7946 by default)"
            ),
            SeedProblem::NotShoal => format!(
                "{seed} answered, but not as a shoal agent: is this the gossip port of a shoal agent?"
            ),
            SeedProblem::HungUp => format!(
                "{seed} hung up on our first message: it is a shoal agent of another cluster (--cluster) or with another encryption key (--encrypt), or of an incompatible version"
            ),
            SeedProblem::Silent => {
                format!("{seed} accepted a connection but sent nothing within {secs}s")
            }
            SeedProblem::UdpOnly => format!(
                "{seed} answers over TCP as an agent of this cluster, but not over UDP: check that UDP {seed} is open in the firewall"
            ),
        }
    }
}

/// Asks `seed` over TCP who it is (see the module docs); `None` when it
/// answers as an agent of this cluster should.
pub async fn probe(seed: SocketAddr, envelope: &Envelope) -> SeedProblem {
    let connect = tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(seed)).await;
    let mut stream = match connect {
        Err(_) => return SeedProblem::ConnectTimeout,
        Ok(Err(error)) if error.kind() == ErrorKind::ConnectionRefused => {
            return SeedProblem::Refused;
        }
        Ok(Err(error)) => return SeedProblem::Unreachable(error.to_string()),
        Ok(Ok(stream)) => stream,
    };
    // The smallest first message an agent answers: a digest summary (the
    // responder answers it with a request for the full digest, which we
    // don't send).
    let hello = SyncMessage::Digest(Digest {
        nodes: Vec::new(),
        kv_root: 0,
        kv_bucket_hashes: Vec::new(),
        members: Vec::new(),
        kv_horizon: 0,
        nodes_hash: 0,
        members_hash: 0,
        summary: true,
    });
    let packet = envelope.seal(PayloadKind::Sync, &codec::encode(&hello), rand::random());
    let mut frame = Vec::with_capacity(4 + packet.len());
    frame.extend_from_slice(&(packet.len() as u32).to_be_bytes());
    frame.extend_from_slice(&packet);
    if stream.write_all(&frame).await.is_err() {
        return SeedProblem::HungUp;
    }
    let mut head = [0u8; 4];
    match tokio::time::timeout(PROBE_TIMEOUT, stream.read_exact(&mut head)).await {
        Err(_) => SeedProblem::Silent,
        Ok(Err(_)) => SeedProblem::HungUp,
        Ok(Ok(_)) if &head == b"HTTP" => SeedProblem::Http,
        Ok(Ok(_)) => {
            let length = u32::from_be_bytes(head) as usize;
            if length > codec::MAX_FRAME {
                return SeedProblem::NotShoal;
            }
            let mut body = vec![0u8; length];
            match tokio::time::timeout(PROBE_TIMEOUT, stream.read_exact(&mut body)).await {
                Ok(Ok(_)) if envelope.open(&body).is_ok() => SeedProblem::UdpOnly,
                _ => SeedProblem::NotShoal,
            }
        }
    }
}
