//! The SQLite store's cache of filter lookups: an answer is kept until a write could change it.
//! Shared by the store (which reads and fills it, and invalidates the keys a lease charged) and
//! the ingest writer (which invalidates the keys it stored records of: their `last_used_at`), so
//! it stands apart from both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::domain::KeyLookup;

/// Lookup answers kept until a write could change them: any change to keys (global epoch), or
/// usage ingested or charges written for that key (per-key version), or the next minute
/// (rolling windows move by the minute). One process owns the database (every write goes through this store), so a
/// cached answer is exactly what the database would say.
#[derive(Debug)]
pub(super) struct LookupCache {
    epoch: AtomicU64,
    inner: Mutex<CacheInner>,
    /// At most this many answers, then it starts over (an unknown-hash flood cannot grow it);
    /// 0 keeps none (every lookup reads the database). `tollgate serve --lookup-cache`.
    max_entries: usize,
}

#[derive(Debug, Default)]
struct CacheInner {
    /// By secret hash.
    entries: HashMap<String, CachedLookup>,
    /// Bumped for a key by every write of its counts (an ingest of its records, a charge).
    key_versions: HashMap<String, u64>,
    /// Bumped by every such write: an answer read while one committed is not kept.
    writes: u64,
    /// When each key's `last_used_at` was last written, to skip redundant writes.
    touched: HashMap<String, i64>,
}

#[derive(Debug)]
struct CachedLookup {
    epoch: u64,
    key_version: u64,
    minute: i64,
    lookup: Option<KeyLookup>,
}

/// Keys whose last `last_used_at` write is remembered.
const TOUCHED_MAX: usize = 50_000;

impl Default for LookupCache {
    fn default() -> Self {
        LookupCache::new(crate::config::DEFAULT_LOOKUP_CACHE_ENTRIES)
    }
}

impl LookupCache {
    pub(super) fn new(max_entries: usize) -> LookupCache {
        LookupCache {
            epoch: AtomicU64::new(0),
            inner: Mutex::default(),
            max_entries,
        }
    }

    /// After every committed change to keys, secrets or plans.
    pub(super) fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// After a write committed counts of `key_ids` (an ingest of their records, charges).
    pub(super) fn invalidate_keys<'a>(&self, key_ids: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.writes += 1;
            for id in key_ids {
                match inner.key_versions.get_mut(id) {
                    Some(v) => *v += 1,
                    None => {
                        inner.key_versions.insert(id.to_owned(), 1);
                    }
                }
            }
        }
    }

    /// The epoch and write count to pass to [`put`](Self::put), read before the database.
    pub(super) fn snapshot(&self) -> (u64, u64) {
        let writes = self.inner.lock().map_or(u64::MAX, |i| i.writes);
        (self.epoch.load(Ordering::Acquire), writes)
    }

    pub(super) fn get(&self, hash: &str, now_ms: i64) -> Option<Option<KeyLookup>> {
        let inner = self.inner.lock().ok()?;
        let hit = inner.entries.get(hash)?;
        let key_version = |l: &KeyLookup| inner.key_versions.get(&l.key_id).copied().unwrap_or(0);
        let fresh = hit.epoch == self.epoch.load(Ordering::Acquire)
            && hit.minute == now_ms.div_euclid(60_000)
            && hit
                .lookup
                .as_ref()
                .is_none_or(|l| key_version(l) == hit.key_version);
        fresh.then(|| hit.lookup.clone())
    }

    pub(super) fn put(
        &self,
        hash: String,
        (epoch, writes): (u64, u64),
        now_ms: i64,
        lookup: Option<KeyLookup>,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.writes != writes || self.max_entries == 0 {
            return;
        }
        if inner.entries.len() >= self.max_entries {
            inner.entries.clear();
        }
        let key_version = lookup
            .as_ref()
            .and_then(|l| inner.key_versions.get(&l.key_id).copied())
            .unwrap_or(0);
        inner.entries.insert(
            hash,
            CachedLookup {
                epoch,
                key_version,
                minute: now_ms.div_euclid(60_000),
                lookup,
            },
        );
    }

    /// Whether `key_id` was touched within `resolution_ms` of `now_ms` (and records it if not).
    pub(super) fn recently_touched(&self, key_id: &str, now_ms: i64, resolution_ms: i64) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        if inner
            .touched
            .get(key_id)
            .is_some_and(|t| now_ms - t < resolution_ms)
        {
            return true;
        }
        if inner.touched.len() >= TOUCHED_MAX {
            inner.touched.clear();
        }
        inner.touched.insert(key_id.to_owned(), now_ms);
        false
    }
}
