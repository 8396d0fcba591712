//! Two Envoy processes (each `--concurrency 2`, own ports, base id and instance id) sharing one
//! control plane (issue 4).
//!
//! Quotas: each Envoy counts its own admissions exactly and learns the other's from the control
//! plane (ingested records) when it looks the key up again, so the README bounds the overshoot
//! by (N − 1)/N × R × (T + L): R the aggregate admitted rate, T the cache TTL, L the usage delivery
//! delay (`usage.flush_interval` + one POST, ≈ 1 s).
//!
//! Plan limits: with `limits.instances: 2` each Envoy enforces ⌈limit/2⌉ per window, so the two
//! together never pass more than the limit in any second.
//!
//! The quota and credit overshoot tests, which rest on the control plane's per-instance counts,
//! also run against PostgreSQL (`*_on_postgres`, `make test-postgres`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tollgate_integration_tests::load::{self, exclusive};
use tollgate_integration_tests::records::admitted_per_second;
use tollgate_integration_tests::time::parse_rfc3339_ms;
use tollgate_integration_tests::{assert_denied, Admin, Backend, Plan, Stack};

const QUOTA_BODY: &str = "Rate limit exceeded: quota daily";

fn daily_quota_overshoot_across_two_envoys_stays_within_the_readme_bound(backend: Backend) {
    const DAILY: u64 = 1_000;
    const RATE: f64 = 200.0; // aggregate, 100 a second through each Envoy
    const TTL_S: f64 = 2.0;
    const DELIVERY_S: f64 = 1.0; // flush_interval 500ms + worker tick + one POST
    const N: f64 = 2.0;
    let _serial = exclusive();
    let stack = Stack::builder()
        .backend(backend)
        .envoys(2)
        .cache_ttl("2s")
        .set("/usage/flush_interval", "500ms")
        .start();
    let admin = stack.admin();
    let ws = admin.create_workspace("shared-quota", Plan::Enterprise);
    let key = admin.create_key(&ws, &json!({"alias": "k", "quotas": {"daily": DAILY}}));
    let urls: Vec<String> = stack.envoys().iter().map(|e| e.url("/v1/things")).collect();

    let total = 2 * DAILY as usize; // 2× overload
    let start = SystemTime::now() + Duration::from_millis(50);
    let outcomes = load::paced(16, total, RATE, start, |client, i| {
        client.try_request("GET", &urls[i % 2], &[("x-api-key", &key.secret)])
    });
    for o in outcomes.iter().filter(|o| o.status() != 200) {
        assert_denied(o.response(), 401, QUOTA_BODY);
    }
    let admitted: Vec<_> = outcomes.iter().filter(|o| o.status() == 200).collect();
    let per_envoy: Vec<usize> = (0..2)
        .map(|e| admitted.iter().filter(|o| o.index % 2 == e).count())
        .collect();
    let first_us = outcomes.first().map_or(0, |o| o.sent_us);
    let last_us = admitted
        .iter()
        .map(|o| o.answered_us)
        .max()
        .unwrap_or(first_us);
    let admitting_s = (last_us - first_us) as f64 / 1e6;
    let rate = admitted.len() as f64 / admitting_s.max(0.001);
    let overshoot = admitted.len().saturating_sub(DAILY as usize);
    let bound = (N - 1.0) / N * rate * (TTL_S + DELIVERY_S);
    println!(
        "2 Envoys, daily = {DAILY}, {RATE}/s sent: admitted {} ({per_envoy:?} per Envoy) over \
         {admitting_s:.1} s, R = {rate:.0}/s; overshoot {overshoot}, bound (N-1)/N*R*(T+L) = \
         {bound:.0} (T = {TTL_S} s, L = {DELIVERY_S} s)",
        admitted.len()
    );
    assert!(
        overshoot as f64 <= bound,
        "overshoot {overshoot} above the README's bound {bound:.0}"
    );
    assert!(
        admitted.len() as u64 >= DAILY - DAILY / 50,
        "only {} admitted with daily = {DAILY}",
        admitted.len()
    );

    // Once both Envoys have the control plane's count, the key is closed on both.
    let records = admin.settled_requests(
        &[("key_id", key.id.clone())],
        total,
        Duration::from_secs(30),
    );
    assert_eq!(records.len(), total, "one record per request");
    std::thread::sleep(Duration::from_millis(2500)); // past the cache TTL
    for (e, url) in urls.iter().enumerate() {
        for _ in 0..10 {
            let response = tollgate_integration_tests::http::request(
                "GET",
                url,
                &[("x-api-key", &key.secret)],
                None,
            );
            assert!(
                response.status == 401 && response.error().as_deref() == Some(QUOTA_BODY),
                "Envoy {} after the quota was used up through both: {response:?}",
                e + 1
            );
        }
    }
}

