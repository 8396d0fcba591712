//! What a key carries itself, on the real Envoy (`--concurrency 2`): its own rate limits (on top
//! of its plan's, apart from the other keys of its workspace), its credit budget, the owner the
//! upstream learns about, and a key sent in the query (README, "Guarantees and bounds").

use std::time::{Duration, SystemTime};

use serde_json::json;
use tollgate_integration_tests::load::{self, exclusive, Outcome};
use tollgate_integration_tests::records::admitted_per_second;
use tollgate_integration_tests::{assert_denied, Plan, Stack};

const KEY_PER_SECOND_BODY: &str = "You have exceeded the per-second rate limit of this API key";
const CREDITS_BODY: &str = "Rate limit exceeded: credits monthly";

#[test]
fn a_key_over_its_own_limit_never_takes_its_neighbours_share() {
    const PLAN: u64 = 100;
    const OWN: u64 = 20;
    let _serial = exclusive();
    let stack = Stack::builder().without_usage().start();
    let admin = stack.admin();
    // Both keys share a plan of 100/s; the hammered one has its own 20/s.
    let ws = admin.workspace_on_custom_plan(Some(PLAN), Some(PLAN * 60));
    let hammered = admin.create_key(
        &ws,
        &json!({"alias": "batch job", "rate_limits": {"per_second": OWN}}),
    );
    let calm = admin.create_key(&ws, &json!({"alias": "dashboard"}));
    for key in [&hammered, &calm] {
        assert_eq!(stack.get_with_key("/v1/warm", &key.secret).status, 200);
    }
    let url = stack.envoy().url("/v1/things");
    let start = SystemTime::now() + Duration::from_millis(100);
    let (hammer, neighbour) = std::thread::scope(|s| {
        let hammer = s.spawn(|| {
            // 2,000 requests as fast as 16 connections go: far past 20/s, and past the plan's
            // 100/s had the key no limit of its own.
            load::burst(16, 2_000, |client, _| {
                client.try_request("GET", &url, &[("x-api-key", &hammered.secret)])
            })
        });
        let neighbour = load::paced(2, 40, 10.0, start, |client, _| {
            client.try_request("GET", &url, &[("x-api-key", &calm.secret)])
        });
        (hammer.join().expect("hammer"), neighbour)
    });
    println!(
        "hammered key: {:?}; its neighbour: {:?}",
        load::status_counts(&hammer),
        load::status_counts(&neighbour)
    );
    let limited: Vec<&Outcome> = hammer.iter().filter(|o| o.status() != 200).collect();
    assert!(!limited.is_empty(), "the hammered key was never limited");
    for o in &limited {
        let r = o.response();
        assert_denied(r, 429, KEY_PER_SECOND_BODY);
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
        assert_eq!(
            r.header("ratelimit-policy"),
            Some(
                format!(
                    "\"per-second\";q={PLAN};w=1, \"per-minute\";q={};w=60, \"key-per-second\";q={OWN};w=1",
                    PLAN * 60
                )
                .as_str()
            ),
            "{r:?}"
        );
        assert_eq!(r.header("ratelimit"), Some("\"key-per-second\";r=0;t=1"));
    }
    for o in &neighbour {
        assert_eq!(
            o.status(),
            200,
            "the other key of the workspace was denied: {:?}",
            o.response()
        );
    }
}

#[test]
fn a_key_per_second_limit_holds_at_twice_the_rate_over_ten_seconds() {
    const LIMIT: u64 = 100;
    const SECONDS: u64 = 10;
    let _serial = exclusive();
    let stack = Stack::builder()
        .set("/usage/flush_interval", "500ms")
        // No lookup during the run: every request is decided at its arrival (its record's
        // timestamp).
        .cache_ttl("60s")
        .key_cache_ttl_ms(60_000)
        .start();
    let admin = stack.admin();
    let ws = admin.create_workspace("own-limit", Plan::Enterprise);
    let key = admin.create_key(
        &ws,
        &json!({"alias": "paced", "rate_limits": {"per_second": LIMIT}}),
    );
    assert_eq!(stack.get_with_key("/v1/warm", &key.secret).status, 200);

    let second = load::sleep_until_next_second(Duration::ZERO);
    let start = SystemTime::UNIX_EPOCH + Duration::from_millis(second * 1000 + 1000 + 20);
    let url = stack.envoy().url("/v1/things");
    let total = (2 * LIMIT * SECONDS) as usize;
    let outcomes = load::paced(16, total, (2 * LIMIT) as f64, start, |client, _| {
        client.try_request("GET", &url, &[("x-api-key", &key.secret)])
    });
    let admitted = outcomes.iter().filter(|o| o.status() == 200).count() as u64;
    println!(
        "key {LIMIT}/s at {}/s for {SECONDS} s: {admitted} admitted; {:?}",
        2 * LIMIT,
        load::status_counts(&outcomes)
    );
    for o in outcomes.iter().filter(|o| o.status() != 200) {
        assert_denied(o.response(), 429, KEY_PER_SECOND_BODY);
    }
    let policy = format!("\"key-per-second\";q={LIMIT};w=1");
    for o in outcomes.iter().filter(|o| o.status() == 200) {
        let r = o.response();
        assert_eq!(r.header("ratelimit-policy"), Some(policy.as_str()), "{r:?}");
    }
    let expected = LIMIT * SECONDS;
    assert!(
        admitted.abs_diff(expected) * 50 <= expected,
        "{admitted} admitted, expected {expected} ± 2 %"
    );
    let records = admin.settled_requests(
        &[("key_id", key.id.clone())],
        total + 1,
        Duration::from_secs(30),
    );
    assert_eq!(records.len(), total + 1, "one record per request");
    let limited = records
        .iter()
        .filter(|r| r["response_code"] == 429)
        .collect::<Vec<_>>();
    assert!(
        limited.iter().all(|r| r["status"] == "rate_limited"),
        "records of key-limited requests are rate_limited"
    );
    let per_second = admitted_per_second(&records);
    println!("admitted per second (Envoy's clock): {per_second:?}");
    let over: Vec<_> = per_second
        .iter()
        .filter(|(_, count)| **count > LIMIT)
        .collect();
    assert!(over.is_empty(), "more than {LIMIT} admitted in: {over:?}");
}

