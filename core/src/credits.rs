//! Credit budgets: a key may spend at most `limit` credits per calendar day, calendar month
//! (UTC) or ever. Each admitted request spends its route's credits. Counted like quotas: the
//! control plane's `used` from ingested records, and what this Envoy admitted since the split
//! point from the credits ledger (`ledger.rs`; docs/protocol.md, "Quota counts per Envoy
//! instance"):
//!
//! `effective = credits.used - recent.credits + credits admitted here since the split`
//!
//! where the split is `max(recent.since_ms, credits.period_start_ms)`. A state cached across the
//! period's end counts only this Envoy's admissions since `resets_at_ms`.

use crate::api_key::KeyHash;
use crate::host::SharedStore;
use crate::key_state::{CreditPeriod, KeyState};
use crate::lease::chunk;
use crate::ledger::{self, Ledger, LedgerLeases};

pub type CreditLeases = LedgerLeases;

pub use crate::ledger::new_leases;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditOutcome {
    /// The key has no budget (or the request costs nothing): nothing counted.
    Unlimited,
    Admitted,
    /// What is left of the budget is less than the request's cost.
    Exhausted(CreditPeriod),
    /// The host failed or the ledger was too contended: admitted, not counted.
    Untracked,
}

/// Spends `cost` credits of the key's budget if that much is left. `fetched_ms` is when the
/// state was answered (the split point for an answer without `recent`).
#[allow(clippy::too_many_arguments)]
pub fn admit(
    store: &dyn SharedStore,
    slots: usize,
    hash: KeyHash,
    state: &KeyState,
    cost: u64,
    fetched_ms: u64,
    now_ms: u64,
    leases: &mut CreditLeases,
) -> CreditOutcome {
    let Some(budget) = &state.wire.credits else {
        return CreditOutcome::Unlimited;
    };
    if cost == 0 {
        return CreditOutcome::Unlimited;
    }
    let (split_ms, used, seen) = match budget.resets_at_ms {
        // Cached across the period's end: the new period has only what this Envoy admitted.
        Some(reset) if now_ms >= reset => (reset, 0, 0),
        _ => {
            let (since, seen) = match &state.wire.recent {
                Some(recent) => (recent.since_ms, recent.credits),
                None => (fetched_ms, 0),
            };
            (since.max(budget.period_start_ms), budget.used, seen)
        }
    };
    if leases
        .get_mut(&hash)
        .is_some_and(|l| l.spend(cost, split_ms))
    {
        return CreditOutcome::Admitted;
    }
    // Units the lease still holds are counted already: take only what the request lacks.
    let held = leases.get_mut(&hash).map_or(0, |l| l.held(split_ms));
    let lacking = cost - held.min(cost);
    let limit = budget.limit;
    let result = ledger::take(
        store,
        Ledger::Credits,
        slots,
        hash,
        split_ms,
        now_ms,
        cost,
        leases,
        |local| {
            let effective = used.saturating_sub(seen) + local;
            let available = limit.saturating_sub(effective);
            if available < lacking {
                return Err(budget.period);
            }
            Ok(chunk(limit, available).max(lacking))
        },
    );
    match result {
        Ok(Ok(())) => CreditOutcome::Admitted,
        Ok(Err(period)) => CreditOutcome::Exhausted(period),
        Err(_) => CreditOutcome::Untracked,
    }
}

