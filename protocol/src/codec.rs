//! Binary encoding: bincode 2 (standard config) for every payload, and the
//! `foca::Codec` that foca uses for its SWIM headers and member updates.
//!
//! foca's own types carry no bincode derives, so they are mirrored by small
//! wire structs here. The mirror also pins the wire format: a foca upgrade
//! that reorders its enums cannot silently change what we send.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
pub use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use bytes::{Buf, BufMut};
use foca::{Header, Member, Message, State};

use crate::identity::NodeId;

/// Largest datagram any Shoal agent sends or accepts, envelope included.
pub const MAX_DATAGRAM: usize = 1400;
/// Largest TCP frame (anti-entropy) any Shoal agent sends or accepts.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Most memory decoding one datagram's payload may claim. bincode's limit
/// counts what containers claim before they are filled (`len *
/// size_of::<T>()`), not the bytes read: a 300-byte record of nine small
/// services claims more than 1,400 bytes, so the datagram's own size is no
/// limit here. Every element takes at least one byte on the wire, so a
/// datagram's containers hold at most [`MAX_DATAGRAM`] elements of at most
/// a few hundred bytes each; this bounds what a forged length can claim.
pub const MAX_DATAGRAM_CLAIM: usize = 256 * 1024;

type DatagramConfig = Configuration<LittleEndian, Varint, Limit<MAX_DATAGRAM_CLAIM>>;
type FrameConfig = Configuration<LittleEndian, Varint, Limit<MAX_FRAME>>;

fn datagram_config() -> DatagramConfig {
    bincode::config::standard().with_limit::<MAX_DATAGRAM_CLAIM>()
}

fn frame_config() -> FrameConfig {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// Encodes a payload. Encoding our own types into a `Vec` cannot fail
/// short of running out of memory.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, frame_config()).expect("encoding into a Vec never fails")
}

/// The encoded size of a payload, computed without encoding it into memory.
pub fn encoded_len<T: Encode>(value: &T) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    match bincode::encode_into_writer(value, &mut size, frame_config()) {
        Ok(()) => size.bytes_written,
        // Only the frame limit makes this fail: as large as it gets.
        Err(_) => usize::MAX,
    }
}

/// Appends an encoded payload to `out`.
pub fn encode_into<T: Encode>(value: &T, out: &mut Vec<u8>) {
    bincode::encode_into_std_write(value, out, frame_config())
        .expect("encoding into a Vec never fails");
}

/// Decodes a payload that came in a datagram; trailing bytes are an error.
pub fn decode_datagram<T: Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_exact(bytes, datagram_config())
}

/// Decodes a rumor (one custom broadcast, which foca hands over exactly):
/// bytes after it are fields a newer agent appended, and are ignored (see
/// docs/upgrading.md: new fields go at the end).
pub fn decode_rumor<T: Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
    bincode::decode_from_slice(bytes, datagram_config()).map(|(value, _)| value)
}

/// Decodes a payload that came in a TCP frame; trailing bytes are an error.
pub fn decode_frame<T: Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_exact(bytes, frame_config())
}

fn decode_exact<T: Decode<()>, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<T, DecodeError> {
    let (value, used) = bincode::decode_from_slice(bytes, config)?;
    if used != bytes.len() {
        return Err(DecodeError::OtherString(format!(
            "{} trailing bytes after the payload",
            bytes.len() - used
        )));
    }
    Ok(value)
}

#[derive(Encode, Decode)]
enum WireMessage {
    Ping(u8),
    Ack(u8),
    PingReq { target: NodeId, probe_number: u8 },
    IndirectPing { origin: NodeId, probe_number: u8 },
    IndirectAck { target: NodeId, probe_number: u8 },
    ForwardedAck { origin: NodeId, probe_number: u8 },
    Announce,
    Feed,
    Gossip,
    Broadcast,
    TurnUndead,
}

#[derive(Encode, Decode)]
struct WireHeader {
    src: NodeId,
    src_incarnation: u16,
    dst: NodeId,
    message: WireMessage,
}

#[derive(Encode, Decode)]
struct WireMember {
    id: NodeId,
    incarnation: u16,
    state: WireState,
}

#[derive(Encode, Decode)]
enum WireState {
    Alive,
    Suspect,
    Down,
}

impl From<&Message<NodeId>> for WireMessage {
    fn from(message: &Message<NodeId>) -> Self {
        match *message {
            Message::Ping(n) => Self::Ping(n),
            Message::Ack(n) => Self::Ack(n),
            Message::PingReq {
                target,
                probe_number,
            } => Self::PingReq {
                target,
                probe_number,
            },
            Message::IndirectPing {
                origin,
                probe_number,
            } => Self::IndirectPing {
                origin,
                probe_number,
            },
            Message::IndirectAck {
                target,
                probe_number,
            } => Self::IndirectAck {
                target,
                probe_number,
            },
            Message::ForwardedAck {
                origin,
                probe_number,
            } => Self::ForwardedAck {
                origin,
                probe_number,
            },
            Message::Announce => Self::Announce,
            Message::Feed => Self::Feed,
            Message::Gossip => Self::Gossip,
            Message::Broadcast => Self::Broadcast,
            Message::TurnUndead => Self::TurnUndead,
        }
    }
}

