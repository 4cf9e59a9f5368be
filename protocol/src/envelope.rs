//! The wire envelope around every datagram and TCP frame.
//!
//! ```text
//! 0      4        5      6     7                 15
//! +------+--------+------+-----+-----------------+---------
//! | SHOL | version| kind |flags| cluster id (LE) | payload
//! +------+--------+------+-----+-----------------+---------
//! ```
//!
//! Packets with a wrong magic, an unknown version or kind, or another
//! cluster's id are rejected here, before any payload is parsed. `flags` is
//! reserved for encryption (bit 0: the payload is sealed); today a set flag
//! is rejected as unsupported.

use thiserror::Error;

/// First bytes of every Shoal packet.
pub const MAGIC: [u8; 4] = *b"SHOL";
/// Wire protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Size of the envelope header in bytes.
pub const HEADER_LEN: usize = 15;

/// What the payload of an envelope is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PayloadKind {
    /// A foca SWIM packet (datagram).
    Swim = 1,
    /// An anti-entropy push-pull message (TCP frame).
    Sync = 2,
}

impl PayloadKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Swim),
            2 => Some(Self::Sync),
            _ => None,
        }
    }
}

/// Why an envelope was rejected. Nothing was parsed past the header.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("packet of {0} bytes is shorter than the {HEADER_LEN}-byte envelope header")]
    TooShort(usize),
    #[error("bad magic: not a Shoal packet")]
    BadMagic,
    #[error("unsupported protocol version {0} (this agent speaks {PROTOCOL_VERSION})")]
    UnknownVersion(u8),
    #[error("unknown payload kind {0}")]
    UnknownKind(u8),
    #[error("packet for cluster id {theirs:#018x}, ours is {ours:#018x}")]
    OtherCluster { ours: u64, theirs: u64 },
    #[error("unsupported envelope flags {0:#04x} (encryption is not configured)")]
    UnsupportedFlags(u8),
}

/// Derives the 64-bit cluster id from the configured cluster name
/// (FNV-1a: stable across builds and platforms).
pub fn cluster_id(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Seals and opens envelopes for one cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    cluster_id: u64,
}

impl Envelope {
    pub fn new(cluster_id: u64) -> Self {
        Self { cluster_id }
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Appends the header for a payload of `kind` to `out`; the caller
    /// appends the payload after it.
    pub fn write_header(&self, kind: PayloadKind, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(PROTOCOL_VERSION);
        out.push(kind as u8);
        out.push(0);
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
    }

    /// Wraps `payload` in a fresh envelope.
    pub fn seal(&self, kind: PayloadKind, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        self.write_header(kind, &mut out);
        out.extend_from_slice(payload);
        out
    }

    /// Checks the header and returns the payload kind and bytes.
    pub fn open<'a>(&self, packet: &'a [u8]) -> Result<(PayloadKind, &'a [u8]), EnvelopeError> {
        if packet.len() < HEADER_LEN {
            return Err(EnvelopeError::TooShort(packet.len()));
        }
        if packet[..4] != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        if packet[4] != PROTOCOL_VERSION {
            return Err(EnvelopeError::UnknownVersion(packet[4]));
        }
        let kind =
            PayloadKind::from_byte(packet[5]).ok_or(EnvelopeError::UnknownKind(packet[5]))?;
        if packet[6] != 0 {
            return Err(EnvelopeError::UnsupportedFlags(packet[6]));
        }
        let theirs = u64::from_le_bytes(packet[7..15].try_into().expect("8 bytes"));
        if theirs != self.cluster_id {
            return Err(EnvelopeError::OtherCluster {
                ours: self.cluster_id,
                theirs,
            });
        }
        Ok((kind, &packet[HEADER_LEN..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let envelope = Envelope::new(cluster_id("prod"));
        let packet = envelope.seal(PayloadKind::Swim, b"hello");
        assert_eq!(
            envelope.open(&packet),
            Ok((PayloadKind::Swim, &b"hello"[..]))
        );
    }

    #[test]
    fn rejects_other_cluster_version_and_magic() {
        let prod = Envelope::new(cluster_id("prod"));
        let staging = Envelope::new(cluster_id("staging"));
        let packet = staging.seal(PayloadKind::Swim, b"x");
        assert!(matches!(
            prod.open(&packet),
            Err(EnvelopeError::OtherCluster { .. })
        ));

        let mut bad_version = prod.seal(PayloadKind::Swim, b"x");
        bad_version[4] = 99;
        assert_eq!(
            prod.open(&bad_version),
            Err(EnvelopeError::UnknownVersion(99))
        );

        let mut bad_magic = prod.seal(PayloadKind::Swim, b"x");
        bad_magic[0] = b'X';
        assert_eq!(prod.open(&bad_magic), Err(EnvelopeError::BadMagic));

        assert_eq!(prod.open(b"SHOL"), Err(EnvelopeError::TooShort(4)));
    }

    proptest! {
        #[test]
        fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Envelope::new(1).open(&bytes);
        }
    }
}
