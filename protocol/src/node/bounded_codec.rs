//! The codec the node's foca uses: [`SwimCodec`], refusing identities from
//! the future.
//!
//! foca settles two identities at one address by generation
//! (`NodeId::win_addr_conflict`), so a member update naming an address with
//! generation `u64::MAX` would take that address for good: the real agent
//! there could never renew past it. Generations are Unix milliseconds at
//! start, so any beyond `now + max_clock_drift` (see [`crate::clock`]) is
//! refused while decoding, and foca drops the packet as undecodable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member, Message};

use crate::codec::{CodecError, DecodeError, SwimCodec};
use crate::identity::NodeId;

/// The bound shared between the node (which moves it with its clock) and
/// its codec (owned by foca), with the count of what it refused.
#[derive(Debug)]
pub(super) struct GenerationBound {
    newest: AtomicU64,
    refused: AtomicU64,
}

impl GenerationBound {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            newest: AtomicU64::new(u64::MAX),
            refused: AtomicU64::new(0),
        })
    }

    pub(super) fn set(&self, newest: u64) {
        self.newest.store(newest, Ordering::Relaxed);
    }

    /// Identities refused so far.
    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn check(&self, ids: &[&NodeId]) -> Result<(), CodecError> {
        let newest = self.newest.load(Ordering::Relaxed);
        match ids.iter().find(|id| id.generation > newest) {
            None => Ok(()),
            Some(id) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(CodecError::Decode(DecodeError::OtherString(format!(
                    "identity {id} has a generation further ahead than max_clock_drift"
                ))))
            }
        }
    }
}

/// [`SwimCodec`] with the [`GenerationBound`] applied to every identity a
/// peer sends (not to `dst`, which must be ours anyway).
pub(super) struct BoundedCodec {
    pub(super) bound: Arc<GenerationBound>,
}

impl Codec<NodeId> for BoundedCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        SwimCodec.encode_header(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeId>, CodecError> {
        let header = SwimCodec.decode_header(buf)?;
        let named = match &header.message {
            Message::PingReq { target, .. } | Message::IndirectAck { target, .. } => Some(target),
            Message::IndirectPing { origin, .. } | Message::ForwardedAck { origin, .. } => {
                Some(origin)
            }
            _ => None,
        };
        let mut ids = vec![&header.src];
        ids.extend(named);
        self.bound.check(&ids)?;
        Ok(header)
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeId>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        SwimCodec.encode_member(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeId>, CodecError> {
        let member = SwimCodec.decode_member(buf)?;
        self.bound.check(&[member.id()])?;
        Ok(member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn id(generation: u64) -> NodeId {
        NodeId {
            addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
            generation,
        }
    }

    #[test]
    fn identities_past_the_bound_are_refused_and_counted() {
        let bound = GenerationBound::new();
        let mut codec = BoundedCodec {
            bound: bound.clone(),
        };
        let mut bytes = Vec::new();
        let member = Member::new(id(u64::MAX), 0, foca::State::Down);
        codec.encode_member(&member, &mut bytes).unwrap();
        assert!(
            codec.decode_member(&bytes[..]).is_ok(),
            "unbounded at first"
        );
        bound.set(1_000);
        assert!(codec.decode_member(&bytes[..]).is_err());
        let header = Header {
            src: id(5),
            src_incarnation: 0,
            dst: id(u64::MAX),
            message: Message::PingReq {
                target: id(2_000),
                probe_number: 1,
            },
        };
        let mut bytes = Vec::new();
        codec.encode_header(&header, &mut bytes).unwrap();
        assert!(codec.decode_header(&bytes[..]).is_err(), "the target");
        assert_eq!(bound.refused(), 2);
        bound.set(2_000);
        assert!(
            codec.decode_header(&bytes[..]).is_ok(),
            "dst is not checked"
        );
    }
}
