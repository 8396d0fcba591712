//! Key-state cache: a direct-mapped table in each worker's VM (no host call on a hit) backed by
//! a direct-mapped table in shared data (so one worker's lookup serves the others).
//!
//! Bounds: `max_keys` slots for known keys and `max_invalid_keys` slots for unknown ones, in the
//! VM and in shared data alike. A new key takes its slot over from whatever hashed there, so a
//! flood of invalid keys can only evict other invalid keys. Shared data is never freed, which is
//! why slots are reused instead of one shared-data key per API key.

use crate::api_key::KeyHash;
use crate::host::SharedStore;
use crate::key_state::{KeyState, KeyStateWire};
use serde::{Deserialize, Serialize};
use std::rc::Rc;

#[derive(Debug, Clone)]
pub enum Known {
    Valid(Rc<KeyState>),
    /// The control plane answered 404.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub hash: KeyHash,
    pub known: Known,
    pub fetched_ms: u64,
    pub fresh_until_ms: u64,
    /// While the control plane is failing, a stale entry is used as is until this time instead
    /// of making every request wait for another failing callout.
    pub retry_after_ms: u64,
}

impl CacheEntry {
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until_ms
    }

    fn is_valid(&self) -> bool {
        matches!(self.known, Known::Valid(_))
    }
}

#[derive(Debug, Clone)]
pub enum CacheLookup {
    Fresh(CacheEntry),
    /// Past its TTL: refresh before trusting it, but use it if the refresh fails.
    Stale(CacheEntry),
    Miss,
}

/// Shared-data form of an entry.
#[derive(Serialize, Deserialize)]
struct SharedEntry {
    h: String,
    f: u64,
    u: u64,
    s: Option<KeyStateWire>,
}

pub struct KeyCache {
    valid: Vec<Option<CacheEntry>>,
    unknown: Vec<Option<CacheEntry>>,
}

const VALID_PREFIX: &str = "tollgate.key.";
const UNKNOWN_PREFIX: &str = "tollgate.unknown.";

impl KeyCache {
    pub fn new(max_keys: usize, max_invalid_keys: usize) -> KeyCache {
        KeyCache {
            valid: vec![None; max_keys.max(1)],
            unknown: vec![None; max_invalid_keys.max(1)],
        }
    }

    fn local(&self, hash: KeyHash) -> Option<&CacheEntry> {
        let valid = self.valid[hash.slot(self.valid.len())]
            .as_ref()
            .filter(|e| e.hash == hash);
        let unknown = self.unknown[hash.slot(self.unknown.len())]
            .as_ref()
            .filter(|e| e.hash == hash);
        match (valid, unknown) {
            (Some(v), Some(u)) => Some(if u.fetched_ms > v.fetched_ms { u } else { v }),
            (v, u) => v.or(u),
        }
    }

    pub fn lookup(&mut self, store: &dyn SharedStore, hash: KeyHash, now_ms: u64) -> CacheLookup {
        if let Some(entry) = self.local(hash) {
            if entry.is_fresh(now_ms) {
                return CacheLookup::Fresh(entry.clone());
            }
        }
        // Not fresh here: another worker may have fetched it already.
        let local_fetched = self.local(hash).map_or(0, |e| e.fetched_ms);
        for valid in [true, false] {
            if let Some(shared) = self.read_shared(store, hash, valid) {
                if shared.fetched_ms > local_fetched {
                    self.put_local(shared);
                }
            }
        }
        match self.local(hash) {
            Some(entry) if entry.is_fresh(now_ms) => CacheLookup::Fresh(entry.clone()),
            Some(entry) => CacheLookup::Stale(entry.clone()),
            None => CacheLookup::Miss,
        }
    }

    /// Stores a fresh answer here and in shared data (last writer wins: answers are snapshots).
    pub fn insert(&mut self, store: &dyn SharedStore, entry: CacheEntry) -> Result<(), String> {
        let shared = SharedEntry {
            h: entry.hash.to_hex(),
            f: entry.fetched_ms,
            u: entry.fresh_until_ms,
            s: match &entry.known {
                Known::Valid(state) => Some(state.wire.clone()),
                Known::Unknown => None,
            },
        };
        let key = shared_key(entry.hash, entry.is_valid(), self.slots(entry.is_valid()));
        self.put_local(entry);
        let bytes = serde_json::to_vec(&shared).map_err(|e| e.to_string())?;
        store
            .set(&key, &bytes, None)
            .map_err(|e| format!("shared data set {key}: {e:?}"))
    }

    /// The control plane failed: keep serving the stale entry without asking again until
    /// `retry_after_ms`.
    pub fn back_off(&mut self, hash: KeyHash, retry_after_ms: u64) {
        for table in [&mut self.valid, &mut self.unknown] {
            let len = table.len();
            if let Some(entry) = table[hash.slot(len)].as_mut().filter(|e| e.hash == hash) {
                entry.retry_after_ms = retry_after_ms;
            }
        }
    }

    /// Entries worth refreshing before they go stale (refresh-ahead).
    pub fn valid_entries(&self) -> impl Iterator<Item = &CacheEntry> {
        self.valid.iter().flatten()
    }

    fn slots(&self, valid: bool) -> usize {
        if valid {
            self.valid.len()
        } else {
            self.unknown.len()
        }
    }

    fn put_local(&mut self, entry: CacheEntry) {
        let hash = entry.hash;
        let (table, other) = if entry.is_valid() {
            (&mut self.valid, &mut self.unknown)
        } else {
            (&mut self.unknown, &mut self.valid)
        };
        let len = table.len();
        table[hash.slot(len)] = Some(entry);
        // A key is either valid or unknown: drop the older verdict from the other table.
        let len = other.len();
        if other[hash.slot(len)]
            .as_ref()
            .is_some_and(|e| e.hash == hash)
        {
            other[hash.slot(len)] = None;
        }
    }

