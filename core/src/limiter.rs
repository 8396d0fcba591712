//! The limits a request with a valid key must pass, in order: the key's quotas, then its
//! workspace's plan limits. Holds this worker's leases of both (units taken from shared data
//! ahead, spent without a host call).

use crate::cache::CacheEntry;
use crate::config::FilterConfig;
use crate::denial::Denial;
use crate::host::SharedStore;
use crate::key_state::KeyState;
use crate::quota::{self, QuotaLeases, QuotaOutcome};
use crate::rate_limit::{self, PlanRates, RateLeases, RateOutcome, RateStatus};

pub struct Limiter {
    quota_leases: QuotaLeases,
    rate_leases: RateLeases,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            quota_leases: quota::new_leases(),
            rate_leases: rate_limit::new_leases(),
        }
    }
}

/// What the limits say of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitCheck {
    /// `None`: admitted.
    pub denial: Option<Denial>,
    /// The plan limits and where this request left them, for the response headers.
    pub rate: Option<(PlanRates, RateStatus)>,
    /// Counters that could not be updated (host failure or contention): admitted, not
    /// counted there.
    pub untracked: u64,
}

impl Limiter {
    /// A request refused by the plan limit gives its quota unit back, so refused requests never
    /// use up a quota.
    pub fn check(
        &mut self,
        store: &dyn SharedStore,
        config: &FilterConfig,
        entry: &CacheEntry,
        state: &KeyState,
        now: u64,
    ) -> LimitCheck {
        let mut check = LimitCheck {
            denial: None,
            rate: None,
            untracked: 0,
        };
        let quota = quota::admit(
            store,
            config.cache.max_keys,
            entry.hash,
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
            QuotaOutcome::Unlimited | QuotaOutcome::Admitted => {}
        }
        let plan = PlanRates {
            per_second: state.wire.plan.rate_limit_per_second,
            per_minute: state.wire.plan.rate_limit_per_minute,
        }
        .share(config.limits.instances);
        let rate = rate_limit::admit(
            store,
            config.limits.rate_slots,
            &state.wire.workspace_id,
            plan,
            now,
            &mut self.rate_leases,
        );
        match rate {
            RateOutcome::Unlimited => {}
            RateOutcome::Untracked => check.untracked += 1,
            RateOutcome::Admitted(status) => check.rate = Some((plan, status)),
            RateOutcome::Limited(status) => {
                if quota == QuotaOutcome::Admitted {
                    quota::refund(entry.hash, &mut self.quota_leases);
                }
                check.denial = Some(Denial::RateLimited(status.window));
                check.rate = Some((plan, status));
            }
        }
        check
    }
}
