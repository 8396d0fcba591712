//! Two Envoy processes (each `--concurrency 2`, own ports, base id and instance id) sharing one
//! control plane (issue 4): rate limits, which are split per Envoy. Quotas and credit budgets
//! across Envoys are leased from the control plane: `leases.rs`.
//!
//! Plan limits: with `limits.instances: 2` each Envoy enforces ⌈limit/2⌉ per window, so the two
//! together never pass more than the limit in any second.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tollgate_integration_tests::load::{self, exclusive};
use tollgate_integration_tests::records::admitted_per_second;
use tollgate_integration_tests::time::parse_rfc3339_ms;
use tollgate_integration_tests::{assert_denied, Admin, Plan, Stack};

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
        // X-RateLimit-Limit shows each Envoy's share (the default sends only the IETF pair).
        .set("/limits/headers", "all")
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
        // X-RateLimit-Limit shows each Envoy's share (the default sends only the IETF pair).
        .set("/limits/headers", "all")
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