#[test]
fn daily_quota_overshoot_across_two_envoys_stays_within_the_readme_bound_on_sqlite() {
    daily_quota_overshoot_across_two_envoys_stays_within_the_readme_bound(Backend::Sqlite);
}

#[test]
fn daily_quota_overshoot_across_two_envoys_stays_within_the_readme_bound_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        daily_quota_overshoot_across_two_envoys_stays_within_the_readme_bound(backend);
    }
}

/// A workspace on a custom plan of `per_second` requests a second (`POST /v1/plans`,
/// `PATCH /v1/workspaces/{ws}`).
fn plan_workspace(admin: &Admin, per_second: u64) -> String {
    admin.workspace_on_custom_plan(Some(per_second), Some(per_second * 60))
}

#[test]
fn plan_limit_split_across_two_envoys_never_exceeds_the_limit_in_any_second() {
    const LIMIT: u64 = 100;
    const SECONDS: u64 = 5;
    let _serial = exclusive();
    let stack = Stack::builder()
        .envoys(2)
        .set("/limits/instances", 2)
        .set("/usage/flush_interval", "500ms")
        // No lookup during the run: every request is decided at its arrival, the record's
        // timestamp (a request waiting for a lookup is decided when the answer comes).
        .cache_ttl("60s")
        .key_cache_ttl_ms(60_000)
        .start();
    let admin = stack.admin();
    let ws = plan_workspace(&admin, LIMIT);
    let key = admin.create_key(&ws, &json!({"alias": "split"}));
    let urls: Vec<String> = stack.envoys().iter().map(|e| e.url("/v1/things")).collect();
    for url in &urls {
        let warm = tollgate_integration_tests::http::request(
            "GET",
            url,
            &[("x-api-key", &key.secret)],
            None,
        );
        assert_eq!(warm.status, 200, "{warm:?}");
        assert_eq!(
            warm.header("x-ratelimit-limit"),
            Some((LIMIT / 2).to_string().as_str()),
            "each Envoy enforces ceil(limit / 2): {warm:?}"
        );
    }

    let second = load::sleep_until_next_second(Duration::ZERO);
    let start = SystemTime::UNIX_EPOCH + Duration::from_millis(second * 1000 + 1000 + 20);
    let total = (2 * LIMIT * SECONDS) as usize; // 2× overload in total, 100/s per Envoy
    let outcomes = load::paced(16, total, (2 * LIMIT) as f64, start, |client, i| {
        client.try_request("GET", &urls[i % 2], &[("x-api-key", &key.secret)])
    });
    for o in outcomes.iter().filter(|o| o.status() != 200) {
        assert_denied(
            o.response(),
            429,
            "You have exceeded the per-second rate limit on your subscription",
        );
    }
    // Which Envoy answered each admitted request, by Envoy's request id.
    let mut envoy_of: HashMap<String, usize> = HashMap::new();
    for o in outcomes.iter().filter(|o| o.status() == 200) {
        let echo = o.response().echo();
        let id = echo.header("x-request-id").unwrap_or_default().to_string();
        envoy_of.insert(id, o.index % 2);
    }
    let admitted = envoy_of.len() as u64;
    println!(
        "plan {LIMIT}/s split over 2 Envoys at {}/s for {SECONDS} s: {admitted} admitted; {:?}",
        2 * LIMIT,
        load::status_counts(&outcomes)
    );
    let expected = LIMIT * SECONDS;
    assert!(
        admitted.abs_diff(expected) * 50 <= expected,
        "{admitted} admitted, expected {expected} ± 2 %"
    );

    // Per second of Envoy's clock (the records' timestamps), in total and per Envoy.
    let records = admin.settled_requests(
        &[("key_id", key.id.clone())],
        total + 2,
        Duration::from_secs(30),
    );
    assert_eq!(records.len(), total + 2, "one record per request");
    let mut per_second: BTreeMap<u64, [u64; 2]> = BTreeMap::new();
    for r in &records {
        let Some(envoy) = r["request_id"].as_str().and_then(|id| envoy_of.get(id)) else {
            continue; // denied, or a warm-up request
        };
        let at = r["timestamp"]
            .as_str()
            .and_then(parse_rfc3339_ms)
            .unwrap_or_else(|| panic!("record without timestamp: {r}"));
        per_second.entry(at / 1000).or_default()[*envoy] += 1;
    }
    println!("admitted per second [envoy 1, envoy 2]: {per_second:?}");
    let counted: u64 = per_second.values().map(|c| c[0] + c[1]).sum();
    assert_eq!(counted, admitted, "every admitted request has its record");
    for (s, [a, b]) in &per_second {
        assert!(
            *a <= LIMIT / 2 && *b <= LIMIT / 2,
            "second {s}: [{a}, {b}] admitted; each Envoy may pass {}",
            LIMIT / 2
        );
        assert!(a + b <= LIMIT, "second {s}: {} admitted in total", a + b);
    }
}