#[test]
fn a_credit_budget_admits_exactly_its_credits_with_routes_of_one_and_five() {
    const BUDGET: u64 = 100;
    let _serial = exclusive();
    let stack = Stack::builder()
        .set(
            "/usage/routes",
            json!([{"method": "POST", "path": "/v1/reports", "credits": 5}]),
        )
        .set("/usage/flush_interval", "250ms")
        .start();
    let admin = stack.admin();
    let ws = admin.create_workspace("credits", Plan::Enterprise);
    let key = admin.create_key(
        &ws,
        &json!({"alias": "metered", "credits": {"limit": BUDGET, "period": "month"}}),
    );
    let (get, post) = (
        stack.envoy().url("/v1/things"),
        stack.envoy().url("/v1/reports"),
    );
    // Alternating 1 and 5 credits from 16 connections, far more than the budget holds.
    let outcomes = load::burst(16, 120, |client, i| {
        let (method, url) = if i % 2 == 0 {
            ("GET", &get)
        } else {
            ("POST", &post)
        };
        client.try_request(method, url, &[("x-api-key", &key.secret)])
    });
    let spent: u64 = outcomes
        .iter()
        .filter(|o| o.status() == 200)
        .map(|o| if o.index % 2 == 0 { 1 } else { 5 })
        .sum();
    println!(
        "budget {BUDGET}: {spent} credits admitted; {:?}",
        load::status_counts(&outcomes)
    );
    assert_eq!(spent, BUDGET, "every credit spent, never one more");
    for o in outcomes.iter().filter(|o| o.status() != 200) {
        assert_denied(o.response(), 401, CREDITS_BODY);
    }
    // The control plane counts the same from the records.
    admin.settled_requests(&[("key_id", key.id.clone())], 120, Duration::from_secs(30));
    let shown = admin.get_key(&key.id);
    assert_eq!(shown["credits_used"], BUDGET, "{shown}");
    assert_eq!(shown["credits_remaining"], 0, "{shown}");
}

#[test]
fn the_owner_reaches_the_upstream_and_spoofed_owners_do_not() {
    let stack = Stack::builder()
        .set("/forward_meta", json!(["tier"]))
        .without_usage()
        .start();
    let admin = stack.admin();
    let ws = admin.create_workspace("owners", Plan::Pro);
    let owned = admin.create_key(
        &ws,
        &json!({"alias": "acme", "external_id": "cus_42",
                "meta": {"tier": "gold", "internal_note": "do not forward"}}),
    );
    let spoofed = [
        ("x-tollgate-external-id", "cus_spoofed"),
        ("x-tollgate-meta-tier", "platinum"),
        ("x-tollgate-meta-internal_note", "spoofed"),
    ];
    let mut headers = vec![("x-api-key", owned.secret.as_str())];
    headers.extend(spoofed);
    let response = stack.get("/v1/things", &headers);
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.echo();
    assert_eq!(echo.header_values("x-tollgate-external-id"), ["cus_42"]);
    assert_eq!(echo.header_values("x-tollgate-meta-tier"), ["gold"]);
    assert!(
        echo.header("x-tollgate-meta-internal_note").is_none(),
        "meta not in forward_meta stays home, and the client's copy is removed: {echo:?}"
    );
    // A key without an owner: nothing, whatever the client sends.
    let plain = admin.create_key(&ws, &json!({"alias": "plain"}));
    let mut headers = vec![("x-api-key", plain.secret.as_str())];
    headers.extend(spoofed);
    let echo = stack.get("/v1/things", &headers).echo();
    assert!(echo.header("x-tollgate-external-id").is_none(), "{echo:?}");
    assert!(echo.header("x-tollgate-meta-tier").is_none(), "{echo:?}");
}

#[test]
fn a_key_in_the_query_passes_and_the_upstream_never_sees_it() {
    let stack = Stack::builder()
        .set(
            "/key_sources",
            json!([{"header": "x-api-key"}, {"query": "api_key"}]),
        )
        .without_usage()
        .start();
    let key = stack.admin().new_key(Plan::Pro);
    let path = format!("/v1/things?page=2&api_key={}&sort=asc", key.secret);
    let response = stack.get(&path, &[]);
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.echo();
    assert_eq!(echo.header("x-tollgate-key-id"), Some(key.id.as_str()));
    let seen = format!("{}?{}", echo.path, echo.query.clone().unwrap_or_default());
    assert!(
        !seen.contains(&key.secret) && !seen.contains("api_key"),
        "the upstream saw the key: {seen}"
    );
    assert!(
        seen.contains("page=2") && seen.contains("sort=asc"),
        "{seen}"
    );
    // In the query and a header at once: ambiguous.
    let both = stack.get(&path, &[("x-api-key", &key.secret)]);
    assert_denied(&both, 401, "Invalid API Key");
}
