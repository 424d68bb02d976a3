//! Join tokens, in k3s's shape: `K10<sha256 hex of the CA cert DER>::<secret>`.
//!
//! The hash lets a joining node trust the cluster's TLS server before it
//! has any certificate (it pins the CA); the secret proves to the cluster
//! that the node was invited. Only this full form is accepted (no bare
//! secrets: joining without pinning the CA would trust any server).
//! Secrets are compared in constant time; `Debug` never prints them.

use sha2::{Digest, Sha256};

const PREFIX: &str = "K10";
const SEPARATOR: &str = "::";
/// Longest secret accepted.
pub const MAX_SECRET_LEN: usize = 256;

/// Why a token string is not a join token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("join token is empty")]
    Empty,
    #[error("join token does not start with \"K10\"")]
    MissingPrefix,
    #[error("join token has no \"::\" between the CA hash and the secret")]
    MissingSeparator,
    #[error("join token CA hash has {len} characters, expected 64 hex digits")]
    HashLength { len: usize },
    #[error("join token CA hash is not hex")]
    HashNotHex,
    #[error("join token secret is empty")]
    EmptySecret,
    #[error("join token secret is longer than {MAX_SECRET_LEN} characters")]
    SecretTooLong,
    #[error("join token secret may only hold printable ASCII without spaces")]
    SecretCharacters,
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub(super) ca_hash: [u8; 32],
    pub(super) secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &hex::encode(self.ca_hash))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Display for JoinToken {
    /// The full token, secret included: print it only for the operator.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{PREFIX}{}{SEPARATOR}{}",
            hex::encode(self.ca_hash),
            self.secret
        )
    }
}

impl std::str::FromStr for JoinToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        Self::parse(s)
    }
}

impl JoinToken {
    /// A token for the CA with hash `ca_hash` and `secret`.
    pub fn new(ca_hash: [u8; 32], secret: &str) -> Result<Self, TokenError> {
        validate_secret(secret)?;
        Ok(Self {
            ca_hash,
            secret: secret.to_owned(),
        })
    }

    /// Parses `K10<64 hex>::<secret>`; surrounding whitespace is ignored
    /// (tokens are pasted from files and terminals).
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TokenError::Empty);
        }
        let rest = s.strip_prefix(PREFIX).ok_or(TokenError::MissingPrefix)?;
        let (hash, secret) = rest
            .split_once(SEPARATOR)
            .ok_or(TokenError::MissingSeparator)?;
        if hash.len() != 64 {
            return Err(TokenError::HashLength { len: hash.len() });
        }
        let mut ca_hash = [0u8; 32];
        hex::decode_to_slice(hash, &mut ca_hash).map_err(|_| TokenError::HashNotHex)?;
        validate_secret(secret)?;
        Ok(Self {
            ca_hash,
            secret: secret.to_owned(),
        })
    }

    /// The pinned CA hash (SHA-256 of the CA certificate's DER).
    pub fn ca_hash(&self) -> [u8; 32] {
        self.ca_hash
    }

    /// The secret part.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `candidate` equals the secret, in time independent of where
    /// they differ.
    pub fn secret_matches(&self, candidate: &str) -> bool {
        constant_time_eq(self.secret.as_bytes(), candidate.as_bytes())
    }

    /// Whether `der` is the pinned CA certificate.
    pub fn pins(&self, der: &[u8]) -> bool {
        constant_time_eq(&super::ca_hash(der), &self.ca_hash)
    }
}

/// A fresh random secret: 32 lowercase hex digits (128 bits).
pub fn generate_secret() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn validate_secret(secret: &str) -> Result<(), TokenError> {
    if secret.is_empty() {
        return Err(TokenError::EmptySecret);
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(TokenError::SecretTooLong);
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::SecretCharacters);
    }
    Ok(())
}

/// Compares digests of both inputs without an early exit, so neither the
/// position of the first difference nor a length mismatch shows in timing.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let ha = Sha256::digest(a);
    let hb = Sha256::digest(b);
    let mut diff = 0u8;
    for (x, y) in ha.iter().zip(hb.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn parses_and_prints_round_trip() {
        let text = format!("K10{HASH}::s3cret:with-colon");
        let token = JoinToken::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(hex::encode(token.ca_hash()), HASH);
        assert_eq!(token.secret(), "s3cret:with-colon");
        assert_eq!(token.to_string(), text);
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn every_malformed_shape_has_its_error() {
        let cases: Vec<(String, TokenError)> = vec![
            (String::new(), TokenError::Empty),
            ("   ".into(), TokenError::Empty),
            (format!("K11{HASH}::x"), TokenError::MissingPrefix),
            ("secret-only".into(), TokenError::MissingPrefix),
            (format!("K10{HASH}:x"), TokenError::MissingSeparator),
            ("K10abcd::x".into(), TokenError::HashLength { len: 4 }),
            (
                format!("K10{HASH}00::x"),
                TokenError::HashLength { len: 66 },
            ),
            (format!("K10{}::x", "zz".repeat(32)), TokenError::HashNotHex),
            (format!("K10{HASH}::"), TokenError::EmptySecret),
            (format!("K10{HASH}::a b"), TokenError::SecretCharacters),
            (
                format!("K10{HASH}::caf\u{e9}"),
                TokenError::SecretCharacters,
            ),
            (
                format!("K10{HASH}::{}", "a".repeat(MAX_SECRET_LEN + 1)),
                TokenError::SecretTooLong,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(JoinToken::parse(&text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn secret_comparison() {
        let token = JoinToken::new([7; 32], "abc").unwrap();
        assert!(token.secret_matches("abc"));
        assert!(!token.secret_matches("abd"));
        assert!(!token.secret_matches("ab"));
        assert!(!token.secret_matches(""));
        assert!(token.pins(b"x") == (super::super::ca_hash(b"x") == [7; 32]));
    }

    #[test]
    fn generated_secrets_are_valid_and_distinct() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        JoinToken::new([0; 32], &a).unwrap();
    }
}
