//! The limits a request with a valid key must pass, in order: the key's quotas, its credit
//! budget, its own rate limits, then its workspace's plan limits. A request refused by a later
//! limit gives back what the earlier ones took, so refused requests never use anything up.
//! Holds this worker's chunks of each (units taken from shared data ahead, spent without a host
//! call); the budgets' units come from the leases the control plane granted (`budgets.rs`).

use crate::budget::Meter;
use crate::budgets::{Budgets, Spend};
use crate::cache::CacheEntry;
use crate::config::FilterConfig;
use crate::decision::RequestFacts;
use crate::denial::Denial;
use crate::host::SharedStore;
use crate::key_state::KeyState;
use crate::lease_record::Renewal;
use crate::rate_limit::{
    self, workspace_owner, RateChunks, RateOutcome, RateStatus, RateView, Rates, Scope,
};
use crate::routes;

/// Owners (workspaces, keys) whose rate chunks one worker keeps.
const RATE_CHUNKS: usize = 4_096;

pub struct Limiter {
    pub budgets: Budgets,
    key_rate_chunks: RateChunks,
    plan_rate_chunks: RateChunks,
}

impl Limiter {
    /// `slots` lease records per meter; a renewal claim lapses after `claim_ms`.
    pub fn new(slots: usize, claim_ms: u64) -> Limiter {
        Limiter {
            budgets: Budgets::new(slots, claim_ms),
            key_rate_chunks: rate_limit::new_chunks(RATE_CHUNKS),
            plan_rate_chunks: rate_limit::new_chunks(RATE_CHUNKS),
        }
    }
}

/// What the limits say of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCheck {
    /// `None`: admitted (unless `starved`).
    pub denial: Option<Denial>,
    /// The rate limits and where this request left the tightest, for the response headers.
    pub rate: Option<RateView>,
    /// Counters that could not be updated (host failure, contention, a full table): admitted,
    /// not counted there.
    pub untracked: u64,
    /// A lease record that could not be updated: the request was denied.
    pub lease_failed: bool,
    /// No units of this meter: the request waits for a lease asked with this renewal.
    pub starved: Option<(Meter, Renewal)>,
    /// Renewals this request's take claimed (what is left reached the low-water mark).
    pub renewals: Vec<(Meter, Renewal)>,
}

/// What the earlier limits took, given back if a later one refuses.
#[derive(Default)]
struct Taken {
    calls: bool,
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
            lease_failed: false,
            starved: None,
            renewals: Vec::new(),
        };
        let hash = entry.hash;
        let mut taken = Taken::default();
        let credits = match state.wire.credits {
            Some(_) => {
                let routes = &config.usage.routes;
                u64::from(routes::classify(routes, &facts.method, &facts.path).credits)
            }
            None => 0,
        };
        for (meter, cost) in [(Meter::Calls, 1), (Meter::Credits, credits)] {
            let spend = self.budgets.spend(store, hash, meter, state, cost, now);
            match &spend {
                Spend::Unlimited => {}
                Spend::Spent { renew } => {
                    match meter {
                        Meter::Calls => taken.calls = true,
                        Meter::Credits => taken.credits = cost,
                    }
                    if let Some(renewal) = renew {
                        check.renewals.push((meter, renewal.clone()));
                    }
                }
                Spend::Starved(renewal) => {
                    self.give_back(store, entry, &taken, now, &mut check.renewals);
                    check.starved = Some((meter, renewal.clone()));
                    return check;
                }
                Spend::Denied(exhausted) | Spend::Failed(exhausted) => {
                    let denial = exhausted.denial();
                    check.lease_failed = matches!(spend, Spend::Failed(_));
                    self.give_back(store, entry, &taken, now, &mut check.renewals);
                    check.denial = Some(denial);
                    return check;
                }
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
            &mut self.key_rate_chunks,
        ) {
            RateOutcome::Limited(status) => {
                self.give_back(store, entry, &taken, now, &mut check.renewals);
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
            &mut self.plan_rate_chunks,
        ) {
            RateOutcome::Limited(status) => {
                self.give_back(store, entry, &taken, now, &mut check.renewals);
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

    /// Gives back what this request took before a later limit refused it. A unit given back to
    /// a lease makes it live again: a settlement of it claimed by the same take (it had used
    /// the lease up) must not go out, or the control plane would charge the unit.
    fn give_back(
        &mut self,
        store: &dyn SharedStore,
        entry: &CacheEntry,
        taken: &Taken,
        now: u64,
        renewals: &mut [(Meter, Renewal)],
    ) {
        for (meter, units) in [
            (Meter::Calls, u64::from(taken.calls)),
            (Meter::Credits, taken.credits),
        ] {
            if units == 0 {
                continue;
            }
            if let Some(lease) = self.budgets.refund(store, entry.hash, meter, units) {
                for (_, renewal) in renewals.iter_mut().filter(|(m, _)| *m == meter) {
                    renewal.settle.retain(|s| s.id != lease);
                }
            }
        }
        if taken.key_rate {
            rate_limit::refund(key_owner(entry), now, &mut self.key_rate_chunks);
        }
    }
}

/// The owner of a key's own rate record: its hash's first eight bytes (never zero).
fn key_owner(entry: &CacheEntry) -> u64 {
    let h = entry.hash.0;
    u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) | 1
}
