//! Sealing of gossip datagrams with the cluster key.
//!
//! Wire format of one UDP datagram:
//!
//! ```text
//! [0] MAGIC  [1] VERSION  [2..26] random XChaCha20 nonce  [26..] ciphertext + 16-byte tag
//! ```
//!
//! Guarantees: a datagram opens only if it was sealed with the same 32-byte
//! cluster key and neither the header, the nonce nor the ciphertext changed
//! (XChaCha20-Poly1305 with the two header bytes as associated data). The
//! nonce is 24 random bytes per datagram, so random nonces never repeat in
//! practice. Opening never panics: wrong magic/version, short, oversized or
//! forged datagrams are typed [`SealError`]s.
//!
//! Limit: a captured valid datagram replayed verbatim opens again (there is
//! no per-sender counter); foca's incarnation and probe numbers make a stale
//! replay carry only information the cluster already superseded.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};

/// First byte of every gossip datagram.
pub const MAGIC: u8 = 0xA7;
/// Second byte: the sealing format version.
pub const VERSION: u8 = 1;
/// Header length (magic + version), authenticated as associated data.
pub const HEADER_LEN: usize = 2;
/// XChaCha20 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed datagram adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// Why a datagram could not be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("datagram of {len} bytes is shorter than the {OVERHEAD}-byte envelope")]
    Truncated { len: usize },
    #[error("datagram of {len} bytes exceeds the limit of {max} bytes")]
    Oversized { len: usize, max: usize },
    #[error("datagram header {magic:#04x}/{version} is not gossip v{VERSION}")]
    BadHeader { magic: u8, version: u8 },
    #[error("datagram failed authentication (wrong cluster key or tampered)")]
    Forged,
    #[error("plaintext of {len} bytes exceeds the limit of {max} bytes")]
    PlaintextTooLarge { len: usize, max: usize },
}

/// Seals and opens datagrams under one cluster key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    max_datagram: usize,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("max_datagram", &self.max_datagram)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for `key` that refuses datagrams longer than `max_datagram`.
    pub fn new(key: &[u8; 32], max_datagram: usize) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(key)),
            max_datagram,
        }
    }

    /// Largest datagram this sealer produces or accepts.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Seals `plaintext` into a new datagram with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let max = self.max_datagram.saturating_sub(OVERHEAD);
        if plaintext.len() > max {
            return Err(SealError::PlaintextTooLarge {
                len: plaintext.len(),
                max,
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&[MAGIC, VERSION]);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (head, body) = out.split_at_mut(HEADER_LEN + NONCE_LEN);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&head[HEADER_LEN..]),
                &head[..HEADER_LEN],
                body,
            )
            // Encryption fails only past the cipher's 256 GiB message limit,
            // far above `max_datagram`.
            .map_err(|_| SealError::PlaintextTooLarge {
                len: plaintext.len(),
                max,
            })?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a datagram, returning its plaintext.
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, SealError> {
        let len = datagram.len();
        if len > self.max_datagram {
            return Err(SealError::Oversized {
                len,
                max: self.max_datagram,
            });
        }
        if len < OVERHEAD {
            return Err(SealError::Truncated { len });
        }
        if datagram[0] != MAGIC || datagram[1] != VERSION {
            return Err(SealError::BadHeader {
                magic: datagram[0],
                version: datagram[1],
            });
        }
        let (header, rest) = datagram.split_at(HEADER_LEN);
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plain = body.to_vec();
        self.cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                header,
                &mut plain,
                Tag::from_slice(tag),
            )
            .map_err(|_| SealError::Forged)?;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn round_trip() {
        let s = Sealer::new(&KEY, 1500);
        let sealed = s.seal(b"hello gossip").unwrap();
        assert_eq!(sealed.len(), 12 + OVERHEAD);
        assert_eq!(s.open(&sealed).unwrap(), b"hello gossip");
        assert_eq!(s.open(&s.seal(b"").unwrap()).unwrap(), b"");
    }

    #[test]
    fn nonces_differ_per_packet() {
        let s = Sealer::new(&KEY, 1500);
        let a = s.seal(b"same").unwrap();
        let b = s.seal(b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let s = Sealer::new(&KEY, 1500);
        let sealed = s.seal(b"membership update").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = s.open(&bad).unwrap_err();
            if i < HEADER_LEN {
                assert!(
                    matches!(err, SealError::BadHeader { .. }),
                    "byte {i}: {err}"
                );
            } else {
                assert_eq!(err, SealError::Forged, "byte {i}");
            }
        }
    }

    #[test]
    fn wrong_key_truncated_oversized_are_refused() {
        let s = Sealer::new(&KEY, 100);
        let other = Sealer::new(&[8; 32], 100);
        let sealed = s.seal(b"x").unwrap();
        assert_eq!(other.open(&sealed), Err(SealError::Forged));
        assert_eq!(
            s.open(&sealed[..OVERHEAD - 1]),
            Err(SealError::Truncated { len: OVERHEAD - 1 })
        );
        assert_eq!(s.open(&sealed[..sealed.len() - 1]), Err(SealError::Forged));
        assert_eq!(
            s.open(&[0u8; 101]),
            Err(SealError::Oversized { len: 101, max: 100 })
        );
        assert!(matches!(
            s.seal(&[0u8; 100]),
            Err(SealError::PlaintextTooLarge { .. })
        ));
        assert!(matches!(
            s.open(&[0u8; 60]),
            Err(SealError::BadHeader {
                magic: 0,
                version: 0
            })
        ));
    }
}
