//! Filter and usage-service metrics: names defined once here. Counts are kept in the VM and
//! flushed to Envoy on the root context's tick, so the request path makes no metric host call.
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
    /// Records handed from a worker to the usage service.
    RecordQueued,
    /// Records a worker could not hand over (no usage service configured).
    RecordDropped,
    /// Usage service: records the control plane stored.
    UsageDelivered,
    /// Usage service: oldest records dropped because the buffer was full.
    UsageDropped,
    /// Usage service: records the control plane rejected as invalid.
    UsageRejected,
    /// Usage service: delivery attempts that failed and will be retried.
    UsageDeliveryFailed,
    /// A client IP was blocked for repeated failed authentication.
    IpBlocked,
    /// A quota or rate counter could not be updated (no free slot, host failure): not limited.
    LimitUntracked,
    /// Lease callouts sent to the control plane.
    LeaseDispatched,
    /// Lease callouts that failed, and lease records that could not be updated (requests
    /// without units are denied meanwhile).
    LeaseFailed,
}

pub const ALLOWED: &str = "tollgate.requests.allowed";
pub const ALLOWED_UNVERIFIED: &str = "tollgate.requests.allowed_unverified";
pub const DENIED_PREFIX: &str = "tollgate.requests.denied.";
pub const CACHE_HIT: &str = "tollgate.cache.hit";
pub const CACHE_MISS: &str = "tollgate.cache.miss";
pub const LOOKUP_DISPATCHED: &str = "tollgate.lookup.dispatched";
pub const LOOKUP_FAILED: &str = "tollgate.lookup.failed";
pub const LOOKUP_RESCUED: &str = "tollgate.lookup.rescued";
pub const RECORDS_QUEUED: &str = "tollgate.usage.queued";
pub const RECORDS_UNQUEUED: &str = "tollgate.usage.unqueued";
pub const USAGE_DELIVERED: &str = "tollgate.usage.delivered";
pub const USAGE_DROPPED: &str = "tollgate.usage.dropped";
pub const USAGE_REJECTED: &str = "tollgate.usage.rejected";
pub const USAGE_DELIVERY_FAILED: &str = "tollgate.usage.delivery_failed";
pub const IPS_BLOCKED: &str = "tollgate.ip.blocked";
pub const LIMIT_UNTRACKED: &str = "tollgate.limits.untracked";
pub const LEASES_DISPATCHED: &str = "tollgate.leases.dispatched";
pub const LEASES_FAILED: &str = "tollgate.leases.failed";
/// Gauge: records waiting in the usage service.
pub const USAGE_BUFFERED: &str = "tollgate.usage.buffered";

const SIMPLE: [(Counter, &str); 17] = [
    (Counter::LeaseDispatched, LEASES_DISPATCHED),
    (Counter::LeaseFailed, LEASES_FAILED),
    (Counter::IpBlocked, IPS_BLOCKED),
    (Counter::LimitUntracked, LIMIT_UNTRACKED),
    (Counter::Allowed, ALLOWED),
    (Counter::AllowedUnverified, ALLOWED_UNVERIFIED),
    (Counter::CacheHit, CACHE_HIT),
    (Counter::CacheMiss, CACHE_MISS),
    (Counter::LookupDispatched, LOOKUP_DISPATCHED),
    (Counter::LookupFailed, LOOKUP_FAILED),
    (Counter::LookupRescued, LOOKUP_RESCUED),
    (Counter::RecordQueued, RECORDS_QUEUED),
    (Counter::RecordDropped, RECORDS_UNQUEUED),
    (Counter::UsageDelivered, USAGE_DELIVERED),
    (Counter::UsageDropped, USAGE_DROPPED),
    (Counter::UsageRejected, USAGE_REJECTED),
    (Counter::UsageDeliveryFailed, USAGE_DELIVERY_FAILED),
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
        self.add_n(counter, 1);
    }

    pub fn add_n(&mut self, counter: Counter, n: u64) {
        if let Some(i) = self.index(counter) {
            self.pending[i] += n;
        }
    }

    /// What `counter` has gathered since the last `drain`.
    pub fn get(&self, counter: Counter) -> u64 {
        self.index(counter).map_or(0, |i| self.pending[i])
    }

    fn index(&self, counter: Counter) -> Option<usize> {
        // One counter per denial code, whatever window a quota or rate denial names.
        let counter = match counter {
            Counter::Denied(d) => Counter::Denied(
                Denial::ALL
                    .into_iter()
                    .find(|a| a.code() == d.code())
                    .unwrap_or(d),
            ),
            other => other,
        };
        self.counters.iter().position(|c| *c == counter)
    }

    /// Adds what `drain` answered elsewhere (another worker's counts).
    pub fn merge(&mut self, drained: &[(usize, u64)]) {
        for &(i, n) in drained {
            if let Some(pending) = self.pending.get_mut(i) {
                *pending += n;
            }
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
        let mut names: Vec<String> = all().into_iter().map(|(_, n)| n).collect();
        names.push(USAGE_BUFFERED.to_string());
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        let mut counts = PendingCounts::default();
        counts.add(Counter::Allowed);
        counts.add(Counter::Allowed);
        counts.add_n(Counter::Denied(Denial::ExpiredKey), 4);
        counts.add(Counter::Denied(Denial::QuotaExceeded(
            crate::budget::QuotaWindow::Daily,
        )));
        let quota = all()
            .iter()
            .position(|(_, n)| n == "tollgate.requests.denied.quota_exceeded")
            .unwrap();
        let drained = counts.drain();
        assert!(drained.contains(&(quota, 1)));
        assert_eq!(drained.len(), 3);
        assert_eq!(drained.iter().map(|(_, n)| n).sum::<u64>(), 7);
        assert!(counts.drain().is_empty());
    }
}
