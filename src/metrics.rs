//! Filter metrics: names defined once here. Counts are kept in the VM and flushed to Envoy on
//! the root context's tick, so the request path makes no metric host call.
//! In `/stats` they appear as `wasmcustom.<name>`, in `/stats/prometheus` as `<name>`.

use crate::denial::Denial;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Allowed,
    AllowedUnverified,
    Denied(Denial),
    CacheHit,
    CacheMiss,
    LookupDispatched,
    LookupFailed,
    LookupRescued,
}

pub const ALLOWED: &str = "tollgate.requests.allowed";
pub const ALLOWED_UNVERIFIED: &str = "tollgate.requests.allowed_unverified";
pub const DENIED_PREFIX: &str = "tollgate.requests.denied.";
pub const CACHE_HIT: &str = "tollgate.cache.hit";
pub const CACHE_MISS: &str = "tollgate.cache.miss";
pub const LOOKUP_DISPATCHED: &str = "tollgate.lookup.dispatched";
pub const LOOKUP_FAILED: &str = "tollgate.lookup.failed";
pub const LOOKUP_RESCUED: &str = "tollgate.lookup.rescued";

const SIMPLE: [(Counter, &str); 7] = [
    (Counter::Allowed, ALLOWED),
    (Counter::AllowedUnverified, ALLOWED_UNVERIFIED),
    (Counter::CacheHit, CACHE_HIT),
    (Counter::CacheMiss, CACHE_MISS),
    (Counter::LookupDispatched, LOOKUP_DISPATCHED),
    (Counter::LookupFailed, LOOKUP_FAILED),
    (Counter::LookupRescued, LOOKUP_RESCUED),
];

/// Every counter with its full name.
pub fn all() -> Vec<(Counter, String)> {
    let mut list: Vec<(Counter, String)> =
        SIMPLE.iter().map(|(c, n)| (*c, (*n).to_string())).collect();
    for denial in Denial::ALL {
        list.push((
            Counter::Denied(denial),
            format!("{DENIED_PREFIX}{}", denial.code()),
        ));
    }
    list
}

/// Pending increments, indexed like `all()`.
#[derive(Debug)]
pub struct PendingCounts {
    counters: Vec<Counter>,
    pending: Vec<u64>,
}

impl Default for PendingCounts {
    fn default() -> Self {
        let counters: Vec<Counter> = all().into_iter().map(|(c, _)| c).collect();
        let pending = vec![0; counters.len()];
        PendingCounts { counters, pending }
    }
}

impl PendingCounts {
    pub fn add(&mut self, counter: Counter) {
        if let Some(i) = self.counters.iter().position(|c| *c == counter) {
            self.pending[i] += 1;
        }
    }

    /// (index into `all()`, delta) for every counter that moved; resets them.
    pub fn drain(&mut self) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for (i, n) in self.pending.iter_mut().enumerate() {
            if *n > 0 {
                out.push((i, *n));
                *n = 0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_counts_drain() {
        let names: Vec<String> = all().into_iter().map(|(_, n)| n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        let mut counts = PendingCounts::default();
        counts.add(Counter::Allowed);
        counts.add(Counter::Allowed);
        counts.add(Counter::Denied(Denial::ExpiredKey));
        let drained = counts.drain();
        assert_eq!(drained.len(), 2);
        assert_eq!(drained.iter().map(|(_, n)| n).sum::<u64>(), 3);
        assert!(counts.drain().is_empty());
    }
}
