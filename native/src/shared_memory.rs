//! The core's `SharedStore` in the module's own memory. A dynamic module is one copy per Envoy
//! process, so what the wasm build keeps in Envoy's shared data (key states, lease records,
//! plan-limit and key-limit counters, blocked IPs) lives here, with the same semantics: a
//! value and a version per key, compare-and-swap on the version.
//!
//! Sharded by key hash: a get or set locks one of `SHARDS` mutexes for a map operation and a
//! copy, so workers never wait on each other unless they touch the same shard at the same
//! instant. Bound: the core bounds its keys (every table of docs/architecture.md "Bounds"
//! that lives in shared data has a fixed number of slots), and nothing is ever removed, as in
//! Envoy's shared data.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::{Mutex, MutexGuard};
use tollgate_core::fast_hash::FastHasher;
use tollgate_core::host::{SharedStore, StoreError};

const SHARDS: usize = 64;

type Shard = HashMap<String, (Vec<u8>, u32), BuildHasherDefault<FastHasher>>;

pub struct SharedMemory {
    shards: Vec<Mutex<Shard>>,
}

impl Default for SharedMemory {
    fn default() -> SharedMemory {
        SharedMemory {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

impl SharedMemory {
    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let hash = BuildHasherDefault::<FastHasher>::default().hash_one(key);
        let index = (hash >> 32) as usize % SHARDS;
        // A panic caught by the barrier while a shard was locked poisons it; the map itself
        // is whole (every change below is one insert or one assignment), so keep using it.
        match self.shards[index].lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl SharedStore for SharedMemory {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        Ok(self.shard(key).get(key).cloned())
    }

    /// Envoy's rules: a missing key is inserted whatever the CAS; `None` (or 0) overwrites.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut shard = self.shard(key);
        match shard.get_mut(key) {
            Some((stored, version)) => {
                if let Some(expected) = cas.filter(|c| *c != 0) {
                    if expected != *version {
                        return Err(StoreError::CasMismatch);
                    }
                }
                stored.clear();
                stored.extend_from_slice(value);
                // Never 0: a CAS of 0 means "unconditionally".
                *version = version.wrapping_add(1).max(1);
            }
            None => {
                shard.insert(key.to_string(), (value.to_vec(), 1));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn follows_envoy_cas_rules() {
        let store = SharedMemory::default();
        assert_eq!(store.get("k").unwrap(), None);
        // A missing key is inserted whatever the CAS.
        store.set("k", b"a", Some(42)).unwrap();
        let (value, cas) = store.get("k").unwrap().unwrap();
        assert_eq!(value, b"a");
        store.set("k", b"b", Some(cas)).unwrap();
        assert_eq!(
            store.set("k", b"c", Some(cas)),
            Err(StoreError::CasMismatch)
        );
        // No CAS overwrites unconditionally.
        store.set("k", b"d", None).unwrap();
        assert_eq!(store.get("k").unwrap().unwrap().0, b"d");
    }

    #[test]
    fn concurrent_cas_increments_lose_nothing() {
        let store = Arc::new(SharedMemory::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        loop {
                            let (n, cas) = match store.get("n").unwrap() {
                                Some((bytes, cas)) => {
                                    (u64::from_le_bytes(bytes.try_into().unwrap()), Some(cas))
                                }
                                // Created only if still missing (the core's CREATE_ONLY).
                                None => (0, Some(u32::MAX)),
                            };
                            let next = (n + 1).to_le_bytes();
                            match store.set("n", &next, cas) {
                                Ok(()) => break,
                                Err(StoreError::CasMismatch) => continue,
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let (bytes, _) = store.get("n").unwrap().unwrap();
        assert_eq!(u64::from_le_bytes(bytes.try_into().unwrap()), 4_000);
    }
}
