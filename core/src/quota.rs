//! Per-key quotas on rolling windows. The control plane is the source of truth (counts from
//! ingested records); the filter adds what this Envoy admitted that the control plane may not
//! have seen yet, counted exactly in the calls ledger (`ledger.rs`; docs/protocol.md, "Quota
//! counts per Envoy instance"):
//!
//! `effective = usage[window] - recent.count + admitted here since recent.since_ms`

use crate::api_key::KeyHash;
use crate::counters::CounterError;
use crate::host::SharedStore;
use crate::key_state::KeyState;
use crate::lease::chunk;
use crate::ledger::{self, Ledger, LedgerLeases, BUCKET_MS};

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

pub use crate::ledger::new_leases;
pub type QuotaLeases = LedgerLeases;

/// Admits one request of the key if every quota has room, spending a leased unit or taking a
/// new chunk from the calls ledger. `fetched_ms` is when the state was answered (the split
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
    if state.wire.quotas == Default::default() {
        return QuotaOutcome::Unlimited;
    }
    let (since_ms, already_seen) = match &state.wire.recent {
        Some(recent) => (recent.since_ms, recent.count),
        None => (fetched_ms, 0),
    };
    if leases.get_mut(&hash).is_some_and(|l| l.spend(1, since_ms)) {
        return QuotaOutcome::Admitted;
    }
    let windows = limits(state);
    let result = ledger::take(
        store,
        Ledger::Calls,
        slots,
        hash,
        since_ms,
        now_ms,
        1,
        leases,
        |local| {
            let mut grant = u64::MAX;
            for (window, quota, used) in &windows {
                let effective = used.saturating_sub(already_seen) + local;
                let available = quota.saturating_sub(effective);
                if available == 0 {
                    return Err(*window);
                }
                grant = grant.min(chunk(*quota, available));
            }
            Ok(grant)
        },
    );
    match result {
        Ok(Ok(())) => QuotaOutcome::Admitted,
        Ok(Err(window)) => QuotaOutcome::Exceeded(window),
        Err(CounterError::Contended) | Err(CounterError::Host(_)) => QuotaOutcome::Untracked,
    }
}

/// Gives back one request admitted by `admit` (it was refused by a later limit after all):
/// the unit returns to this worker's lease, no host call.
pub fn refund(hash: KeyHash, leases: &mut QuotaLeases) {
    if let Some(lease) = leases.get_mut(&hash) {
        lease.refund(1);
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
            rate_limits: Default::default(),
            credits: None,
            external_id: None,
            meta: Default::default(),
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
                credits: 0,
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
                credits: 0,
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
                credits: 0,
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
    fn a_refunded_unit_needs_no_shared_write() {
        let s = state(daily(100), daily(0), None);
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
