//! Temporarily blocks client IPs after too many failed authentications.
//!
//! Failures are counted exactly per IP in a 2-way set-associative table in shared data
//! (`2 × table_size` slots of tag, window start, count; fixed window from the first failure).
//! An IP's count lives in one of its two candidate slots; a newcomer takes an empty or expired
//! one, else the lighter one unless that one is already a suspect (≥ a quarter of
//! `max_failures`). So an IP is only ever blocked for its own failures (no false positives);
//! when more IPs fail at once than the table holds, the lightest are forgotten first, and a
//! newcomer whose slots are both held by suspects is not tracked (false negatives, only for IPs
//! failing less than the flooders around them).
//! Blocked IPs go into one bounded shared list (`max_blocked`, the entry expiring soonest makes
//! room); each worker keeps a copy refreshed on its tick and whenever it blocks an IP itself,
//! so the per-request check costs no host call.

use crate::counters::{update, CounterError, Update};
use crate::host::{SharedStore, StoreError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

const BLOCKED_KEY: &str = "tollgate.ip.blocked";
/// tag, window start, count.
const WORDS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPolicy {
    pub max_failures: u64,
    pub window_ms: u64,
    pub block_ms: u64,
    pub table_size: usize,
    pub max_blocked: usize,
}

fn slots(ip: &str, table_size: usize) -> ([String; 2], u64) {
    // SHA-256 keeps slot choice unpredictable enough that crafted IPv6 addresses cannot aim
    // at a victim's slots; it runs only on failures.
    let digest = Sha256::digest(ip.as_bytes());
    let word = |i: usize| {
        u64::from_le_bytes([
            digest[i],
            digest[i + 1],
            digest[i + 2],
            digest[i + 3],
            digest[i + 4],
            digest[i + 5],
            digest[i + 6],
            digest[i + 7],
        ])
    };
    let n = table_size.max(1) as u64;
    (
        [
            format!("tollgate.ip.fail.{}", word(0) % n),
            format!("tollgate.ip.fail.{}", n + word(8) % n),
        ],
        word(16) | 1,
    )
}

enum Counted {
    /// The IP's failures in the current window, this one included.
    Count(u64),
    /// The slot changed under us, or is not ours to take: look again.
    Retry,
    /// Both slots hold suspects: the newcomer is not tracked.
    Untracked,
}

/// Counts one failed authentication from `ip`; returns the block end if the IP is now blocked.
pub fn record_failure(
    store: &dyn SharedStore,
    policy: &IpPolicy,
    ip: &str,
    now_ms: u64,
) -> Option<u64> {
    if ip.is_empty() {
        return None;
    }
    let (keys, tag) = slots(ip, policy.table_size);
    let suspect = (policy.max_failures / 4).max(1);
    let mut count = None;
    for _ in 0..crate::counters::MAX_ATTEMPTS {
        // Which slot is ours, or which one to take.
        let mut views = Vec::with_capacity(2);
        for key in &keys {
            let record = match store.get(key) {
                Ok(Some((bytes, _))) => crate::counters::decode(&bytes, WORDS),
                Ok(None) => None,
                Err(_) => return None,
            };
            let live = record.filter(|r| now_ms.saturating_sub(r[1]) < policy.window_ms);
            views.push(live);
        }
        let ours = views
            .iter()
            .position(|v| v.as_ref().is_some_and(|r| r[0] == tag));
        let target = ours
            .or_else(|| views.iter().position(Option::is_none))
            .or_else(|| {
                let lighter = if views[0].as_ref().map_or(0, |r| r[2])
                    <= views[1].as_ref().map_or(0, |r| r[2])
                {
                    0
                } else {
                    1
                };
                (views[lighter].as_ref().map_or(0, |r| r[2]) < suspect).then_some(lighter)
            });
        let Some(target) = target else {
            count = Some(Counted::Untracked);
            break;
        };
        let expected = views[target].clone();
        let result = update(store, &keys[target], WORDS, |record| {
            let live = record.filter(|r| now_ms.saturating_sub(r[1]) < policy.window_ms);
            match (&live, &expected) {
                (Some(r), _) if r[0] == tag => {
                    Update::Write(vec![tag, r[1], r[2] + 1], Counted::Count(r[2] + 1))
                }
                // Someone else's live record that we did not decide to replace: look again.
                (Some(r), Some(e)) if r[0] != e[0] || r[2] > e[2] => Update::Keep(Counted::Retry),
                (Some(_), None) => Update::Keep(Counted::Retry),
                _ => Update::Write(vec![tag, now_ms, 1], Counted::Count(1)),
            }
        });
        match result {
            Ok(Counted::Retry) => continue,
            Ok(other) => {
                count = Some(other);
                break;
            }
            Err(CounterError::Contended) | Err(CounterError::Host(_)) => return None,
        }
    }
    let Some(Counted::Count(count)) = count else {
        return None;
    };
    if count < policy.max_failures {
        return None;
    }
    let until = now_ms + policy.block_ms;
    block(store, policy, ip, until, now_ms).then_some(until)
}

/// (IP, block end in ms) pairs.
type BlockedList = Vec<(String, u64)>;

fn read_list(store: &dyn SharedStore) -> Result<(BlockedList, Option<u32>), StoreError> {
    match store.get(BLOCKED_KEY)? {
        None => Ok((Vec::new(), None)),
        Some((bytes, cas)) => Ok((
            serde_json::from_slice(&bytes).unwrap_or_default(),
            Some(cas),
        )),
    }
}

fn block(store: &dyn SharedStore, policy: &IpPolicy, ip: &str, until: u64, now_ms: u64) -> bool {
    for _ in 0..crate::counters::MAX_ATTEMPTS {
        let Ok((mut list, cas)) = read_list(store) else {
            return false;
        };
        list.retain(|(other, end)| *end > now_ms && other != ip);
        if list.len() >= policy.max_blocked.max(1) {
            list.sort_by_key(|(_, end)| *end);
            list.drain(..=list.len() - policy.max_blocked.max(1));
        }
        list.push((ip.to_string(), until));
        let Ok(bytes) = serde_json::to_vec(&list) else {
            return false;
        };
        let cas = cas
            .filter(|c| *c != 0)
            .unwrap_or(crate::counters::CREATE_ONLY);
        match store.set(BLOCKED_KEY, &bytes, Some(cas)) {
            Ok(()) => return true,
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Host(_)) => return false,
        }
    }
    false
}