    fn read_shared(
        &self,
        store: &dyn SharedStore,
        hash: KeyHash,
        valid: bool,
    ) -> Option<CacheEntry> {
        let key = shared_key(hash, valid, self.slots(valid));
        let (bytes, _) = store.get(&key).ok()??;
        let shared: SharedEntry = serde_json::from_slice(&bytes).ok()?;
        if KeyHash::from_hex(&shared.h)? != hash {
            return None;
        }
        let known = match shared.s {
            Some(wire) => Known::Valid(Rc::new(KeyState::from_wire(wire).ok()?)),
            None => Known::Unknown,
        };
        Some(CacheEntry {
            hash,
            known,
            fetched_ms: shared.f,
            fresh_until_ms: shared.u,
            retry_after_ms: 0,
        })
    }
}

fn shared_key(hash: KeyHash, valid: bool, slots: usize) -> String {
    let prefix = if valid { VALID_PREFIX } else { UNKNOWN_PREFIX };
    format!("{prefix}{}", hash.slot(slots))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    fn hash(n: u8) -> KeyHash {
        KeyHash([n; 32])
    }

    fn valid(h: KeyHash, fetched: u64, ttl: u64) -> CacheEntry {
        let state =
            KeyState::parse(br#"{"key_id":"key_1","workspace_id":"ws_1","active":true}"#).unwrap();
        CacheEntry {
            hash: h,
            known: Known::Valid(Rc::new(state)),
            fetched_ms: fetched,
            fresh_until_ms: fetched + ttl,
            retry_after_ms: 0,
        }
    }

    fn unknown(h: KeyHash, fetched: u64, ttl: u64) -> CacheEntry {
        CacheEntry {
            known: Known::Unknown,
            ..valid(h, fetched, ttl)
        }
    }

    #[test]
    fn fresh_hit_needs_no_host_call() {
        let host = FakeHost::default();
        let mut cache = KeyCache::new(16, 16);
        cache.insert(&host, valid(hash(1), 0, 5_000)).unwrap();
        assert!(matches!(
            cache.lookup(&host, hash(1), 4_999),
            CacheLookup::Fresh(_)
        ));
        assert_eq!(host.gets.get(), 0);
        assert!(matches!(
            cache.lookup(&host, hash(1), 5_000),
            CacheLookup::Stale(_)
        ));
        assert!(matches!(cache.lookup(&host, hash(2), 0), CacheLookup::Miss));
    }

    #[test]
    fn another_worker_sees_the_shared_answer() {
        let host = FakeHost::default();
        let mut worker_a = KeyCache::new(16, 16);
        let mut worker_b = KeyCache::new(16, 16);
        worker_a.insert(&host, valid(hash(3), 100, 5_000)).unwrap();
        match worker_b.lookup(&host, hash(3), 200) {
            CacheLookup::Fresh(entry) => assert!(entry.is_valid()),
            other => panic!("expected a fresh shared hit, got {other:?}"),
        }
        // Now cached locally in B: no further shared read.
        let gets = host.gets.get();
        assert!(matches!(
            worker_b.lookup(&host, hash(3), 300),
            CacheLookup::Fresh(_)
        ));
        assert_eq!(host.gets.get(), gets);
    }

    #[test]
    fn slots_are_bounded_and_collisions_evict() {
        let host = FakeHost::default();
        let mut cache = KeyCache::new(1, 1);
        cache.insert(&host, valid(hash(1), 0, 5_000)).unwrap();
        cache.insert(&host, valid(hash(2), 0, 5_000)).unwrap();
        assert!(matches!(cache.lookup(&host, hash(1), 1), CacheLookup::Miss));
        assert!(matches!(
            cache.lookup(&host, hash(2), 1),
            CacheLookup::Fresh(_)
        ));
        // Unknown keys live in their own table: they never evict known keys.
        for n in 10..50 {
            cache.insert(&host, unknown(hash(n), 0, 5_000)).unwrap();
        }
        assert!(matches!(
            cache.lookup(&host, hash(2), 1),
            CacheLookup::Fresh(_)
        ));
        assert_eq!(
            host.data.borrow().len(),
            2,
            "one shared key per slot, never more"
        );
    }

    #[test]
    fn newest_verdict_wins_between_tables() {
        let host = FakeHost::default();
        let mut cache = KeyCache::new(4, 4);
        cache.insert(&host, unknown(hash(5), 0, 30_000)).unwrap();
        cache.insert(&host, valid(hash(5), 10, 5_000)).unwrap();
        match cache.lookup(&host, hash(5), 20) {
            CacheLookup::Fresh(entry) => assert!(entry.is_valid()),
            other => panic!("{other:?}"),
        }
        // Another worker still reading the older unknown verdict from shared data picks the newer.
        let mut other = KeyCache::new(4, 4);
        match other.lookup(&host, hash(5), 20) {
            CacheLookup::Fresh(entry) => assert!(entry.is_valid()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn back_off_marks_stale_entries() {
        let host = FakeHost::default();
        let mut cache = KeyCache::new(4, 4);
        cache.insert(&host, valid(hash(7), 0, 10)).unwrap();
        cache.back_off(hash(7), 1_000);
        match cache.lookup(&host, hash(7), 500) {
            CacheLookup::Stale(entry) => assert_eq!(entry.retry_after_ms, 1_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn corrupt_shared_data_is_a_miss_not_a_crash() {
        let host = FakeHost::default();
        host.set(&shared_key(hash(9), true, 4), b"garbage", None)
            .unwrap();
        let mut cache = KeyCache::new(4, 4);
        assert!(matches!(cache.lookup(&host, hash(9), 0), CacheLookup::Miss));
    }
}
