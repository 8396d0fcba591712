//! Budgets that hold across every Envoy (issue 18): each Envoy admits only against leases the
//! control plane reserved for it in the store (docs/protocol.md, "Budget leases"), so a quota or
//! a credit budget is never exceeded across any number of Envoys and control-plane replicas.
//! What is leased out and not spent when demand stops is the under-admission (README,
//! "Guarantees and bounds"); it comes back once the key goes idle on its Envoy, and the
//! charges then equal exactly what was admitted.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tollgate_integration_tests::load::{self, exclusive, Outcome};
use tollgate_integration_tests::{assert_denied, Admin, Backend, CreatedKey, Plan, Stack};

/// Clients sending at once, spread over the Envoys.
const CLIENTS: usize = 6;
/// How long the Envoys may take to give back what a key left unspent: idle 5 s, the tick,
/// one callout.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// `count` requests at `rate` a second, request `i` through Envoy `i % n` as `route(i)`.
fn hammer(
    stack: &Stack,
    key: &CreatedKey,
    count: usize,
    rate: f64,
    route: impl Fn(usize) -> (&'static str, &'static str) + Sync,
) -> Vec<Outcome> {
    let envoys = stack.envoys();
    let start = SystemTime::now() + Duration::from_millis(50);
    load::paced(CLIENTS, count, rate, start, |client, i| {
        let (method, path) = route(i);
        let url = envoys[i % envoys.len()].url(path);
        client.try_request(method, &url, &[("x-api-key", &key.secret)])
    })
}

fn get(_: usize) -> (&'static str, &'static str) {
    ("GET", "/v1/things")
}

fn admitted(outcomes: &[Outcome]) -> u64 {
    outcomes.iter().filter(|o| o.status() == 200).count() as u64
}

/// Waits until nothing of the key is leased out (every Envoy gave back what it held when the
/// key went idle there), then answers its lookup.
fn settled(admin: &Admin, key_id: &str) -> Value {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let (calls, credits, envoys) = admin.leased(key_id);
        if (calls, credits, envoys) == (0, 0, 0) {
            return admin.filter_lookup(key_id);
        }
        assert!(
            Instant::now() < deadline,
            "still leased out after {SETTLE_TIMEOUT:?}: {calls} calls, {credits} credits on \
             {envoys} Envoys"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A quota of 300 (`window`) under 2× overload through every Envoy: never above it, short of
/// it by at most what is leased out when the load stops; once the Envoys gave that back, the
/// charges are exactly the requests admitted, and a second wave admits exactly the rest.
fn a_quota_holds_across_envoys(backend: Backend, envoys: usize, replicas: usize, window: &str) {
    const QUOTA: u64 = 300;
    let _serial = exclusive();
    let stack = Stack::builder()
        .backend(backend)
        .envoys(envoys)
        .replicas(replicas)
        .start();
    let admin = stack.admin();
    let ws = admin.create_workspace("leased-quota", Plan::Enterprise);
    let key = admin.create_key(&ws, &json!({"alias": "k", "quotas": {window: QUOTA}}));
    let denial = format!("Rate limit exceeded: quota {window}");

    let first = hammer(&stack, &key, 2 * QUOTA as usize, 150.0, get);
    let (leased, _, holders) = admin.leased(&key.id);
    for o in first.iter().filter(|o| o.status() != 200) {
        assert_denied(o.response(), 401, &denial);
    }
    let admitted_first = admitted(&first);
    println!(
        "{envoys} Envoys, {} control planes, {window} quota {QUOTA}, {} requests: admitted \
         {admitted_first}, leased out when the load stopped {leased} (on {holders} Envoys)",
        1 + replicas,
        first.len()
    );
    assert!(
        admitted_first <= QUOTA,
        "{admitted_first} admitted: above the quota"
    );
    assert!(
        admitted_first + leased >= QUOTA,
        "admitted {admitted_first} + leased out {leased} short of the quota {QUOTA}"
    );
    let lookup = settled(&admin, &key.id);
    assert_eq!(
        lookup["usage"][window], admitted_first,
        "charged = admitted once every lease is settled: {lookup}"
    );

    let second = hammer(&stack, &key, QUOTA as usize, 150.0, get);
    let (leased, _, _) = admin.leased(&key.id);
    let total = admitted_first + admitted(&second);
    println!(
        "second wave: admitted {} more, {total} in all",
        admitted(&second)
    );
    assert!(total <= QUOTA, "{total} admitted in all: above the quota");
    assert!(
        total + leased >= QUOTA,
        "{total} admitted + {leased} leased out short of the quota"
    );
    let lookup = settled(&admin, &key.id);
    assert_eq!(lookup["usage"][window], total, "{lookup}");
}

#[test]
fn a_daily_quota_holds_across_two_envoys_on_sqlite() {
    a_quota_holds_across_envoys(Backend::Sqlite, 2, 0, "daily");
}

#[test]
fn a_total_quota_holds_across_three_envoys_on_sqlite() {
    a_quota_holds_across_envoys(Backend::Sqlite, 3, 0, "total");
}

#[test]
fn a_daily_quota_holds_across_two_envoys_and_two_control_planes_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        a_quota_holds_across_envoys(backend, 2, 1, "daily");
    }
}

