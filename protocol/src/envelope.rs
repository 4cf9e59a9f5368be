//! The wire envelope around every datagram and TCP frame.
//!
//! ```text
//! 0      4        5      6     7                 15
//! +------+--------+------+-----+-----------------+---------
//! | SHOL | version| kind |flags| cluster id (LE) | payload
//! +------+--------+------+-----+-----------------+---------
//! ```
//!
//! Packets with a wrong magic, a version outside this agent's
//! [`WireRange`], an unknown kind, or another cluster's id are rejected
//! here, before any payload is parsed. Bit 0 of
//! `flags` says the payload is sealed with the cluster's keyring
//! (XChaCha20-Poly1305, the 15-byte header as associated data): a sealed
//! packet that no installed key opens is rejected, and so is a plain one
//! when encryption is on.

use std::borrow::Cow;
use std::fmt;

use thiserror::Error;

use crate::keyring::{Keyring, NONCE_LEN};

/// `flags` bit: the payload is sealed.
pub const SEALED: u8 = 1;
/// `flags` bit, from wire version [`COORDINATE_VERSION`] on, on datagrams
/// only: the (plain) payload ends with the sender's network coordinate,
/// [`TRAILER_LEN`] bytes (`crate::coordinate::Coordinate::to_wire`). Acks carry it, as memberlist's do.
pub const COORDINATE: u8 = 2;
/// The first wire version whose datagrams may carry [`COORDINATE`].
pub const COORDINATE_VERSION: u8 = 2;
/// Length of the coordinate trailer.
pub const TRAILER_LEN: usize = crate::coordinate::WIRE_LEN;

/// First bytes of every Shoal packet.
pub const MAGIC: [u8; 4] = *b"SHOL";
/// Oldest wire version this build speaks. 0.1.0 spoke version 1 only (and
/// advertised nothing). The promise (docs/upgrading.md): version N
/// interoperates with N-1 and N+1, so a release that adds version N+1
/// keeps speaking N. Version 2 adds the [`COORDINATE`] trailer.
pub const WIRE_VERSION_MIN: u8 = 1;
/// Newest wire version this build speaks: what it uses with a peer that
/// advertises it too.
pub const WIRE_VERSION_MAX: u8 = 2;
/// Wire protocol version this build speaks best ([`WIRE_VERSION_MAX`]).
pub const PROTOCOL_VERSION: u8 = WIRE_VERSION_MAX;

/// A range of wire versions, both ends included: what an agent speaks, and
/// what it advertises in its node record (see
/// [`crate::record::NodeRecord::wire_range`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireRange {
    pub min: u8,
    pub max: u8,
}

impl WireRange {
    /// What this build speaks.
    pub const THIS_BUILD: WireRange = WireRange {
        min: WIRE_VERSION_MIN,
        max: WIRE_VERSION_MAX,
    };
    /// What an agent that advertises nothing speaks (0.1.0).
    pub const UNADVERTISED: WireRange = WireRange { min: 1, max: 1 };

    pub fn contains(self, version: u8) -> bool {
        (self.min..=self.max).contains(&version)
    }

    /// The version to speak with a peer that speaks `theirs`: the highest
    /// both know, or `None` when the ranges don't meet.
    pub fn common(self, theirs: WireRange) -> Option<u8> {
        let version = self.max.min(theirs.max);
        (self.contains(version) && theirs.contains(version)).then_some(version)
    }
}

impl fmt::Display for WireRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", self.min, self.max)
    }
}

/// The wire version a packet claims (its header's), without checking
/// anything else.
pub fn packet_version(packet: &[u8]) -> Option<u8> {
    (packet.len() >= HEADER_LEN && packet[..4] == MAGIC).then(|| packet[4])
}
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
    /// A read forwarded to another datacenter, or its answer (TCP frame,
    /// on the WAN pool's port; see [`crate::forward`]). From 0.2.0 on.
    Forward = 3,
}

impl PayloadKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Swim),
            2 => Some(Self::Sync),
            3 => Some(Self::Forward),
            _ => None,
        }
    }
}

/// An opened envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    pub kind: PayloadKind,
    /// The payload, without the trailer.
    pub payload: Cow<'a, [u8]>,
    /// The sender's network coordinate, when the packet carried one.
    pub trailer: Option<[u8; TRAILER_LEN]>,
}