/// A key's own limit splits like the plan's: with `limits.instances: 2` each Envoy enforces
/// ⌈limit/2⌉, so the two never pass more than the key's limit in any second of Envoy's clock.
#[test]
fn a_key_limit_split_across_two_envoys_never_exceeds_it_in_any_second() {
    const LIMIT: u64 = 60;
    const SECONDS: u64 = 5;
    let _serial = exclusive();
    let stack = Stack::builder()
        .envoys(2)
        .set("/limits/instances", 2)
        .set("/usage/flush_interval", "500ms")
        .cache_ttl("60s")
        .key_cache_ttl_ms(60_000)
        .start();
    let admin = stack.admin();
    let ws = admin.create_workspace("own-split", Plan::Enterprise);
    let key = admin.create_key(
        &ws,
        &json!({"alias": "split", "rate_limits": {"per_second": LIMIT}}),
    );
    let urls: Vec<String> = stack.envoys().iter().map(|e| e.url("/v1/things")).collect();
    for url in &urls {
        let warm = tollgate_integration_tests::http::request(
            "GET",
            url,
            &[("x-api-key", &key.secret)],
            None,
        );
        assert_eq!(
            warm.header("x-ratelimit-limit"),
            Some((LIMIT / 2).to_string().as_str()),
            "each Envoy enforces ceil(limit / 2): {warm:?}"
        );
    }
    let second = load::sleep_until_next_second(Duration::ZERO);
    let start = SystemTime::UNIX_EPOCH + Duration::from_millis(second * 1000 + 1000 + 20);
    let total = (2 * LIMIT * SECONDS) as usize;
    let outcomes = load::paced(16, total, (2 * LIMIT) as f64, start, |client, i| {
        client.try_request("GET", &urls[i % 2], &[("x-api-key", &key.secret)])
    });
    for o in outcomes.iter().filter(|o| o.status() != 200) {
        assert_denied(
            o.response(),
            429,
            "You have exceeded the per-second rate limit of this API key",
        );
    }
    let records = admin.settled_requests(
        &[("key_id", key.id.clone())],
        total + 2,
        Duration::from_secs(30),
    );
    let per_second = admitted_per_second(&records);
    let admitted: u64 = outcomes.iter().filter(|o| o.status() == 200).count() as u64;
    println!(
        "key {LIMIT}/s over 2 Envoys at {}/s: {admitted} admitted; per second {per_second:?}",
        2 * LIMIT
    );
    for (s, n) in &per_second {
        assert!(
            *n <= LIMIT,
            "second {s}: {n} admitted with the key's limit {LIMIT}"
        );
    }
    let expected = LIMIT * SECONDS;
    assert!(
        admitted.abs_diff(expected) * 50 <= expected,
        "{admitted} admitted, expected {expected} ± 2 %"
    );
}

