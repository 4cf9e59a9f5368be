//! TCP frames between agents: a big-endian `u32` length, then a sealed
//! envelope (see `shoal_protocol::envelope`) of one payload kind. Used by
//! anti-entropy exchanges (`daemon::anti_entropy`) and reads forwarded
//! between datacenters ([`crate::wan`]); each checks the kind it expects.

use std::net::{IpAddr, SocketAddr};

use shoal_protocol::codec::{self, DecodeError, MAX_FRAME};
use shoal_protocol::envelope::{Envelope, EnvelopeError, PayloadKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Why a frame could not be sent or read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("bad envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    #[error("expected a {expected:?} frame, got a {got:?} envelope")]
    WrongKind {
        expected: PayloadKind,
        got: PayloadKind,
    },
}

/// A connection to `peer` from `local_ip` (an address of the same family),
/// so that peers see, and limit, this agent by its own address.
pub async fn connect_from(
    local_ip: Option<IpAddr>,
    peer: SocketAddr,
) -> std::io::Result<TcpStream> {
    let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == peer.is_ipv4()) else {
        return TcpStream::connect(peer).await;
    };
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(peer).await
}

/// Writes `message` as one frame of `kind` in wire version `version`;
/// returns the bytes written.
pub async fn write<T: bincode::Encode>(
    stream: &mut TcpStream,
    envelope: &Envelope,
    version: u8,
    kind: PayloadKind,
    message: &T,
) -> Result<usize, FrameError> {
    let packet = envelope.seal_as(version, kind, &codec::encode(message), rand::random());
    if packet.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            size: packet.len(),
            limit: MAX_FRAME,
        });
    }
    let mut frame = Vec::with_capacity(4 + packet.len());
    frame.extend_from_slice(&(packet.len() as u32).to_be_bytes());
    frame.extend_from_slice(&packet);
    stream.write_all(&frame).await?;
    Ok(frame.len())
}

/// Reads one frame of at most `limit` bytes, which must be of `kind`,
/// and decodes it: the message, the bytes read and the frame's wire
/// version.
pub async fn read<T: bincode::Decode<()>>(
    stream: &mut TcpStream,
    envelope: &Envelope,
    limit: usize,
    kind: PayloadKind,
) -> Result<(T, usize, u8), FrameError> {
    let length = stream.read_u32().await? as usize;
    if length > limit {
        return Err(FrameError::TooLarge {
            size: length,
            limit,
        });
    }
    let mut frame = vec![0u8; length];
    stream.read_exact(&mut frame).await?;
    // A trailer is a datagram's only: `open` refuses one on a frame.
    let opened = envelope.open(&frame)?;
    if opened.kind != kind {
        return Err(FrameError::WrongKind {
            expected: kind,
            got: opened.kind,
        });
    }
    let version = frame[4];
    Ok((codec::decode_frame(&opened.payload)?, 4 + length, version))
}
