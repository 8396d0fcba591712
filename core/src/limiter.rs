//! The limits a request with a valid key must pass, in order: the key's quotas, its credit
//! budget, its own rate limits, then its workspace's plan limits. A request refused by a later
//! limit gives back what the earlier ones took, so refused requests never use anything up.
//! Holds this worker's leases of each (units taken from shared data ahead, spent without a host
//! call).

use crate::cache::CacheEntry;
use crate::config::FilterConfig;
use crate::credits::{self, CreditLeases, CreditOutcome};
use crate::decision::RequestFacts;
use crate::denial::Denial;
use crate::host::SharedStore;
use crate::key_state::KeyState;
use crate::quota::{self, QuotaLeases, QuotaOutcome};
use crate::rate_limit::{
    self, workspace_owner, RateLeases, RateOutcome, RateStatus, RateView, Rates, Scope,
};
use crate::routes;

/// Owners (workspaces, keys) whose rate leases one worker keeps.
const RATE_LEASES: usize = 4_096;

pub struct Limiter {
    quota_leases: QuotaLeases,
    credit_leases: CreditLeases,
    key_rate_leases: RateLeases,
    plan_rate_leases: RateLeases,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            quota_leases: quota::new_leases(),
            credit_leases: credits::new_leases(),
            key_rate_leases: rate_limit::new_leases(RATE_LEASES),
            plan_rate_leases: rate_limit::new_leases(RATE_LEASES),
        }
    }
}

/// What the limits say of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitCheck {
    /// `None`: admitted.
    pub denial: Option<Denial>,
    /// The rate limits and where this request left the tightest, for the response headers.
    pub rate: Option<RateView>,
    /// Counters that could not be updated (host failure, contention, a full table): admitted,
    /// not counted there.
    pub untracked: u64,
}

/// What the earlier limits took from their leases, given back if a later one refuses.
#[derive(Default)]
struct Taken {
    quota: bool,
    credits: u64,
    key_rate: bool,
}

impl Limiter {
    pub fn check(
        &mut self,
        store: &dyn SharedStore,
        config: &FilterConfig,
        entry: &CacheEntry,
        state: &KeyState,
        facts: &RequestFacts,
        now: u64,
    ) -> LimitCheck {
        let mut check = LimitCheck {
            denial: None,
            rate: None,
            untracked: 0,
        };
        let hash = entry.hash;
        let mut taken = Taken::default();
        let slots = config.cache.max_keys;
        let quota = quota::admit(
            store,
            slots,
            hash,
            state,
            entry.fetched_ms,
            now,
            &mut self.quota_leases,
        );
        match quota {
            QuotaOutcome::Exceeded(window) => {
                check.denial = Some(Denial::QuotaExceeded(window));
                return check;
            }
            QuotaOutcome::Untracked => check.untracked += 1,
            QuotaOutcome::Admitted => taken.quota = true,
            QuotaOutcome::Unlimited => {}
        }
        if state.wire.credits.is_some() {
            let routes = &config.usage.routes;
            let cost = u64::from(routes::classify(routes, &facts.method, &facts.path).credits);
            let leases = &mut self.credit_leases;
            match credits::admit(
                store,
                slots,
                hash,
                state,
                cost,
                entry.fetched_ms,
                now,
                leases,
            ) {
                CreditOutcome::Exhausted(period) => {
                    self.give_back(entry, &taken, now);
                    check.denial = Some(Denial::CreditsExhausted(period));
                    return check;
                }
                CreditOutcome::Untracked => check.untracked += 1,
                CreditOutcome::Admitted => taken.credits = cost,
                CreditOutcome::Unlimited => {}
            }
        }
        let instances = config.limits.instances;
        let key = state.wire.rate_limits.share(instances);
        let plan = Rates {
            per_second: state.wire.plan.rate_limit_per_second,
            per_minute: state.wire.plan.rate_limit_per_minute,
            per_hour: None,
        }
        .share(instances);
        let view = |status| RateView { plan, key, status };
        let key_status = match rate_limit::admit(
            store,
            Scope::Key,
            config.limits.key_rate_slots,
            key_owner(entry),
            key,
            now,
            &mut self.key_rate_leases,
        ) {
            RateOutcome::Limited(status) => {
                self.give_back(entry, &taken, now);
                check.denial = Some(Denial::KeyRateLimited(status.window));
                check.rate = Some(view(status));
                return check;
            }
            RateOutcome::Admitted(status) => {
                taken.key_rate = true;
                Some(status)
            }
            RateOutcome::Untracked => {
                check.untracked += 1;
                None
            }
            RateOutcome::Unlimited => None,
        };
        let plan_status = match rate_limit::admit(
            store,
            Scope::Plan,
            config.limits.rate_slots,
            workspace_owner(&state.wire.workspace_id),
            plan,
            now,
            &mut self.plan_rate_leases,
        ) {
            RateOutcome::Limited(status) => {
                self.give_back(entry, &taken, now);
                check.denial = Some(Denial::RateLimited(status.window));
                check.rate = Some(view(status));
                return check;
            }
            RateOutcome::Admitted(status) => Some(status),
            RateOutcome::Untracked => {
                check.untracked += 1;
                None
            }
            RateOutcome::Unlimited => None,
        };
        check.rate = RateStatus::tighter(plan_status, key_status).map(view);
        check
    }

    fn give_back(&mut self, entry: &CacheEntry, taken: &Taken, now: u64) {
        if taken.quota {
            quota::refund(entry.hash, &mut self.quota_leases);
        }
        if taken.credits > 0 {
            credits::refund(entry.hash, taken.credits, &mut self.credit_leases);
        }
        if taken.key_rate {
            rate_limit::refund(key_owner(entry), now, &mut self.key_rate_leases);
        }
    }
}

/// The owner of a key's own rate record: its hash's first eight bytes (never zero).
fn key_owner(entry: &CacheEntry) -> u64 {
    let h = entry.hash.0;
    u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) | 1
}