/// Credits across two Envoys: each counts its own exactly and learns the other's from the
/// control plane, so the overshoot is at most (N − 1)/N × C × (T + L) credits (README), C the
/// aggregate rate of credits spent.
fn a_credit_budget_across_two_envoys_overshoots_within_the_readme_bound(backend: Backend) {
    const BUDGET: u64 = 1_000;
    const RATE: f64 = 100.0; // requests a second in total, 2 credits each
    const COST: u64 = 2;
    const TTL_S: f64 = 2.0;
    const DELIVERY_S: f64 = 1.0;
    const N: f64 = 2.0;
    let _serial = exclusive();
    let stack = Stack::builder()
        .backend(backend)
        .envoys(2)
        .cache_ttl("2s")
        .set("/usage/flush_interval", "500ms")
        .set(
            "/usage/routes",
            json!([{"method": "GET", "path": "/v1/things", "credits": COST}]),
        )
        .start();
    let admin = stack.admin();
    let ws = admin.create_workspace("shared-credits", Plan::Enterprise);
    let key = admin.create_key(
        &ws,
        &json!({"alias": "k", "credits": {"limit": BUDGET, "period": "day"}}),
    );
    let urls: Vec<String> = stack.envoys().iter().map(|e| e.url("/v1/things")).collect();
    let total = (2 * BUDGET / COST) as usize; // 2× overload
    let start = SystemTime::now() + Duration::from_millis(50);
    let outcomes = load::paced(16, total, RATE, start, |client, i| {
        client.try_request("GET", &urls[i % 2], &[("x-api-key", &key.secret)])
    });
    for o in outcomes.iter().filter(|o| o.status() != 200) {
        assert_denied(o.response(), 401, "Rate limit exceeded: credits daily");
    }
    let admitted: Vec<_> = outcomes.iter().filter(|o| o.status() == 200).collect();
    let spent = admitted.len() as u64 * COST;
    let first_us = outcomes.first().map_or(0, |o| o.sent_us);
    let last_us = admitted
        .iter()
        .map(|o| o.answered_us)
        .max()
        .unwrap_or(first_us);
    let credit_rate = spent as f64 / ((last_us - first_us) as f64 / 1e6).max(0.001);
    let overshoot = spent.saturating_sub(BUDGET);
    let bound = (N - 1.0) / N * credit_rate * (TTL_S + DELIVERY_S);
    println!(
        "2 Envoys, budget {BUDGET} credits, {RATE} req/s of {COST}: {spent} credits admitted, \
         C = {credit_rate:.0}/s; overshoot {overshoot}, bound (N-1)/N*C*(T+L) = {bound:.0}"
    );
    assert!(
        overshoot as f64 <= bound,
        "overshoot {overshoot} above the README's bound {bound:.0}"
    );
    assert!(
        spent >= BUDGET - BUDGET / 50,
        "only {spent} credits admitted"
    );
}

#[test]
fn a_credit_budget_across_two_envoys_overshoots_within_the_readme_bound_on_sqlite() {
    a_credit_budget_across_two_envoys_overshoots_within_the_readme_bound(Backend::Sqlite);
}

#[test]
fn a_credit_budget_across_two_envoys_overshoots_within_the_readme_bound_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        a_credit_budget_across_two_envoys_overshoots_within_the_readme_bound(backend);
    }
}