impl From<WireMessage> for Message<NodeId> {
    fn from(message: WireMessage) -> Self {
        match message {
            WireMessage::Ping(n) => Self::Ping(n),
            WireMessage::Ack(n) => Self::Ack(n),
            WireMessage::PingReq {
                target,
                probe_number,
            } => Self::PingReq {
                target,
                probe_number,
            },
            WireMessage::IndirectPing {
                origin,
                probe_number,
            } => Self::IndirectPing {
                origin,
                probe_number,
            },
            WireMessage::IndirectAck {
                target,
                probe_number,
            } => Self::IndirectAck {
                target,
                probe_number,
            },
            WireMessage::ForwardedAck {
                origin,
                probe_number,
            } => Self::ForwardedAck {
                origin,
                probe_number,
            },
            WireMessage::Announce => Self::Announce,
            WireMessage::Feed => Self::Feed,
            WireMessage::Gossip => Self::Gossip,
            WireMessage::Broadcast => Self::Broadcast,
            WireMessage::TurnUndead => Self::TurnUndead,
        }
    }
}

/// Error of the foca codec: bincode's, made `std::error::Error` as foca asks.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("encoding a SWIM message: {0}")]
    Encode(#[from] EncodeError),
    #[error("decoding a SWIM message: {0}")]
    Decode(#[from] DecodeError),
}

/// `foca::Codec` over bincode 2. Stateless.
#[derive(Clone, Copy, Debug, Default)]
pub struct SwimCodec;

impl SwimCodec {
    fn put<T: Encode>(value: &T, buf: impl BufMut) -> Result<(), CodecError> {
        bincode::encode_into_std_write(value, &mut buf.writer(), datagram_config())?;
        Ok(())
    }

    fn take<T: Decode<()>>(mut buf: impl Buf) -> Result<T, CodecError> {
        // foca hands us contiguous slices; copy only if it ever does not.
        let (value, used) = if buf.chunk().len() == buf.remaining() {
            bincode::decode_from_slice(buf.chunk(), datagram_config())?
        } else {
            let bytes = buf.copy_to_bytes(buf.remaining());
            let (value, used) = bincode::decode_from_slice(&bytes, datagram_config())?;
            // `copy_to_bytes` consumed everything: nothing more to advance.
            let _ = used;
            return Ok(value);
        };
        buf.advance(used);
        Ok(value)
    }
}

impl foca::Codec<NodeId> for SwimCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        let wire = WireHeader {
            src: header.src,
            src_incarnation: header.src_incarnation,
            dst: header.dst,
            message: (&header.message).into(),
        };
        Self::put(&wire, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeId>, CodecError> {
        let wire: WireHeader = Self::take(buf)?;
        Ok(Header {
            src: wire.src,
            src_incarnation: wire.src_incarnation,
            dst: wire.dst,
            message: wire.message.into(),
        })
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        let wire = WireMember {
            id: *member.id(),
            incarnation: member.incarnation(),
            state: match member.state() {
                State::Alive => WireState::Alive,
                State::Suspect => WireState::Suspect,
                State::Down => WireState::Down,
            },
        };
        Self::put(&wire, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeId>, CodecError> {
        let wire: WireMember = Self::take(buf)?;
        let state = match wire.state {
            WireState::Alive => State::Alive,
            WireState::Suspect => State::Suspect,
            WireState::Down => State::Down,
        };
        Ok(Member::new(wire.id, wire.incarnation, state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Codec;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    fn node_id() -> impl Strategy<Value = NodeId> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 16]>(),
            any::<bool>(),
            any::<u16>(),
            any::<u64>(),
        )
            .prop_map(|(v4, v6, is_v4, port, generation)| {
                let ip = if is_v4 {
                    IpAddr::V4(Ipv4Addr::from(v4))
                } else {
                    IpAddr::V6(Ipv6Addr::from(v6))
                };
                NodeId {
                    addr: SocketAddr::new(ip, port),
                    generation,
                }
            })
    }

    fn message() -> impl Strategy<Value = Message<NodeId>> {
        (0u8..11, node_id(), any::<u8>()).prop_map(|(tag, id, n)| match tag {
            0 => Message::Ping(n),
            1 => Message::Ack(n),
            2 => Message::PingReq {
                target: id,
                probe_number: n,
            },
            3 => Message::IndirectPing {
                origin: id,
                probe_number: n,
            },
            4 => Message::IndirectAck {
                target: id,
                probe_number: n,
            },
            5 => Message::ForwardedAck {
                origin: id,
                probe_number: n,
            },
            6 => Message::Announce,
            7 => Message::Feed,
            8 => Message::Gossip,
            9 => Message::Broadcast,
            _ => Message::TurnUndead,
        })
    }

    proptest! {
        #[test]
        fn header_round_trips(src in node_id(), dst in node_id(), inc in any::<u16>(), message in message()) {
            let header = Header { src, src_incarnation: inc, dst, message };
            let mut buf = Vec::new();
            SwimCodec.encode_header(&header, &mut buf).unwrap();
            buf.extend_from_slice(b"tail");
            let mut slice = &buf[..];
            let decoded = SwimCodec.decode_header(&mut slice).unwrap();
            prop_assert_eq!(decoded, header);
            prop_assert_eq!(slice, &b"tail"[..]);
        }

        #[test]
        fn member_round_trips(id in node_id(), inc in any::<u16>(), state in 0u8..3) {
            let state = [State::Alive, State::Suspect, State::Down][state as usize];
            let member = Member::new(id, inc, state);
            let mut buf = Vec::new();
            SwimCodec.encode_member(&member, &mut buf).unwrap();
            let mut slice = &buf[..];
            prop_assert_eq!(SwimCodec.decode_member(&mut slice).unwrap(), member);
            prop_assert!(slice.is_empty());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = SwimCodec.decode_header(&mut &bytes[..]);
            let _ = SwimCodec.decode_member(&mut &bytes[..]);
        }
    }
}