#[test]
fn a_total_quota_holds_across_three_envoys_and_two_control_planes_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        a_quota_holds_across_envoys(backend, 3, 1, "total");
    }
}

/// A daily budget of 300 credits, GETs costing 1 and POSTs 5, under 2× overload through two
/// Envoys: the credits admitted never exceed it and fall short by at most what is leased out.
fn a_credit_budget_holds_across_two_envoys(backend: Backend) {
    const BUDGET: u64 = 300;
    let _serial = exclusive();
    let stack = Stack::builder()
        .backend(backend)
        .envoys(2)
        .set(
            "/usage/routes",
            json!([{"method": "POST", "path": "/v1/things", "credits": 5}]),
        )
        .start();
    let admin = stack.admin();
    let ws = admin.create_workspace("leased-credits", Plan::Enterprise);
    let key = admin.create_key(
        &ws,
        &json!({"alias": "k", "credits": {"limit": BUDGET, "period": "day"}}),
    );
    // Alternating GET (1) and POST (5): 3 credits a request on average, 200 requests = 600.
    let route = |i: usize| {
        if i % 4 < 2 {
            ("GET", "/v1/things")
        } else {
            ("POST", "/v1/things")
        }
    };
    let outcomes = hammer(&stack, &key, 200, 100.0, route);
    let (_, leased, holders) = admin.leased(&key.id);
    for envoy in stack.envoys() {
        println!("{:?}", envoy.filter_stats_with_prefix("leases"));
    }
    let cost = |o: &Outcome| if route(o.index).0 == "POST" { 5 } else { 1 };
    let spent: u64 = outcomes
        .iter()
        .filter(|o| o.status() == 200)
        .map(cost)
        .sum();
    for o in outcomes.iter().filter(|o| o.status() != 200) {
        assert_denied(o.response(), 401, "Rate limit exceeded: credits daily");
    }
    println!(
        "2 Envoys, {BUDGET} credits a day, 1 and 5 a request: {spent} credits admitted, \
         {leased} leased out when the load stopped (on {holders} Envoys)"
    );
    assert!(
        spent <= BUDGET,
        "{spent} credits admitted: above the budget"
    );
    // A lease too small for a POST goes back when one asks; what is left unspent at the end
    // is leased out (and less than a POST may stay unspent on the last lease of each Envoy).
    assert!(
        spent + leased + 2 * 4 >= BUDGET,
        "{spent} admitted + {leased} leased out short of the budget"
    );
    let lookup = settled(&admin, &key.id);
    assert_eq!(lookup["credits"]["used"], spent, "{lookup}");
}

#[test]
fn a_credit_budget_holds_across_two_envoys_on_sqlite() {
    a_credit_budget_holds_across_two_envoys(Backend::Sqlite);
}

#[test]
fn a_credit_budget_holds_across_two_envoys_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        a_credit_budget_holds_across_two_envoys(backend);
    }
}

/// The control plane stops in the middle of the load: each Envoy spends what it holds, then
/// denies with the quota's error, never above; once it is back, the Envoys settle, and the
/// charges equal what was admitted.
#[test]
fn the_control_plane_stopped_mid_run_never_lets_a_key_above_its_quota() {
    const QUOTA: u64 = 300;
    let _serial = exclusive();
    let mut stack = Stack::builder().envoys(2).start();
    let admin = stack.admin();
    let ws = admin.create_workspace("leased-outage", Plan::Enterprise);
    let key = admin.create_key(&ws, &json!({"alias": "k", "quotas": {"daily": QUOTA}}));

    let before = hammer(&stack, &key, 150, 150.0, get);
    let (leased, _, _) = admin.leased(&key.id);
    stack.stop_control_plane();
    let during = hammer(&stack, &key, 450, 150.0, get);
    for o in during.iter().filter(|o| o.status() != 200) {
        assert_denied(o.response(), 401, "Rate limit exceeded: quota daily");
    }
    let (a, b) = (admitted(&before), admitted(&during));
    println!(
        "before the stop: {a} admitted, {leased} leased out; while stopped: {b} admitted \
         of {}",
        during.len()
    );
    assert!(a + b <= QUOTA, "{} admitted: above the quota", a + b);
    assert!(
        b <= leased,
        "{b} admitted while the control plane was down, more than the {leased} leased out"
    );
    stack.start_control_plane();
    let lookup = settled(&admin, &key.id);
    assert_eq!(lookup["usage"]["daily"], a + b, "{lookup}");
}

