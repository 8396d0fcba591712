//! The API key secret format (docs/protocol.md): `tg_` + 33 base62 characters + a 6-character
//! base62 CRC-32. Checking it locally lets the filter reject typos and garbage without a callout.

use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &[u8] = b"tg_";
pub const KEY_LEN: usize = 42;
const CHECKSUM_LEN: usize = 6;
const BODY_LEN: usize = KEY_LEN - CHECKSUM_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// SHA-256 of a well-formed secret: the only form in which a key is kept or sent anywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<KeyHash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(KeyHash(out))
    }

    /// Index into a table of `slots` entries (direct-mapped caches, counters).
    pub fn slot(self, slots: usize) -> usize {
        let n = u64::from_le_bytes([
            self.0[0], self.0[1], self.0[2], self.0[3], self.0[4], self.0[5], self.0[6], self.0[7],
        ]);
        (n % slots.max(1) as u64) as usize
    }

    /// Short, non-reversible tag for log lines (never the secret).
    pub fn short(self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({})", self.short())
    }
}

/// Why a presented key was rejected without asking the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedKey {
    Length,
    Prefix,
    Alphabet,
    Checksum,
}

/// Checks format and checksum, then hashes.
pub fn parse_key(raw: &[u8]) -> Result<KeyHash, MalformedKey> {
    if raw.len() != KEY_LEN {
        return Err(MalformedKey::Length);
    }
    if &raw[..KEY_PREFIX.len()] != KEY_PREFIX {
        return Err(MalformedKey::Prefix);
    }
    if !raw[KEY_PREFIX.len()..]
        .iter()
        .all(u8::is_ascii_alphanumeric)
    {
        return Err(MalformedKey::Alphabet);
    }
    if encode_checksum(crc32(&raw[..BODY_LEN])) != raw[BODY_LEN..] {
        return Err(MalformedKey::Checksum);
    }
    Ok(KeyHash(Sha256::digest(raw).into()))
}

/// CRC-32 (IEEE, reflected 0xEDB88320) byte table, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE), table-driven: it runs on every request.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc = (crc >> 8) ^ CRC_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize];
    }
    !crc
}

pub fn encode_checksum(mut crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = "tg_AbCdEfGhIjKlMnOpQrStUvWxYz01234561huhoC";

    #[test]
    fn protocol_test_vector() {
        assert_eq!(crc32(&VECTOR.as_bytes()[..36]), 0x5d48_76a4);
        let hash = parse_key(VECTOR.as_bytes()).unwrap();
        assert_eq!(
            hash.to_hex(),
            "7f9e105d15b376af7af578fb88118a3748eef28aa0ff95e4fa8fd8ff43e51617"
        );
        assert_eq!(KeyHash::from_hex(&hash.to_hex()), Some(hash));
    }

    #[test]
    fn rejects_each_kind_of_malformed_key() {
        assert_eq!(parse_key(b"tg_short"), Err(MalformedKey::Length));
        let mut wrong_prefix = VECTOR.as_bytes().to_vec();
        wrong_prefix[0] = b'x';
        assert_eq!(parse_key(&wrong_prefix), Err(MalformedKey::Prefix));
        let mut bad_char = VECTOR.as_bytes().to_vec();
        bad_char[10] = b'-';
        assert_eq!(parse_key(&bad_char), Err(MalformedKey::Alphabet));
        // One typo in the random part breaks the checksum.
        let mut typo = VECTOR.as_bytes().to_vec();
        typo[10] = b'Z';
        assert_eq!(parse_key(&typo), Err(MalformedKey::Checksum));
        // Two keys joined by a proxy (repeated header) are malformed too.
        assert_eq!(
            parse_key(format!("{VECTOR}, {VECTOR}").as_bytes()),
            Err(MalformedKey::Length)
        );
    }

    #[test]
    fn slots_spread_and_stay_in_range() {
        let hash = parse_key(VECTOR.as_bytes()).unwrap();
        for n in [1, 7, 8192] {
            assert!(hash.slot(n) < n);
        }
        assert_eq!(hash.slot(0), 0);
    }
}
