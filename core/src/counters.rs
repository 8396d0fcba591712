//! Shared-data counters: fixed-size little-endian `u64` records updated with bounded CAS loops.
//!
//! Envoy's rules (docs: envoy-wasm-facts): a missing key is inserted whatever the CAS, and CAS
//! `None`/0 overwrites unconditionally. So a record is created with `CREATE_ONLY` (a CAS no
//! existing record carries), every update passes the CAS it read, and a mismatch re-reads.

use crate::host::{SharedStore, StoreError};

/// CAS for "create only if absent": a present record never has this CAS in practice.
pub const CREATE_ONLY: u32 = u32::MAX;
/// Attempts before giving up on a contended record (1.2 % of attempts retry at 59k rps).
pub const MAX_ATTEMPTS: usize = 16;

pub fn decode(bytes: &[u8], words: usize) -> Option<Vec<u64>> {
    if bytes.len() != words * 8 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    )
}

pub fn encode(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// What an update function decided for the record it was shown.
pub enum Update<T> {
    /// Write this record and return `T` once the write wins.
    Write(Vec<u64>, T),
    /// Leave the record alone and return `T`.
    Keep(T),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterError {
    /// Every attempt lost to a concurrent writer.
    Contended,
    Host(&'static str),
}

/// Reads the record at `key` (`None` if absent or not `words` long), lets `update` decide,
/// and writes with CAS, retrying on mismatch.
pub fn update<T>(
    store: &dyn SharedStore,
    key: &str,
    words: usize,
    mut update: impl FnMut(Option<&[u64]>) -> Update<T>,
) -> Result<T, CounterError> {
    for _ in 0..MAX_ATTEMPTS {
        let (current, cas) = match store.get(key) {
            Ok(Some((bytes, cas))) => (decode(&bytes, words), cas),
            Ok(None) => (None, CREATE_ONLY),
            Err(StoreError::Host(e)) => return Err(CounterError::Host(e)),
            Err(StoreError::CasMismatch) => continue,
        };
        // An unreadable record (wrong size) is replaced, but still only through its own CAS.
        let cas = if cas == 0 { CREATE_ONLY } else { cas };
        match update(current.as_deref()) {
            Update::Keep(result) => return Ok(result),
            Update::Write(record, result) => match store.set(key, &encode(&record), Some(cas)) {
                Ok(()) => return Ok(result),
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Host(e)) => return Err(CounterError::Host(e)),
            },
        }
    }
    Err(CounterError::Contended)
}

/// 64-bit FNV-1a: slot selection for identifiers that are not secrets.
pub fn fnv1a(text: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in text {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    #[test]
    fn increments_are_exact_and_creation_is_once() {
        let host = FakeHost::default();
        for _ in 0..10 {
            update(&host, "c", 1, |r| {
                let n = r.map_or(0, |r| r[0]);
                Update::Write(vec![n + 1], ())
            })
            .unwrap();
        }
        assert_eq!(decode(&host.data.borrow()["c"].0, 1), Some(vec![10]));
    }

    #[test]
    fn lost_race_re_reads() {
        let host = FakeHost::default();
        update(&host, "c", 1, |_| Update::Write(vec![1], ())).unwrap();
        let mut first = true;
        let result = update(&host, "c", 1, |r| {
            if first {
                first = false;
                // Another worker writes between our read and our write.
                host.set("c", &encode(&[5]), None).unwrap();
            }
            Update::Write(vec![r.unwrap()[0] + 1], r.unwrap()[0])
        })
        .unwrap();
        assert_eq!(result, 5, "the second attempt saw the other worker's value");
        assert_eq!(decode(&host.data.borrow()["c"].0, 1), Some(vec![6]));
    }

    #[test]
    fn gives_up_after_bounded_attempts() {
        let host = FakeHost::default();
        update(&host, "c", 1, |_| Update::Write(vec![1], ())).unwrap();
        let result: Result<(), _> = update(&host, "c", 1, |_| {
            host.set("c", &encode(&[9]), None).unwrap();
            Update::Write(vec![0], ())
        });
        assert_eq!(result, Err(CounterError::Contended));
    }
}