/// One Envoy takes a lease and goes quiet; the other, hammering the key, gets only what is
/// left, until the quiet Envoy gives its unused units back: then they are the other's.
#[test]
fn a_lease_given_back_when_its_key_goes_idle_is_available_to_the_other_envoy() {
    const QUOTA: u64 = 20;
    let _serial = exclusive();
    let stack = Stack::builder().envoys(2).start();
    let admin = stack.admin();
    let ws = admin.create_workspace("leased-idle", Plan::Enterprise);
    let key = admin.create_key(&ws, &json!({"alias": "k", "quotas": {"total": QUOTA}}));
    let envoys = stack.envoys();
    let (quiet, busy) = (envoys[0], envoys[1]);
    let one = quiet.request("GET", "/v1/things", &[("x-api-key", &key.secret)]);
    assert_eq!(one.status, 200, "{one:?}");
    let (held, _, holders) = admin.leased(&key.id);
    println!("the quiet Envoy holds {held} units after one request");
    assert!(
        held >= 2 && holders == 1,
        "{held} leased out on {holders} Envoys"
    );

    let burst = |n: usize| {
        load::burst(2, n, |client, _| {
            client.try_request(
                "GET",
                &busy.url("/v1/things"),
                &[("x-api-key", &key.secret)],
            )
        })
    };
    let first = burst(30);
    let a = admitted(&first);
    println!("the busy Envoy admits {a} while the quiet one holds its lease");
    // What the quiet Envoy holds (1 spent, the rest not) is nobody else's.
    assert!(
        a <= QUOTA - held,
        "{a}: the quiet Envoy's units were spent elsewhere"
    );

    // Idle for 5 s on the quiet Envoy (and the busy one): the units come back.
    settled(&admin, &key.id);
    let second = burst(30);
    let b = admitted(&second);
    let (left, _, _) = admin.leased(&key.id);
    println!("after the quiet Envoy gave its lease back: {b} more ({left} leased out)");
    assert!(
        b + left >= held - 1,
        "{b} admitted and {left} leased out: the {} units given back were not available",
        held - 1
    );
    assert!(1 + a + b <= QUOTA);
    assert!(1 + a + b + left >= QUOTA);
    for o in first.iter().chain(&second).filter(|o| o.status() != 200) {
        assert_denied(o.response(), 401, "Rate limit exceeded: quota total");
    }
}

/// A never-seen key with a quota costs one round trip to the control plane: its first lease
/// comes with the key lookup (docs/protocol.md, "The first leases, granted with the lookup"),
/// so the first request passes without a lease callout, and the lease is the control plane's
/// like any other.
#[test]
fn a_cold_key_with_a_quota_passes_after_one_round_trip() {
    let _serial = exclusive();
    let stack = Stack::builder().start();
    let admin = stack.admin();
    let ws = admin.create_workspace("leased-cold", Plan::Enterprise);
    let key = admin.create_key(&ws, &json!({"alias": "k", "quotas": {"daily": 1000}}));
    let envoy = stack.envoy();
    let (lookups_before, leases_before) = (
        envoy.filter_stat("lookup.dispatched"),
        envoy.filter_stat("leases.dispatched"),
    );

    let first = envoy.request("GET", "/v1/things", &[("x-api-key", &key.secret)]);
    assert_eq!(first.status, 200, "{first:?}");
    // Counters reach Envoy's stats on the worker's next tick; the key goes idle (and its lease
    // is given back with a callout) only after 5 s.
    let lookups = envoy.settled_filter_stat(
        "lookup.dispatched",
        Duration::from_millis(300),
        Duration::from_secs(3),
    );
    let leases = envoy.filter_stat("leases.dispatched");
    assert_eq!(lookups - lookups_before, 1, "one lookup");
    assert_eq!(
        leases - leases_before,
        0,
        "no lease callout: the lease came with the lookup"
    );
    let (calls, _, holders) = admin.leased(&key.id);
    assert!(
        calls >= 1 && holders == 1,
        "{calls} leased out on {holders} Envoys"
    );

    // Given back like any lease once the key is idle: charged exactly what was admitted.
    let lookup = settled(&admin, &key.id);
    assert_eq!(lookup["usage"]["daily"], 1, "{lookup}");
}
