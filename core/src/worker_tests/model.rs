//! Model-based property tests of the limiters: several workers of one Envoy on one `FakeHost`
//! (shared data with Envoy's CAS rules, callouts answered to the context that sent them) and
//! `FakeControlPlane` (leases sized, timed and charged per credit period as the real one does),
//! driven by random interleavings of requests, callout answers, ticks, clock jumps and
//! control-plane outages, each checked against a reference model after every step:
//! - a key's daily quota (spent from leases) is never exceeded, and neither is its credit budget
//!   within each period (a request costs its route's credits: 1, the configured route's, or 0),
//!   also across the period's end (day or month) during a run;
//! - the control plane never counts fewer units of a meter than were admitted (what was
//!   admitted in the period and its room never add up to more than the limit);
//! - a key's own per-second limit and its plan's are never exceeded in any second;
//! - a request refused for credits is answered the quota status (401) with `credits_exhausted`
//!   naming the budget's period, only when it costs credits; `quota_exceeded` only for a key with
//!   a quota; a refused request spends nothing (the last point fails if it keeps a unit);
//! - an IP is blocked only after its own failures reached `max_failures`; other IPs never are;
//! - once everything is settled (control plane up, answers delivered, keys idle) the control
//!   plane holds only leases granted in answers Envoy dropped (their request had ended: it
//!   charges them at expiry), and the whole quota, or the whole credit budget of the period,
//!   can be spent but those leases' units (no unit lost for good).

use super::control_plane::period_bounds;
use super::*;
use crate::key_state::CreditPeriod;
use envoy::Envoy;
use proptest::prelude::*;

mod envoy;

const WORKERS: usize = 3;

/// What a request asks for, and so what it costs of a credit budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// `GET /v1/things/1`: no configured route, 1 credit.
    Get,
    /// `POST /v1/things`: the configured route of `Credits::post` credits.
    Post,
    /// `GET /v1/free`: a configured route of 0 credits.
    Free,
}

