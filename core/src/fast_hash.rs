//! A small multiplicative hasher for the filter's in-VM maps (context ids, key hashes, counter
//! owners). std's default SipHash costs a few hundred wasm instructions per lookup, which shows
//! on a request path measured in host calls. The keys are either ours (context ids, small
//! integers) or already uniformly distributed (SHA-256 key hashes), and every such map has a
//! fixed bound, so resistance to chosen collisions buys nothing here.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

#[derive(Default, Clone, Copy)]
pub struct FastHasher {
    hash: u64,
}

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // hashbrown places by the low bits and filters by the top 7: mix both ends.
        let h = self.hash ^ (self.hash >> 33);
        let h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_work_and_spread_small_integers() {
        let mut map: FastMap<u32, u32> = FastMap::default();
        for i in 0..10_000 {
            map.insert(i, i * 2);
        }
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.get(&4_242), Some(&8_484));
        let mut seen = std::collections::HashSet::new();
        for i in 0..1_000u32 {
            let mut h = FastHasher::default();
            h.write_u32(i);
            seen.insert(h.finish() >> 54); // top 10 bits pick hashbrown's groups
        }
        assert!(seen.len() > 500, "only {} distinct top bits", seen.len());
    }
}