/// A worker's copy of the blocked list.
#[derive(Default)]
pub struct BlockedView {
    blocked: HashMap<String, u64>,
    cas: Option<u32>,
}

impl BlockedView {
    /// Re-reads the shared list if it changed.
    pub fn refresh(&mut self, store: &dyn SharedStore, now_ms: u64) {
        let Ok((list, cas)) = read_list(store) else {
            return;
        };
        if cas == self.cas && cas.is_some() {
            self.blocked.retain(|_, end| *end > now_ms);
            return;
        }
        self.cas = cas;
        self.blocked = list.into_iter().filter(|(_, end)| *end > now_ms).collect();
    }

    pub fn is_blocked(&self, ip: &str, now_ms: u64) -> bool {
        self.blocked.get(ip).is_some_and(|end| *end > now_ms)
    }

    pub fn len(&self) -> usize {
        self.blocked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    const POLICY: IpPolicy = IpPolicy {
        max_failures: 20,
        window_ms: 60_000,
        block_ms: 300_000,
        table_size: 4096,
        max_blocked: 3,
    };

    #[test]
    fn blocked_after_max_failures_within_the_window() {
        let host = FakeHost::default();
        for i in 0..19 {
            assert_eq!(record_failure(&host, &POLICY, "10.0.0.1", 1_000 + i), None);
        }
        assert_eq!(
            record_failure(&host, &POLICY, "10.0.0.1", 2_000),
            Some(302_000)
        );
        let mut view = BlockedView::default();
        view.refresh(&host, 2_001);
        assert!(view.is_blocked("10.0.0.1", 2_001));
        assert!(!view.is_blocked("10.0.0.2", 2_001));
        assert!(!view.is_blocked("10.0.0.1", 302_000), "the block ends");
    }

    #[test]
    fn failures_spread_over_windows_do_not_block() {
        let host = FakeHost::default();
        for i in 0..40 {
            assert_eq!(record_failure(&host, &POLICY, "10.0.0.9", i * 10_000), None);
        }
    }

    #[test]
    fn an_innocent_ip_is_not_blocked_by_a_flooder() {
        let host = FakeHost::default();
        let mut blocked = 0;
        for i in 0..100 {
            if record_failure(&host, &POLICY, "203.0.113.66", i).is_some() {
                blocked += 1;
            }
        }
        assert!(blocked > 0);
        assert_eq!(record_failure(&host, &POLICY, "198.51.100.7", 200), None);
    }

    #[test]
    fn a_flood_of_ips_failing_once_blocks_nobody() {
        let host = FakeHost::default();
        let small = IpPolicy {
            table_size: 64,
            ..POLICY
        };
        for i in 0..5_000u32 {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            assert_eq!(
                record_failure(&host, &small, &ip, 1_000 + u64::from(i % 50)),
                None
            );
        }
        // A user who mistypes a few times in the middle of it is not blocked either.
        for t in 0..5 {
            assert_eq!(
                record_failure(&host, &small, "198.51.100.7", 2_000 + t),
                None
            );
        }
        assert!(host.data.borrow().len() <= 2 * 64 + 1);
    }

    #[test]
    fn flooders_keep_their_slots_among_many_light_ips() {
        let host = FakeHost::default();
        let small = IpPolicy {
            table_size: 64,
            ..POLICY
        };
        let mut blocked = false;
        for round in 0..20u64 {
            for i in 0..50u64 {
                record_failure(&host, &small, &format!("192.0.{round}.{i}"), 1_000 + round);
            }
            if record_failure(&host, &small, "203.0.113.66", 1_000 + round).is_some() {
                blocked = true;
            }
        }
        assert!(blocked, "the flooder is blocked after its 20th failure");
    }

    #[test]
    fn blocked_list_is_bounded() {
        let host = FakeHost::default();
        let tiny = IpPolicy {
            max_failures: 1,
            ..POLICY
        };
        for i in 0..10u64 {
            assert!(record_failure(&host, &tiny, &format!("192.0.2.{i}"), 1_000 + i).is_some());
        }
        let mut view = BlockedView::default();
        view.refresh(&host, 1_100);
        assert_eq!(view.len(), 3);
        assert!(
            view.is_blocked("192.0.2.9", 1_100),
            "the newest blocks are kept"
        );
        // Memory of the failure table is bounded by its slots whatever the number of IPs.
        let keys = host.data.borrow().len();
        assert!(keys <= 2 * 4096 + 1, "{keys}");
    }

    #[test]
    fn refresh_skips_unchanged_lists() {
        let host = FakeHost::default();
        let tiny = IpPolicy {
            max_failures: 1,
            ..POLICY
        };
        record_failure(&host, &tiny, "192.0.2.1", 0);
        let mut view = BlockedView::default();
        view.refresh(&host, 1);
        view.refresh(&host, 300_001);
        assert!(view.is_empty(), "expired entries leave the view");
    }
}