impl Route {
    fn method_and_path(self) -> (&'static str, &'static str) {
        match self {
            Route::Get => ("GET", "/v1/things/1"),
            Route::Post => ("POST", "/v1/things"),
            Route::Free => ("GET", "/v1/free"),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A request for `route` on `worker`: from good client `client` with the key, or
    /// (client 3) a malformed key from the bad IP.
    Request {
        worker: usize,
        client: usize,
        route: Route,
    },
    /// The control plane answers every callout sent so far (and those the answers lead to).
    Answer,
    Tick {
        worker: usize,
    },
    Advance {
        ms: u64,
    },
    ControlPlaneDown(bool),
}

fn op(route: impl Strategy<Value = Route> + Clone + 'static) -> impl Strategy<Value = Op> {
    let advance = prop_oneof![
        4 => 1..400u64,
        2 => 900..1_100u64,
        1 => 5_000..7_000u64,
        1 => 29_000..40_000u64,
    ];
    prop_oneof![
        8 => (0..WORKERS, 0..4usize, route)
            .prop_map(|(worker, client, route)| Op::Request { worker, client, route }),
        3 => Just(Op::Answer),
        2 => (0..WORKERS).prop_map(|worker| Op::Tick { worker }),
        2 => advance.prop_map(|ms| Op::Advance { ms }),
        1 => any::<bool>().prop_map(Op::ControlPlaneDown),
    ]
}

/// The key's credit budget, and what the configured route costs.
#[derive(Debug, Clone, Copy)]
struct Credits {
    limit: u64,
    period: CreditPeriod,
    /// The credits of `POST /v1/things`.
    post: u64,
}

/// The key's limits.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Its daily quota, if it has one.
    quota: Option<u64>,
    /// Its own per-second limit.
    per_second: u64,
    /// Its plan's per-second limit (the workspace's, shared by its keys).
    plan_per_second: u64,
    credits: Option<Credits>,
}

impl Limits {
    /// What a request for `route` costs of the credit budget.
    fn cost(&self, route: Route) -> u64 {
        match (self.credits, route) {
            (None, _) | (_, Route::Free) => 0,
            (Some(_), Route::Get) => 1,
            (Some(c), Route::Post) => c.post,
        }
    }
}

/// Cases per property: `PROPTEST_CASES` if set, else `default`.
fn cases(default: u32) -> u32 {
    let env = std::env::var("PROPTEST_CASES").ok();
    env.and_then(|n| n.parse().ok()).unwrap_or(default)
}

fn credit_period() -> impl Strategy<Value = CreditPeriod> {
    prop_oneof![
        Just(CreditPeriod::Day),
        Just(CreditPeriod::Month),
        Just(CreditPeriod::Total),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), ..ProptestConfig::default() })]

    #[test]
    fn limiters_hold_under_random_interleavings(
        quota in 1..60u64,
        per_second in 2..12u64,
        plan_per_second in 2..12u64,
        ops in proptest::collection::vec(op(Just(Route::Get)), 1..250),
    ) {
        let limits = Limits { quota: Some(quota), per_second, plan_per_second, credits: None };
        let mut envoy = Envoy::new(limits, T0);
        for op in &ops {
            envoy.apply(op)?;
        }
        envoy.spend_the_rest()?;
    }

    /// A key with a credit budget (and perhaps a quota), requests of 1, 0 and `post` credits;
    /// the run starts up to 4 minutes before its day or month ends.
    #[test]
    fn credit_budgets_hold_under_random_interleavings(
        limit in 1..80u64,
        period in credit_period(),
        post in 2..8u64,
        quota in proptest::option::of(20..150u64),
        per_second in 2..12u64,
        plan_per_second in 2..12u64,
        before_reset in 0..240_000u64,
        ops in proptest::collection::vec(
            op(prop_oneof![2 => Just(Route::Get), 2 => Just(Route::Post), 1 => Just(Route::Free)]),
            1..250,
        ),
    ) {
        let credits = Some(Credits { limit, period, post });
        let limits = Limits { quota, per_second, plan_per_second, credits };
        let start = period_bounds(period, T0).1.map_or(T0, |reset| reset - before_reset);
        let mut envoy = Envoy::new(limits, start);
        for op in &ops {
            envoy.apply(op)?;
        }
        envoy.spend_the_rest()?;
    }
}

/// Found by the credit model: worker 1's lookup answer installs a lease into the key's full
/// lease record (four slots held), displacing one with 3 unspent credits, while a renewal worker
/// 1 claimed earlier waits for its tick. The displaced lease's settlement was kept for worker 1's
/// next callout for the key (the queued renewal went without it); worker 0 settled the rest of
/// the record, so none came, and the control plane would have charged the 3 credits at the
/// lease's expiry. The root's tick now sends such settlements by themselves.
#[test]
fn a_displaced_lease_is_settled_though_another_worker_settles_its_record() {
    use Op::*;
    let get = |worker| Request {
        worker,
        client: 0,
        route: Route::Get,
    };
    let post = |worker| Request {
        worker,
        client: 0,
        route: Route::Post,
    };
    let lease_ttl = Advance { ms: 30_000 };
    let ops = [
        get(1),
        lease_ttl.clone(),
        Answer,
        post(2),
        post(2),
        Answer,
        get(2),
        lease_ttl.clone(),
        get(1),
        Tick { worker: 2 },
        get(0),
        Answer,
        lease_ttl,
        get(1),
        get(0),
        get(0),
    ];
    let credits = Some(Credits {
        limit: 35,
        period: CreditPeriod::Total,
        post: 3,
    });
    let limits = Limits {
        quota: None,
        per_second: 5,
        plan_per_second: 5,
        credits,
    };
    let mut envoy = Envoy::new(limits, T0);
    for op in &ops {
        envoy.apply(op).unwrap();
    }
    envoy.spend_the_rest().unwrap();
}