/// Gives back the credits of a request admitted by `admit` that a later limit refused.
pub fn refund(hash: KeyHash, cost: u64, leases: &mut CreditLeases) {
    if let Some(lease) = leases.get_mut(&hash) {
        lease.refund(cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;
    use crate::key_state::{CreditBudget, KeyStateWire, Recent};

    const H: KeyHash = KeyHash([9; 32]);
    const DAY_MS: u64 = 86_400_000;

    fn state(budget: Option<CreditBudget>, recent: Option<Recent>) -> KeyState {
        let mut wire: KeyStateWire =
            serde_json::from_str(r#"{"key_id":"key_1","workspace_id":"ws_1","active":true}"#)
                .unwrap();
        wire.credits = budget;
        wire.recent = recent;
        KeyState::from_wire(wire).unwrap()
    }

    fn daily(limit: u64, used: u64, day: u64) -> Option<CreditBudget> {
        Some(CreditBudget {
            limit,
            period: CreditPeriod::Day,
            used,
            period_start_ms: day * DAY_MS,
            resets_at_ms: Some((day + 1) * DAY_MS),
        })
    }

    fn spend(host: &FakeHost, s: &KeyState, cost: u64, now: u64, l: &mut CreditLeases) -> bool {
        admit(host, 16, H, s, cost, now, now, l) == CreditOutcome::Admitted
    }

    #[test]
    fn costs_of_one_and_five_spend_exactly_up_to_the_budget() {
        let host = FakeHost::default();
        let mut l = new_leases();
        let s = state(daily(100, 0, 20_000), None);
        let t = 20_000 * DAY_MS + 5_000;
        let mut spent = 0;
        for i in 0..200 {
            let cost = if i % 2 == 0 { 1 } else { 5 };
            if spend(&host, &s, cost, t + i, &mut l) {
                spent += cost;
            }
        }
        assert_eq!(spent, 100, "every credit spent, never one more");
        assert_eq!(
            admit(&host, 16, H, &s, 1, t, t + 500, &mut l),
            CreditOutcome::Exhausted(CreditPeriod::Day)
        );
    }

    #[test]
    fn a_request_costing_more_than_is_left_is_refused_but_a_cheaper_one_fits() {
        let host = FakeHost::default();
        let mut l = new_leases();
        let s = state(daily(10, 7, 3), None);
        let t = 3 * DAY_MS + 60_000;
        assert!(!spend(&host, &s, 5, t, &mut l));
        assert!(spend(&host, &s, 3, t + 1, &mut l));
        assert!(!spend(&host, &s, 1, t + 2, &mut l));
    }

    #[test]
    fn own_credits_are_neither_missed_nor_counted_twice() {
        let host = FakeHost::default();
        let mut l = new_leases();
        let day = 40;
        let t = day * DAY_MS + 3_600_000;
        let s = state(daily(50, 0, day), None);
        for i in 0..4 {
            assert!(spend(&host, &s, 5, t + i, &mut l), "{i}");
        }
        // A refresh: the control plane has ingested 3 of our 4 requests (15 credits) and 10
        // credits from another Envoy; `recent.credits` says which are ours.
        let later = t + 20_000;
        let refreshed = state(
            daily(50, 25, day),
            Some(Recent {
                since_ms: crate::quota::recent_since(later),
                count: 3,
                credits: 15,
            }),
        );
        // effective = 25 - 15 + 20 = 30: four more requests of 5 fit.
        let more = (0..10)
            .filter(|i| spend(&host, &refreshed, 5, later + i, &mut l))
            .count();
        assert_eq!(more, 4);
    }

    #[test]
    fn a_new_period_starts_from_zero_even_with_a_cached_state() {
        let host = FakeHost::default();
        let mut l = new_leases();
        let day = 100;
        let s = state(daily(10, 10, day), None);
        let before_midnight = (day + 1) * DAY_MS - 1_000;
        assert!(!spend(&host, &s, 1, before_midnight, &mut l));
        let after = (day + 1) * DAY_MS + 2_000;
        let fresh = (0..20)
            .filter(|i| spend(&host, &s, 1, after + i, &mut l))
            .count();
        assert_eq!(
            fresh, 10,
            "the cached answer's period is over: a whole new budget"
        );
    }

    #[test]
    fn records_before_the_period_start_do_not_count_locally() {
        let host = FakeHost::default();
        let mut l = new_leases();
        let day = 7;
        let midnight = day * DAY_MS;
        // Yesterday, this Envoy spent 8 credits of yesterday's budget.
        let yesterday = state(daily(10, 0, day - 1), None);
        for i in 0..8 {
            assert!(spend(&host, &yesterday, 1, midnight - 30_000 + i, &mut l));
        }
        // Just after midnight the control plane answers for today: split at midnight, so the
        // local ledger's eight credits from before it are not today's.
        let since = crate::quota::recent_since(midnight + 20_000);
        assert!(since < midnight);
        let today = state(
            daily(10, 0, day),
            Some(Recent {
                since_ms: since,
                count: 8,
                credits: 0,
            }),
        );
        let n = (0..20)
            .filter(|i| spend(&host, &today, 1, midnight + 20_000 + i, &mut l))
            .count();
        assert_eq!(n, 10);
    }

    #[test]
    fn refunded_credits_are_spent_again_and_no_budget_costs_nothing() {
        let host = FakeHost::default();
        let mut l = new_leases();
        let s = state(
            Some(CreditBudget {
                limit: 10,
                period: CreditPeriod::Total,
                used: 0,
                period_start_ms: 0,
                resets_at_ms: None,
            }),
            None,
        );
        assert!(spend(&host, &s, 10, 1_000, &mut l));
        refund(H, 10, &mut l);
        assert!(spend(&host, &s, 4, 1_002, &mut l));
        assert!(spend(&host, &s, 6, 1_003, &mut l));
        assert!(!spend(&host, &s, 1, 1_004, &mut l));
        let none = state(None, None);
        let other = FakeHost::default();
        assert_eq!(
            admit(&other, 16, H, &none, 3, 0, 1, &mut new_leases()),
            CreditOutcome::Unlimited
        );
        assert!(other.data.borrow().is_empty());
    }

    #[test]
    fn two_workers_never_spend_more_than_the_budget() {
        let host = FakeHost::default();
        let s = state(daily(10_000, 0, 9), None);
        let (mut a, mut b) = (new_leases(), new_leases());
        let t = 9 * DAY_MS;
        let mut spent = 0;
        for i in 0..5_000u64 {
            let leases = if i % 2 == 0 { &mut a } else { &mut b };
            let cost = 1 + i % 5;
            if spend(&host, &s, cost, t + i, leases) {
                spent += cost;
            }
        }
        assert!((9_800..=10_000).contains(&spent), "{spent}");
    }
}