/// Why an envelope was rejected. Nothing was parsed past the header.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("packet of {0} bytes is shorter than the {HEADER_LEN}-byte envelope header")]
    TooShort(usize),
    #[error("bad magic: not a Shoal packet")]
    BadMagic,
    #[error("packet of wire version {theirs}; this agent speaks wire versions {ours}")]
    UnknownVersion { theirs: u8, ours: WireRange },
    #[error("unknown payload kind {0}")]
    UnknownKind(u8),
    #[error("packet for cluster id {theirs:#018x}, ours is {ours:#018x}")]
    OtherCluster { ours: u64, theirs: u64 },
    #[error("unsupported envelope flags {0:#04x}")]
    UnsupportedFlags(u8),
    #[error("payload of {0} bytes is shorter than the coordinate trailer it claims")]
    ShortTrailer(usize),
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
    /// The wire versions accepted, and sent by default (the oldest).
    range: WireRange,
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
            range: WireRange::THIS_BUILD,
        }
    }

    /// The same envelope speaking `range` instead of [`WireRange::THIS_BUILD`]
    /// (the tests' builds that pretend to speak another version).
    pub fn with_range(mut self, range: WireRange) -> Self {
        self.range = range;
        self
    }

    /// The wire versions this envelope opens.
    pub fn range(&self) -> WireRange {
        self.range
    }

    /// The version to send to a peer that advertises `theirs` (`None`: it
    /// advertised nothing we know of): the highest both speak, else our
    /// oldest, which a peer out of range refuses and logs.
    pub fn version_for(&self, theirs: Option<WireRange>) -> u8 {
        theirs
            .and_then(|theirs| self.range.common(theirs))
            .unwrap_or(self.range.min)
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    fn header(&self, version: u8, kind: PayloadKind, flags: u8) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4] = version;
        header[5] = kind as u8;
        header[6] = flags;
        header[7..].copy_from_slice(&self.cluster_id.to_le_bytes());
        header
    }

    /// Wraps `payload` in an envelope, sealed when the keyring has a key.
    /// `nonce` must be random (it is only used when sealing).
    /// The packet is of this envelope's oldest wire version.
    pub fn seal(&self, kind: PayloadKind, payload: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        self.seal_as(self.range.min, kind, payload, nonce)
    }

    /// [`Envelope::seal`] in wire version `version` (see
    /// [`Envelope::version_for`]).
    pub fn seal_as(
        &self,
        version: u8,
        kind: PayloadKind,
        payload: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Vec<u8> {
        self.seal_flagged(version, kind, 0, payload, nonce)
    }

    /// A datagram in wire version `version` (at least
    /// [`COORDINATE_VERSION`]) carrying the sender's coordinate after
    /// `payload`.
    pub fn seal_with_coordinate(
        &self,
        version: u8,
        payload: &[u8],
        trailer: &[u8; TRAILER_LEN],
        nonce: [u8; NONCE_LEN],
    ) -> Vec<u8> {
        debug_assert!(
            version >= COORDINATE_VERSION,
            "version {version} has no trailer"
        );
        let mut plain = Vec::with_capacity(payload.len() + TRAILER_LEN);
        plain.extend_from_slice(payload);
        plain.extend_from_slice(trailer);
        self.seal_flagged(version, PayloadKind::Swim, COORDINATE, &plain, nonce)
    }

    fn seal_flagged(
        &self,
        version: u8,
        kind: PayloadKind,
        flags: u8,
        payload: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Vec<u8> {
        if self.keyring.enabled() {
            let header = self.header(version, kind, flags | SEALED);
            if let Some(sealed) = self.keyring.seal(&header, payload, nonce) {
                let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
                out.extend_from_slice(&header);
                out.extend_from_slice(&sealed);
                return out;
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(&self.header(version, kind, flags));
        out.extend_from_slice(payload);
        out
    }

    /// Checks the header (and the seal) and returns the payload kind, the
    /// plain payload and the coordinate trailer, if any.
    pub fn open<'a>(&self, packet: &'a [u8]) -> Result<Opened<'a>, EnvelopeError> {
        if packet.len() < HEADER_LEN {
            return Err(EnvelopeError::TooShort(packet.len()));
        }
        if packet[..4] != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        let version = packet[4];
        if !self.range.contains(version) {
            return Err(EnvelopeError::UnknownVersion {
                theirs: version,
                ours: self.range,
            });
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
        let flags = packet[6];
        let coordinate = flags & COORDINATE != 0;
        let known = if version >= COORDINATE_VERSION && kind == PayloadKind::Swim {
            SEALED | COORDINATE
        } else {
            SEALED
        };
        if flags & !known != 0 {
            return Err(EnvelopeError::UnsupportedFlags(flags));
        }
        let (header, body) = packet.split_at(HEADER_LEN);
        let plain = match (flags & SEALED != 0, self.keyring.enabled()) {
            (false, false) => Cow::Borrowed(body),
            (false, true) => return Err(EnvelopeError::NotEncrypted),
            (true, false) => return Err(EnvelopeError::NoKey),
            (true, true) => Cow::Owned(
                self.keyring
                    .open(header, body)
                    .ok_or(EnvelopeError::BadSeal)?,
            ),
        };
        if !coordinate {
            return Ok(Opened {
                kind,
                payload: plain,
                trailer: None,
            });
        }
        let Some(split) = plain.len().checked_sub(TRAILER_LEN) else {
            return Err(EnvelopeError::ShortTrailer(plain.len()));
        };
        let trailer: [u8; TRAILER_LEN] = plain[split..].try_into().expect("TRAILER_LEN bytes");
        let payload = match plain {
            Cow::Borrowed(bytes) => Cow::Borrowed(&bytes[..split]),
            Cow::Owned(mut bytes) => {
                bytes.truncate(split);
                Cow::Owned(bytes)
            }
        };
        Ok(Opened {
            kind,
            payload,
            trailer: Some(trailer),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NONCE: [u8; NONCE_LEN] = [0; NONCE_LEN];

    fn plain(envelope: &Envelope, packet: &[u8]) -> Result<(PayloadKind, Vec<u8>), EnvelopeError> {
        envelope.open(packet).map(|opened| {
            assert_eq!(opened.trailer, None, "no trailer sent");
            (opened.kind, opened.payload.into_owned())
        })
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
            Err(EnvelopeError::UnknownVersion {
                theirs: 99,
                ours: WireRange::THIS_BUILD
            })
        );

        let mut bad_magic = prod.seal(PayloadKind::Swim, b"x", NONCE);
        bad_magic[0] = b'X';
        assert_eq!(plain(&prod, &bad_magic), Err(EnvelopeError::BadMagic));

        assert_eq!(plain(&prod, b"SHOL"), Err(EnvelopeError::TooShort(4)));
    }

    #[test]
    fn a_peer_is_spoken_to_in_the_highest_version_both_know() {
        let one = WireRange { min: 1, max: 1 };
        let two = WireRange { min: 1, max: 2 };
        let only_three = WireRange { min: 3, max: 3 };
        assert_eq!(two.common(two), Some(2));
        assert_eq!(two.common(one), Some(1));
        assert_eq!(one.common(two), Some(1));
        assert_eq!(one.common(only_three), None);
        let newer = Envelope::new(1).with_range(two);
        assert_eq!(newer.version_for(Some(two)), 2);
        assert_eq!(newer.version_for(Some(one)), 1);
        assert_eq!(newer.version_for(None), 1);
        // Each side opens what the other sends it, and a version-2 packet
        // is refused by a version-1 agent, naming both.
        let older = Envelope::new(1).with_range(one);
        let packet = newer.seal_as(2, PayloadKind::Swim, b"x", NONCE);
        assert_eq!(
            plain(&newer, &packet),
            Ok((PayloadKind::Swim, b"x".to_vec()))
        );
        let error = plain(&older, &packet).unwrap_err();
        assert_eq!(
            error.to_string(),
            "packet of wire version 2; this agent speaks wire versions 1 to 1"
        );
        let packet = older.seal(PayloadKind::Swim, b"y", NONCE);
        assert_eq!(packet_version(&packet), Some(1));
        assert_eq!(
            plain(&newer, &packet),
            Ok((PayloadKind::Swim, b"y".to_vec()))
        );
    }

    #[test]
    fn a_coordinate_trailer_rides_on_version_2_datagrams_only() {
        let trailer: [u8; TRAILER_LEN] = std::array::from_fn(|i| i as u8);
        for envelope in [
            Envelope::new(1),
            Envelope::with_keyring(1, Keyring::with_primary([4; 32])),
        ] {
            let packet = envelope.seal_with_coordinate(2, b"ack", &trailer, NONCE);
            let opened = envelope.open(&packet).expect("opens");
            assert_eq!(
                (opened.kind, &opened.payload[..], opened.trailer),
                (PayloadKind::Swim, &b"ack"[..], Some(trailer))
            );
            // A version-1 agent refuses it by its version, before its flags.
            let older = envelope.clone().with_range(WireRange { min: 1, max: 1 });
            assert!(matches!(
                older.open(&packet),
                Err(EnvelopeError::UnknownVersion { theirs: 2, .. })
            ));
        }
        let plain = Envelope::new(1);
        // The flag in version 1, or on an anti-entropy frame, is unknown.
        let mut v1 = plain.seal_with_coordinate(2, b"ack", &trailer, NONCE);
        v1[4] = 1;
        assert_eq!(
            plain.open(&v1),
            Err(EnvelopeError::UnsupportedFlags(COORDINATE))
        );
        let mut sync = plain.seal_with_coordinate(2, b"ack", &trailer, NONCE);
        sync[5] = PayloadKind::Sync as u8;
        assert_eq!(
            plain.open(&sync),
            Err(EnvelopeError::UnsupportedFlags(COORDINATE))
        );
        // A trailer claimed by a packet too short to hold it.
        let mut short = plain.seal_as(2, PayloadKind::Swim, b"tiny", NONCE);
        short[6] = COORDINATE;
        assert_eq!(plain.open(&short), Err(EnvelopeError::ShortTrailer(4)));
    }

    proptest! {
        #[test]
        fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Envelope::new(1).open(&bytes);
            let _ = Envelope::with_keyring(1, Keyring::with_primary([1; 32])).open(&bytes);
        }
    }
}
