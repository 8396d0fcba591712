//! API key secrets in the format of `docs/protocol.md`:
//! `tg_` + 33 random base62 + 6-character base62 CRC-32 of the first 36 characters.
//!
//! A secret exists in memory only between its generation and the response that returns it; the
//! database keeps its SHA-256 ([`SecretHash`]) and its first 8 characters.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::base62;

pub const PREFIX: &str = "tg_";
pub const RANDOM_LEN: usize = 33;
pub const CHECKSUM_LEN: usize = 6;
pub const SECRET_LEN: usize = PREFIX.len() + RANDOM_LEN + CHECKSUM_LEN;
/// How many leading characters are kept to help people recognise a key (`tg_AbCdE`).
pub const DISPLAY_PREFIX_LEN: usize = 8;

/// A plaintext API key secret. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub fn generate() -> Self {
        let mut s = String::with_capacity(SECRET_LEN);
        s.push_str(PREFIX);
        s.push_str(&base62::random(RANDOM_LEN));
        let checksum = checksum(&s);
        s.push_str(&checksum);
        Self(s)
    }

    /// Accepts exactly the well-formed secrets (length, prefix, alphabet, checksum).
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != SECRET_LEN || !s.starts_with(PREFIX) {
            return None;
        }
        let (body, check) = s.split_at(PREFIX.len() + RANDOM_LEN);
        if !base62::is_base62(&body[PREFIX.len()..]) || checksum(body) != check {
            return None;
        }
        Some(Self(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }

    pub fn display_prefix(&self) -> String {
        self.0[..DISPLAY_PREFIX_LEN].to_owned()
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret({}…)", &self.0[..DISPLAY_PREFIX_LEN])
    }
}

/// CRC-32 (zlib/IEEE) of the ASCII bytes, as 6 base62 digits (u32::MAX fits in 6).
fn checksum(body: &str) -> String {
    base62::encode_fixed(u64::from(crc32fast::hash(body.as_bytes())), CHECKSUM_LEN)
}

/// Lowercase hex SHA-256 of a secret: what the filter sends and what the database indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretHash(String);

impl SecretHash {
    /// Accepts exactly 64 lowercase hex characters.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = "tg_AbCdEfGhIjKlMnOpQrStUvWxYz01234561huhoC";
    const VECTOR_SHA256: &str = "7f9e105d15b376af7af578fb88118a3748eef28aa0ff95e4fa8fd8ff43e51617";

    #[test]
    fn protocol_test_vector() {
        let body = &VECTOR[..36];
        assert_eq!(crc32fast::hash(body.as_bytes()), 0x5d48_76a4);
        assert_eq!(checksum(body), "1huhoC");
        let secret = ApiKeySecret::parse(VECTOR).expect("test vector parses");
        assert_eq!(secret.hash().as_str(), VECTOR_SHA256);
        assert_eq!(secret.display_prefix(), "tg_AbCdE");
    }

    #[test]
    fn generated_secrets_are_well_formed_and_distinct() {
        let a = ApiKeySecret::generate();
        let b = ApiKeySecret::generate();
        assert_ne!(a, b);
        for s in [&a, &b] {
            let text = s.expose();
            assert_eq!(text.len(), SECRET_LEN);
            assert!(text.starts_with("tg_"));
            assert!(base62::is_base62(&text[3..]));
            assert_eq!(ApiKeySecret::parse(text).as_ref(), Some(s));
            assert!(SecretHash::parse(s.hash().as_str()).is_some());
        }
    }

    #[test]
    fn malformed_secrets_are_rejected() {
        let mut wrong_check = VECTOR.to_owned();
        wrong_check.replace_range(41..42, "D");
        let mut wrong_char = VECTOR.to_owned();
        wrong_char.replace_range(10..11, "-");
        let cases = [
            "",
            &VECTOR[..41],
            &format!("{VECTOR}0"),
            &VECTOR.replacen("tg_", "tk_", 1),
            &wrong_check,
            &wrong_char,
        ];
        for case in cases {
            assert!(ApiKeySecret::parse(case).is_none(), "accepted {case:?}");
        }
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let s = ApiKeySecret::generate();
        let printed = format!("{s:?}");
        assert!(!printed.contains(&s.expose()[8..]), "{printed}");
    }

    #[test]
    fn hash_parse_requires_64_lowercase_hex() {
        assert!(SecretHash::parse(VECTOR_SHA256).is_some());
        assert!(SecretHash::parse(&VECTOR_SHA256.to_uppercase()).is_none());
        assert!(SecretHash::parse(&VECTOR_SHA256[1..]).is_none());
        assert!(SecretHash::parse(&format!("{}g", &VECTOR_SHA256[1..])).is_none());
    }
}
