//! Base62 (`0-9A-Za-z`, URL-safe): random strings for secrets, ids and tokens, and the fixed-width
//! encoding of the secret checksum.

use rand::RngCore;

pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Bytes at or above this are rejected so that `byte % 62` stays uniform (248 = 4 * 62).
const REJECT_FROM: u8 = 248;

/// `len` characters drawn uniformly from the alphabet with a CSPRNG (`ThreadRng` is ChaCha
/// reseeded from the OS), using rejection sampling so no character is more likely than another.
pub fn random(len: usize) -> String {
    let mut rng = rand::rng();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill_bytes(&mut buf);
        for &b in buf.iter().filter(|&&b| b < REJECT_FROM) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(b % 62)]));
        }
    }
    out
}

pub fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `value` in base62, most significant digit first, left-padded with `0` to `width` digits.
/// Digits beyond `width` are dropped (the caller picks a width that fits its values).
pub fn encode_fixed(mut value: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    digits.into_iter().map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_has_requested_length_and_alphabet() {
        for len in [0, 1, 16, 33, 100] {
            let s = random(len);
            assert_eq!(s.len(), len);
            assert!(is_base62(&s), "{s}");
        }
    }

    #[test]
    fn random_uses_the_whole_alphabet() {
        // 62 * 200 draws: the chance that a given character never appears is negligible.
        let s = random(62 * 200);
        for c in ALPHABET {
            assert!(
                s.as_bytes().contains(c),
                "character {} never drawn",
                char::from(*c)
            );
        }
    }

    #[test]
    fn random_differs_between_calls() {
        assert_ne!(random(33), random(33));
    }

    #[test]
    fn encode_fixed_pads_and_orders_digits() {
        assert_eq!(encode_fixed(0, 6), "000000");
        assert_eq!(encode_fixed(61, 3), "00z");
        assert_eq!(encode_fixed(62, 3), "010");
        assert_eq!(encode_fixed(u64::from(u32::MAX), 6), "4gfFC3");
    }

    #[test]
    fn is_base62_rejects_other_characters() {
        assert!(is_base62("abcXYZ019"));
        assert!(!is_base62("abc-def"));
        assert!(!is_base62("é"));
    }
}
