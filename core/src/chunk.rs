//! Worker-local chunks on shared counters: a worker takes units from a shared-data counter in
//! chunks and spends them without a host call. Units are counted in shared data when granted,
//! so the shared count never falls behind what was admitted (no overshoot); units a worker does
//! not spend are lost (a small, bounded undershoot). Chunks shrink as the limit nears:
//! `max(1, min(available / 8, limit / 200))`, so a small limit (≤ 200) is counted one request at
//! a time, exactly, and the units left unspent across workers stay under about 1 % of the limit.

use crate::fast_hash::FastMap;
use std::hash::Hash;

pub fn chunk(limit: u64, available: u64) -> u64 {
    (available / 8).min(limit / 200).max(1).min(available)
}

/// A bounded map of chunks: when full it is emptied (dropping chunks only loses their unspent
/// units, which is conservative).
pub struct ChunkBook<K, V> {
    entries: FastMap<K, V>,
    max_entries: usize,
}

impl<K: Eq + Hash, V> ChunkBook<K, V> {
    pub fn new(max_entries: usize) -> Self {
        ChunkBook {
            entries: FastMap::default(),
            max_entries: max_entries.max(1),
        }
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            self.entries.clear();
        }
        self.entries.insert(key, value);
    }

    pub fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_exact_for_small_limits_and_shrink_near_the_limit() {
        assert_eq!(chunk(100, 100), 1);
        assert_eq!(chunk(1_000, 1_000), 5);
        assert_eq!(chunk(1_000, 16), 2);
        assert_eq!(chunk(1_000, 3), 1);
        assert_eq!(chunk(1_000_000, 1_000_000), 5_000);
        assert_eq!(chunk(1_000_000, 80), 10);
        assert_eq!(chunk(5, 0), 0);
    }

    #[test]
    fn book_is_bounded() {
        let mut book = ChunkBook::new(2);
        book.insert(1, "a");
        book.insert(2, "b");
        book.insert(2, "c");
        assert_eq!(book.len(), 2);
        book.insert(3, "d");
        assert_eq!(book.len(), 1);
        assert_eq!(book.get_mut(&3), Some(&mut "d"));
    }
}
