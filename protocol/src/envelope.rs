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
//! cluster's id are rejected here, before any payload is parsed. Bit 0 of
//! `flags` says the payload is sealed with the cluster's keyring
//! (XChaCha20-Poly1305, the 15-byte header as associated data): a sealed
//! packet that no installed key opens is rejected, and so is a plain one
//! when encryption is on.

use std::borrow::Cow;

use thiserror::Error;

use crate::keyring::{Keyring, NONCE_LEN};

/// `flags` bit: the payload is sealed.
pub const SEALED: u8 = 1;

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
    #[error("unsupported envelope flags {0:#04x}")]
    UnsupportedFlags(u8),
    #[error("encrypted packet, but this agent has no encryption key")]
    NoKey,
    #[error("plain packet, but this agent requires encryption")]
    NotEncrypted,
    #[error("packet does not authenticate with any installed key")]
    BadSeal,
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

/// Seals and opens envelopes for one cluster. Cloning shares the keyring.
#[derive(Clone, Debug)]
pub struct Envelope {
    cluster_id: u64,
    keyring: Keyring,
}

impl Envelope {
    /// An envelope without encryption.
    pub fn new(cluster_id: u64) -> Self {
        Self::with_keyring(cluster_id, Keyring::default())
    }

    /// An envelope that seals with `keyring` once it holds a key.
    pub fn with_keyring(cluster_id: u64, keyring: Keyring) -> Self {
        Self {
            cluster_id,
            keyring,
        }
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn header(&self, kind: PayloadKind, flags: u8) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4] = PROTOCOL_VERSION;
        header[5] = kind as u8;
        header[6] = flags;
        header[7..].copy_from_slice(&self.cluster_id.to_le_bytes());
        header
    }

    /// Wraps `payload` in an envelope, sealed when the keyring has a key.
    /// `nonce` must be random (it is only used when sealing).
    pub fn seal(&self, kind: PayloadKind, payload: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        if self.keyring.enabled() {
            let header = self.header(kind, SEALED);
            if let Some(sealed) = self.keyring.seal(&header, payload, nonce) {
                let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
                out.extend_from_slice(&header);
                out.extend_from_slice(&sealed);
                return out;
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&self.header(kind, 0));
        out.extend_from_slice(payload);
        out
    }

    /// Checks the header (and the seal) and returns the payload kind and
    /// the plain payload.
    pub fn open<'a>(
        &self,
        packet: &'a [u8],
    ) -> Result<(PayloadKind, Cow<'a, [u8]>), EnvelopeError> {
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
        let theirs = u64::from_le_bytes(packet[7..15].try_into().expect("8 bytes"));
        if theirs != self.cluster_id {
            return Err(EnvelopeError::OtherCluster {
                ours: self.cluster_id,
                theirs,
            });
        }
        let (header, body) = packet.split_at(HEADER_LEN);
        match (packet[6], self.keyring.enabled()) {
            (0, false) => Ok((kind, Cow::Borrowed(body))),
            (0, true) => Err(EnvelopeError::NotEncrypted),
            (SEALED, false) => Err(EnvelopeError::NoKey),
            (SEALED, true) => self
                .keyring
                .open(header, body)
                .map(|plain| (kind, Cow::Owned(plain)))
                .ok_or(EnvelopeError::BadSeal),
            (flags, _) => Err(EnvelopeError::UnsupportedFlags(flags)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NONCE: [u8; NONCE_LEN] = [0; NONCE_LEN];

    fn plain(envelope: &Envelope, packet: &[u8]) -> Result<(PayloadKind, Vec<u8>), EnvelopeError> {
        envelope
            .open(packet)
            .map(|(kind, payload)| (kind, payload.into_owned()))
    }

    #[test]
    fn round_trip() {
        let envelope = Envelope::new(cluster_id("prod"));
        let packet = envelope.seal(PayloadKind::Swim, b"hello", NONCE);
        assert_eq!(
            plain(&envelope, &packet),
            Ok((PayloadKind::Swim, b"hello".to_vec()))
        );
    }

    #[test]
    fn sealed_packets_need_a_shared_key() {
        let ours = Envelope::with_keyring(1, Keyring::with_primary([9; 32]));
        let packet = ours.seal(PayloadKind::Sync, b"secret", [5; NONCE_LEN]);
        assert!(
            !packet.windows(6).any(|w| w == b"secret"),
            "payload is encrypted"
        );
        assert_eq!(
            plain(&ours, &packet),
            Ok((PayloadKind::Sync, b"secret".to_vec()))
        );
        let stranger = Envelope::with_keyring(1, Keyring::with_primary([8; 32]));
        assert_eq!(plain(&stranger, &packet), Err(EnvelopeError::BadSeal));
        assert_eq!(plain(&Envelope::new(1), &packet), Err(EnvelopeError::NoKey));
        let clear = Envelope::new(1).seal(PayloadKind::Swim, b"x", NONCE);
        assert_eq!(plain(&ours, &clear), Err(EnvelopeError::NotEncrypted));
        // The header is authenticated: a sealed packet relabelled fails.
        let mut moved = packet.clone();
        moved[5] = PayloadKind::Swim as u8;
        assert_eq!(plain(&ours, &moved), Err(EnvelopeError::BadSeal));
    }

    #[test]
    fn rejects_other_cluster_version_and_magic() {
        let prod = Envelope::new(cluster_id("prod"));
        let staging = Envelope::new(cluster_id("staging"));
        let packet = staging.seal(PayloadKind::Swim, b"x", NONCE);
        assert!(matches!(
            plain(&prod, &packet),
            Err(EnvelopeError::OtherCluster { .. })
        ));

        let mut bad_version = prod.seal(PayloadKind::Swim, b"x", NONCE);
        bad_version[4] = 99;
        assert_eq!(
            plain(&prod, &bad_version),
            Err(EnvelopeError::UnknownVersion(99))
        );

        let mut bad_magic = prod.seal(PayloadKind::Swim, b"x", NONCE);
        bad_magic[0] = b'X';
        assert_eq!(plain(&prod, &bad_magic), Err(EnvelopeError::BadMagic));

        assert_eq!(plain(&prod, b"SHOL"), Err(EnvelopeError::TooShort(4)));
    }

    proptest! {
        #[test]
        fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Envelope::new(1).open(&bytes);
            let _ = Envelope::with_keyring(1, Keyring::with_primary([1; 32])).open(&bytes);
        }
    }
}
