//! The SQLite store's cache of filter lookups: an answer is kept until a write could change it.
//! Shared by the store (which reads and fills it) and the ingest writer (which invalidates the
//! keys it stored records of), so it stands apart from both.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::domain::{KeyLookup, RecentQuery};

/// Lookup answers kept until a write could change them: any change to keys (global epoch), or
/// usage ingested for that key (per-key version), or the next minute (rolling windows move by
/// the minute). One process owns the database (every write goes through this store), so a
/// cached answer is exactly what the database would say.
#[derive(Debug, Default)]
pub(super) struct LookupCache {
    epoch: AtomicU64,
    inner: Mutex<CacheInner>,
}

pub(super) type CacheKey = (String, Option<RecentQuery>);

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<CacheKey, CachedLookup>,
    /// Bumped for a key by every ingest that stored records of it.
    key_versions: HashMap<String, u64>,
    /// Bumped by every ingest: an answer read while one committed is not kept.
    ingests: u64,
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

/// Beyond this many answers the cache starts over (an unknown-hash flood cannot grow it).
const LOOKUP_CACHE_MAX: usize = 50_000;

impl LookupCache {
    /// After every committed change to keys, secrets or plans.
    pub(super) fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// After an ingest committed records of `key_ids`.
    pub(super) fn invalidate_keys<'a>(&self, key_ids: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.ingests += 1;
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

    /// The epoch and ingest count to pass to [`put`](Self::put), read before the database.
    pub(super) fn snapshot(&self) -> (u64, u64) {
        let ingests = self.inner.lock().map_or(u64::MAX, |i| i.ingests);
        (self.epoch.load(Ordering::Acquire), ingests)
    }

    pub(super) fn get(&self, key: &CacheKey, now_ms: i64) -> Option<Option<KeyLookup>> {
        let inner = self.inner.lock().ok()?;
        let hit = inner.entries.get(key)?;
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
        key: CacheKey,
        (epoch, ingests): (u64, u64),
        now_ms: i64,
        lookup: Option<KeyLookup>,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.ingests != ingests {
            return;
        }
        if inner.entries.len() >= LOOKUP_CACHE_MAX {
            inner.entries.clear();
        }
        let key_version = lookup
            .as_ref()
            .and_then(|l| inner.key_versions.get(&l.key_id).copied())
            .unwrap_or(0);
        inner.entries.insert(
            key,
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
        if inner.touched.len() >= LOOKUP_CACHE_MAX {
            inner.touched.clear();
        }
        inner.touched.insert(key_id.to_owned(), now_ms);
        false
    }
}
