//! Per-key quotas on rolling windows. The control plane is the source of truth (counts from
//! ingested records); the filter adds what this Envoy admitted that the control plane may not
//! have seen yet, counted exactly in shared data (see docs/protocol.md, "Quota counts per Envoy
//! instance"):
//!
//! `effective = usage[window] - recent.count + admitted here since recent.since_ms`
//!
//! The local ledger is one record per key slot: the key's tag, the newest bucket index and
//! `BUCKETS` ten-second buckets (≈ 10.7 minutes). Records delivered later than that after a
//! long control-plane outage are not double-checked: stated in the README.

use crate::api_key::KeyHash;
use crate::counters::{update, CounterError, Update};
use crate::host::SharedStore;
use crate::key_state::KeyState;
use crate::lease::{chunk, LeaseBook};

pub const BUCKET_MS: u64 = 10_000;
pub const BUCKETS: usize = 64;
const WORDS: usize = 2 + BUCKETS;
/// How far before a lookup the filter asks the control plane to split counts.
pub const RECENT_WINDOW_MS: u64 = 120_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaWindow {
    Total,
    Monthly,
    Weekly,
    Daily,
}

impl QuotaWindow {
    pub fn name(self) -> &'static str {
        match self {
            QuotaWindow::Total => "total",
            QuotaWindow::Monthly => "monthly",
            QuotaWindow::Weekly => "weekly",
            QuotaWindow::Daily => "daily",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaOutcome {
    /// The key has no quota: nothing counted here.
    Unlimited,
    Admitted,
    Exceeded(QuotaWindow),
    /// The host failed or the ledger was too contended: admitted, not counted.
    Untracked,
}

/// `since_ms` for a lookup made at `now_ms`, on a bucket boundary.
pub fn recent_since(now_ms: u64) -> u64 {
    let since = now_ms.saturating_sub(RECENT_WINDOW_MS);
    since - since % BUCKET_MS
}

fn ledger_key(hash: KeyHash, slots: usize) -> String {
    format!("tollgate.quota.{}", hash.slot(slots))
}

fn tag(hash: KeyHash) -> u64 {
    u64::from_le_bytes([
        hash.0[8], hash.0[9], hash.0[10], hash.0[11], hash.0[12], hash.0[13], hash.0[14],
        hash.0[15],
    ]) | 1
}

/// The ledger's buckets moved forward to `bucket` (older buckets cleared).
fn advanced(record: Option<&[u64]>, owner: u64, bucket: u64) -> Vec<u64> {
    let mut fresh = vec![0; WORDS];
    fresh[0] = owner;
    fresh[1] = bucket;
    let Some(r) = record.filter(|r| r[0] == owner && r[1] <= bucket) else {
        return fresh;
    };
    let newest = r[1];
    for b in newest.saturating_sub(BUCKETS as u64 - 1)..=newest {
        if b + BUCKETS as u64 > bucket {
            let i = 2 + (b % BUCKETS as u64) as usize;
            fresh[i] = r[i];
        }
    }
    fresh
}

fn admitted_since(record: &[u64], since_ms: u64) -> u64 {
    let newest = record[1];
    let first = (since_ms / BUCKET_MS).max(newest.saturating_sub(BUCKETS as u64 - 1));
    (first..=newest)
        .map(|b| record[2 + (b % BUCKETS as u64) as usize])
        .sum()
}

/// The windows to check, longest first (a total cap is reported before a daily one).
fn limits(state: &KeyState) -> Vec<(QuotaWindow, u64, u64)> {
    let q = &state.wire.quotas;
    let u = &state.wire.usage;
    [
        (QuotaWindow::Total, q.total, u.total),
        (QuotaWindow::Monthly, q.monthly, u.monthly),
        (QuotaWindow::Weekly, q.weekly, u.weekly),
        (QuotaWindow::Daily, q.daily, u.daily),
    ]
    .into_iter()
    .filter_map(|(w, quota, used)| quota.map(|q| (w, q, used.unwrap_or(0))))
    .collect()
}

/// Units of a key's quota this worker holds: granted in the ledger bucket `bucket`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaLease {
    bucket: u64,
    left: u64,
}

pub type QuotaLeases = LeaseBook<KeyHash, QuotaLease>;

pub fn new_leases() -> QuotaLeases {
    LeaseBook::new(8_192)
}

enum Grant {
    Exceeded(QuotaWindow),
    Granted(u64),
}

/// Admits one request of the key if every quota has room, spending a leased unit or taking a
/// new chunk from the shared ledger. `fetched_ms` is when the state was answered (the split
/// point for an answer without `recent`).
pub fn admit(
    store: &dyn SharedStore,
    slots: usize,
    hash: KeyHash,
    state: &KeyState,
    fetched_ms: u64,
    now_ms: u64,
    leases: &mut QuotaLeases,
) -> QuotaOutcome {
    let windows = limits(state);
    if windows.is_empty() {
        return QuotaOutcome::Unlimited;
    }
    let (since_ms, already_seen) = match &state.wire.recent {
        Some(recent) => (recent.since_ms, recent.count),
        None => (fetched_ms, 0),
    };
    // A lease granted before the split point is no longer counted by `admitted_since`: drop it.
    if let Some(lease) = leases.get_mut(&hash) {
        if lease.left > 0 && lease.bucket >= since_ms / BUCKET_MS {
            lease.left -= 1;
            return QuotaOutcome::Admitted;
        }
    }
    let owner = tag(hash);
    let bucket = now_ms / BUCKET_MS;
    let result = update(store, &ledger_key(hash, slots), WORDS, |record| {
        let mut ledger = advanced(record, owner, bucket);
        let local = admitted_since(&ledger, since_ms);
        let mut grant = u64::MAX;
        for (window, quota, used) in &windows {
            let effective = used.saturating_sub(already_seen) + local;
            let available = quota.saturating_sub(effective);
            if available == 0 {
                return Update::Keep(Grant::Exceeded(*window));
            }
            grant = grant.min(chunk(*quota, available));
        }
        ledger[2 + (bucket % BUCKETS as u64) as usize] += grant;
        Update::Write(ledger, Grant::Granted(grant))
    });
    match result {
        Ok(Grant::Exceeded(window)) => {
            leases.remove(&hash);
            QuotaOutcome::Exceeded(window)
        }
        Ok(Grant::Granted(units)) => {
            leases.insert(
                hash,
                QuotaLease {
                    bucket,
                    left: units - 1,
                },
            );
            QuotaOutcome::Admitted
        }
        Err(CounterError::Contended) | Err(CounterError::Host(_)) => QuotaOutcome::Untracked,
    }
}

/// Gives back one request admitted by `admit` (it was refused by a plan limit after all):
/// the unit returns to this worker's lease, no host call.
pub fn refund(hash: KeyHash, leases: &mut QuotaLeases) {
    if let Some(lease) = leases.get_mut(&hash) {
        lease.left += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;
    use crate::key_state::{KeyStateWire, Recent, Windows};

    fn state(quotas: Windows, usage: Windows, recent: Option<Recent>) -> KeyState {
        KeyState::from_wire(KeyStateWire {
            key_id: "key_1".into(),
            workspace_id: "ws_1".into(),
            active: true,
            expires_at_ms: None,
            secret_valid_until_ms: None,
            allowed: vec![],
            quotas,
            usage,
            plan: Default::default(),
            cache_ttl_ms: None,
            recent,
        })
        .unwrap()
    }

    const H: KeyHash = KeyHash([7; 32]);

    fn daily(n: u64) -> Windows {
        Windows {
            daily: Some(n),
            ..Default::default()
        }
    }

    #[test]
    fn admits_exactly_up_to_the_quota() {
        let host = FakeHost::default();
        let s = state(daily(10), daily(3), None);
        let t = 50_000_000;
        let admitted = (0..20)
            .filter(|i| {
                admit(&host, 16, H, &s, t, t + i * 100, &mut new_leases()) == QuotaOutcome::Admitted
            })
            .count();
        assert_eq!(admitted, 7);
        assert_eq!(
            admit(&host, 16, H, &s, t, t + 5_000, &mut new_leases()),
            QuotaOutcome::Exceeded(QuotaWindow::Daily)
        );
    }

    #[test]
    fn own_records_are_neither_missed_nor_counted_twice() {
        let host = FakeHost::default();
        let mut l = new_leases();
        let t = 80_000_000;
        let s = state(daily(10), daily(0), None);
        for i in 0..6 {
            assert_eq!(
                admit(&host, 16, H, &s, t, t + i, &mut l),
                QuotaOutcome::Admitted
            );
        }
        // A refresh: the control plane has ingested 4 of our 6 records (plus 2 from another
        // Envoy); `recent` tells which of ours it has.
        let since = recent_since(t + 20_000);
        let refreshed = state(
            daily(10),
            daily(6),
            Some(Recent {
                since_ms: since,
                count: 4,
            }),
        );
        // effective = 6 - 4 + 6 = 8: two more fit.
        let more = (0..5)
            .filter(|i| {
                admit(&host, 16, H, &refreshed, t + 20_000, t + 20_000 + i, &mut l)
                    == QuotaOutcome::Admitted
            })
            .count();
        assert_eq!(more, 2);
    }

    #[test]
    fn two_workers_with_leases_never_exceed_the_quota() {
        let host = FakeHost::default();
        let s = state(daily(1_000), daily(0), None);
        let (mut a, mut b) = (new_leases(), new_leases());
        let t = 90_000_000;
        let admitted = (0..2_000u64)
            .filter(|i| {
                let leases = if i % 2 == 0 { &mut a } else { &mut b };
                admit(&host, 16, H, &s, t, t + i, leases) == QuotaOutcome::Admitted
            })
            .count();
        assert!((990..=1_000).contains(&admitted), "{admitted}");
    }

    #[test]
    fn large_quotas_take_few_shared_writes() {
        let host = FakeHost::default();
        let s = state(daily(1_000_000_000), daily(0), None);
        let mut l = new_leases();
        for i in 0..10_000 {
            assert_eq!(
                admit(&host, 16, H, &s, 0, i, &mut l),
                QuotaOutcome::Admitted
            );
        }
        assert!(host.gets.get() < 5, "{}", host.gets.get());
    }

    #[test]
    fn rolling_window_comes_from_the_control_plane() {
        let host = FakeHost::default();
        let t = 10_000_000;
        let full = state(
            daily(2),
            daily(2),
            Some(Recent {
                since_ms: recent_since(t),
                count: 0,
            }),
        );
        assert_eq!(
            admit(&host, 16, H, &full, t, t, &mut new_leases()),
            QuotaOutcome::Exceeded(QuotaWindow::Daily)
        );
        // A day later the old calls rolled out of the control plane's count.
        let later = t + 86_400_000;
        let rolled = state(
            daily(2),
            daily(0),
            Some(Recent {
                since_ms: recent_since(later),
                count: 0,
            }),
        );
        assert_eq!(
            admit(&host, 16, H, &rolled, later, later, &mut new_leases()),
            QuotaOutcome::Admitted
        );
    }

    #[test]
    fn longest_window_is_reported_first_and_no_quota_costs_nothing() {
        let host = FakeHost::default();
        let both = state(
            Windows {
                total: Some(5),
                daily: Some(5),
                ..Default::default()
            },
            Windows {
                total: Some(5),
                daily: Some(5),
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            admit(&host, 16, H, &both, 0, 1, &mut new_leases()),
            QuotaOutcome::Exceeded(QuotaWindow::Total)
        );
        let none = state(Windows::default(), Windows::default(), None);
        assert_eq!(
            admit(&host, 16, H, &none, 0, 1, &mut new_leases()),
            QuotaOutcome::Unlimited
        );
        assert!(host.data.borrow().is_empty());
    }

    #[test]
    fn old_buckets_roll_off_the_ledger() {
        let host = FakeHost::default();
        let s = state(daily(100), daily(0), None);
        for i in 0..5 {
            admit(&host, 16, H, &s, 0, i * 1000, &mut new_leases());
        }
        let record =
            crate::counters::decode(&host.data.borrow()[&ledger_key(H, 16)].0, WORDS).unwrap();
        assert_eq!(admitted_since(&record, 0), 5);
        let moved = advanced(Some(&record), tag(H), BUCKETS as u64 + 5);
        assert_eq!(admitted_since(&moved, 0), 0);
        let refunded_host = FakeHost::default();
        // A refunded unit goes back to the lease: the next request needs no shared write.
        let mut l = new_leases();
        admit(&refunded_host, 16, H, &s, 0, 10, &mut l);
        refund(H, &mut l);
        let gets = refunded_host.gets.get();
        assert_eq!(
            admit(&refunded_host, 16, H, &s, 0, 20, &mut l),
            QuotaOutcome::Admitted
        );
        assert_eq!(refunded_host.gets.get(), gets);
    }
}
