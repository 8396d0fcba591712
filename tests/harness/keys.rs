//! API key secrets as docs/protocol.md defines them: `tg_` + 33 base62 characters + a 6-character
//! base62 CRC-32 of the first 36 characters. Used to make keys that are well formed but unknown
//! to the control plane, and malformed variants.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
pub const PREFIX: &str = "tg_";
pub const RANDOM_LEN: usize = 33;
pub const CHECKSUM_LEN: usize = 6;
pub const KEY_LEN: usize = 42;

/// The 6-character checksum of the first 36 characters (`tg_` + random part).
pub fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(digits.to_vec()).expect("base62 is ASCII")
}

/// A well-formed key with the given 33-character random part.
pub fn key_from_random(random: &str) -> String {
    assert_eq!(
        random.len(),
        RANDOM_LEN,
        "random part must be 33 characters"
    );
    assert!(random.bytes().all(|b| ALPHABET.contains(&b)));
    let body = format!("{PREFIX}{random}");
    let sum = checksum(&body);
    format!("{body}{sum}")
}

/// A fresh, well-formed key that no control plane has issued (with overwhelming probability).
pub fn unknown_key() -> String {
    key_from_random(&random_base62(RANDOM_LEN))
}

/// A key with a valid shape whose checksum is wrong.
pub fn bad_checksum_key() -> String {
    let good = unknown_key();
    let (body, sum) = good.split_at(KEY_LEN - CHECKSUM_LEN);
    let wrong = if sum.starts_with('0') { '1' } else { '0' };
    format!("{body}{wrong}{}", &sum[1..])
}

/// Whether `key` is well formed (length, prefix, alphabet, checksum).
pub fn is_well_formed(key: &str) -> bool {
    key.len() == KEY_LEN
        && key.starts_with(PREFIX)
        && key[PREFIX.len()..].bytes().all(|b| ALPHABET.contains(&b))
        && checksum(&key[..KEY_LEN - CHECKSUM_LEN]) == key[KEY_LEN - CHECKSUM_LEN..]
}

/// Not cryptographic: tests only need distinct values.
fn random_base62(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = RandomState::new();
    let mut out = String::with_capacity(len);
    let mut round = 0u64;
    while out.len() < len {
        let mut h = state.build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u64(round);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        let mut x = h.finish();
        for _ in 0..10 {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(x % 62) as usize] as char);
            x /= 62;
        }
        round += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = "tg_AbCdEfGhIjKlMnOpQrStUvWxYz01234561huhoC";

    #[test]
    fn protocol_test_vector() {
        assert_eq!(crc32fast::hash(&VECTOR.as_bytes()[..36]), 0x5d48_76a4);
        assert_eq!(checksum(&VECTOR[..36]), "1huhoC");
        assert_eq!(key_from_random(&VECTOR[3..36]), VECTOR);
        assert!(is_well_formed(VECTOR));
    }

    #[test]
    fn generated_keys() {
        let a = unknown_key();
        let b = unknown_key();
        assert_ne!(a, b);
        assert!(is_well_formed(&a), "{a}");
        let bad = bad_checksum_key();
        assert_eq!(bad.len(), KEY_LEN);
        assert!(!is_well_formed(&bad), "{bad}");
    }
}
