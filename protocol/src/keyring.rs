//! Gossip encryption keys. The primary key seals every outgoing packet;
//! every installed key is tried on incoming ones, so a cluster can rotate
//! keys with no downtime: install the new key everywhere, make it primary
//! everywhere, then remove the old one.

use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of a nonce (XChaCha20: random nonces never collide in practice).
pub const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// What sealing adds to a payload.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A key as bytes.
pub type Key = [u8; KEY_LEN];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("the key is not installed")]
    NotInstalled,
    #[error("the primary key cannot be removed; make another key primary first")]
    RemovePrimary,
    #[error(
        "a key must be {KEY_LEN} bytes, base64-encoded (`shoal keygen` makes one); got {0} bytes"
    )]
    BadLength(usize),
    #[error("a key must be base64: {0}")]
    BadBase64(String),
}

struct Keys {
    /// `(key, cipher)`; the primary first.
    keys: Vec<(Key, XChaCha20Poly1305)>,
}

/// A shared, mutable keyring. Cloning shares it. Empty: no encryption.
#[derive(Clone, Default)]
pub struct Keyring {
    inner: Arc<RwLock<Option<Keys>>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        write!(f, "Keyring({} keys)", self.list().0.len())
    }
}

fn cipher(key: &Key) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new_from_slice(key).expect("32-byte key")
}

impl Keyring {
    /// A keyring with `primary` as its only key.
    pub fn with_primary(primary: Key) -> Self {
        let keyring = Keyring::default();
        keyring.replace(primary, &[]);
        keyring
    }

    /// Whether packets are sealed.
    pub fn enabled(&self) -> bool {
        self.inner.read().expect("keyring lock").is_some()
    }

    /// Installed keys, primary first, and the primary.
    pub fn list(&self) -> (Vec<Key>, Option<Key>) {
        match &*self.inner.read().expect("keyring lock") {
            Some(keys) => (
                keys.keys.iter().map(|(k, _)| *k).collect(),
                keys.keys.first().map(|(k, _)| *k),
            ),
            None => (Vec::new(), None),
        }
    }

    /// Replaces the whole keyring.
    pub fn replace(&self, primary: Key, others: &[Key]) {
        let mut keys = vec![(primary, cipher(&primary))];
        for key in others {
            if *key != primary && !keys.iter().any(|(k, _)| k == key) {
                keys.push((*key, cipher(key)));
            }
        }
        *self.inner.write().expect("keyring lock") = Some(Keys { keys });
    }

    /// Seals `plaintext` with the primary key: `nonce || ciphertext || tag`,
    /// authenticating `aad` too. `None` when no key is installed.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> Option<Vec<u8>> {
        let guard = self.inner.read().expect("keyring lock");
        let (_, cipher) = guard.as_ref()?.keys.first()?;
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any packet we send");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// Opens `nonce || ciphertext || tag` with any installed key.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).ok()?;
        let guard = self.inner.read().expect("keyring lock");
        guard.as_ref()?.keys.iter().find_map(|(_, cipher)| {
            cipher
                .decrypt(
                    &nonce,
                    Payload {
                        msg: ciphertext,
                        aad,
                    },
                )
                .ok()
        })
    }
}

/// Decodes a base64 key.
pub fn parse_key(text: &str) -> Result<Key, KeyringError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|error| KeyringError::BadBase64(error.to_string()))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyringError::BadLength(bytes.len()))
}

/// Encodes a key as base64 (standard alphabet, padded).
pub fn format_key(key: &Key) -> String {
    STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_rotation() {
        let old = [1u8; KEY_LEN];
        let new = [2u8; KEY_LEN];
        let sender = Keyring::with_primary(old);
        let receiver = Keyring::with_primary(old);
        let packet = sender.seal(b"hdr", b"hello", [7; NONCE_LEN]).unwrap();
        assert_eq!(
            receiver.open(b"hdr", &packet).as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            receiver.open(b"other header", &packet),
            None,
            "the header is authenticated"
        );
        let mut tampered = packet.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(receiver.open(b"hdr", &tampered), None);

        // Rotation: the receiver installs the new key, the sender switches.
        receiver.replace(old, &[new]);
        sender.replace(new, &[old]);
        let packet = sender.seal(b"hdr", b"rotated", [8; NONCE_LEN]).unwrap();
        assert_eq!(
            receiver.open(b"hdr", &packet).as_deref(),
            Some(&b"rotated"[..])
        );
        assert_eq!(
            Keyring::with_primary([3; KEY_LEN]).open(b"hdr", &packet),
            None
        );
    }

    #[test]
    fn keys_round_trip_as_base64() {
        let key: Key = std::array::from_fn(|i| (i * 37 + 11) as u8);
        let text = format_key(&key);
        assert_eq!(text.len(), 44);
        assert_eq!(parse_key(&text), Ok(key));
        assert_eq!(parse_key("c2hvcnQ="), Err(KeyringError::BadLength(5)));
        assert!(matches!(
            parse_key("not base64!"),
            Err(KeyringError::BadBase64(_))
        ));
    }
}
