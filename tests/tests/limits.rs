//! Limits at 2× overload on one Envoy (`--concurrency 2`): per-key quotas are exact within one
//! Envoy, plan rate limits are fixed windows on Envoy's clock (README, "Guarantees and bounds").
//! The quota after ingest and a cache refresh (the control plane's `usage` and `recent`) also
//! runs against PostgreSQL (`*_on_postgres`, `make test-postgres`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tollgate_integration_tests::load::{self, exclusive, Outcome};
use tollgate_integration_tests::records::admitted_per_second;
use tollgate_integration_tests::{assert_denied, Admin, Backend, CreatedKey, Plan, Stack};

const DAILY: usize = 1_000;
const QUOTA_BODY: &str = "Rate limit exceeded: quota daily";
const PER_SECOND_BODY: &str = "You have exceeded the per-second rate limit on your subscription";

/// A key with `quotas.daily` on an enterprise workspace (no plan limits to interfere).
fn daily_key(admin: &Admin, daily: usize) -> CreatedKey {
    let ws = admin.create_workspace("quota", Plan::Enterprise);
    admin.create_key(&ws, &json!({"alias": "daily", "quotas": {"daily": daily}}))
}

fn overload(stack: &Stack, key: &CreatedKey, requests: usize) -> Vec<Outcome> {
    let url = stack.envoy().url("/v1/things");
    load::burst(16, requests, |client, _| {
        client.try_request("GET", &url, &[("x-api-key", &key.secret)])
    })
}

/// 2,000 requests from 16 connections against `daily` = 1,000: at most 1,000 pass, and no
/// fewer than 980; every other answer is the quota denial with `status`.
fn check_quota_overload(stack: &Stack, key: &CreatedKey, status: u16) {
    let outcomes = overload(stack, key, 2 * DAILY);
    let admitted = outcomes.iter().filter(|o| o.status() == 200).count();
    println!(
        "quota daily={DAILY}: {admitted} of {} admitted; statuses {:?}",
        outcomes.len(),
        load::status_counts(&outcomes)
    );
    for o in outcomes.iter().filter(|o| o.status() != 200) {
        assert_denied(o.response(), status, QUOTA_BODY);
    }
    assert!(
        admitted <= DAILY,
        "quota overshoot within one Envoy: {admitted} admitted with daily = {DAILY}"
    );
    assert!(
        admitted >= DAILY - DAILY / 50,
        "only {admitted} admitted with daily = {DAILY} (at least 980 expected)"
    );
    assert_eq!(
        stack.envoy().settled_filter_stat(
            "limits.untracked",
            Duration::from_millis(300),
            Duration::from_secs(2)
        ),
        0,
        "requests admitted without being counted (tollgate.limits.untracked)"
    );
}

#[test]
fn daily_quota_holds_at_twice_the_quota_with_401() {
    let _serial = exclusive();
    let stack = Stack::start();
    let key = daily_key(&stack.admin(), DAILY);
    check_quota_overload(&stack, &key, 401);
}

#[test]
fn quota_status_429_answers_quota_denials_with_429() {
    let _serial = exclusive();
    let stack = Stack::builder().set("/limits/quota_status", 429).start();
    let key = daily_key(&stack.admin(), DAILY);
    check_quota_overload(&stack, &key, 429);
}

/// Once the control plane has stored the records and the key's state is looked up again, the
/// control plane's count (`usage`, `recent`) replaces the Envoy's own: the key stays exactly at
/// its quota, neither reopened nor counted twice.
fn quota_stays_exact_after_records_are_ingested_and_the_cache_refreshes(backend: Backend) {
    const QUOTA: usize = 100;
    let _serial = exclusive();
    let stack = Stack::builder()
        .backend(backend)
        .cache_ttl("1s")
        .set("/usage/flush_interval", "250ms")
        .start();
    let admin = stack.admin();
    let key = daily_key(&admin, QUOTA);
    let first = overload(&stack, &key, QUOTA + 50);
    let admitted = first.iter().filter(|o| o.status() == 200).count();
    assert_eq!(
        admitted,
        QUOTA,
        "statuses {:?}",
        load::status_counts(&first)
    );

    let records = admin.settled_requests(
        &[("key_id", key.id.clone())],
        QUOTA + 50,
        Duration::from_secs(30),
    );
    assert_eq!(records.len(), QUOTA + 50, "records stored");
    std::thread::sleep(Duration::from_millis(1500)); // past cache.ttl: the next request re-asks

    let later = overload(&stack, &key, 40);
    for o in &later {
        assert_denied(o.response(), 401, QUOTA_BODY);
    }
    // Counters reach Envoy's stats on the worker's next tick: wait for them to settle.
    let lookups = stack.envoy().settled_filter_stat(
        "lookup.dispatched",
        Duration::from_millis(300),
        Duration::from_secs(3),
    );
    assert!(
        lookups >= 2,
        "the key's state was never looked up again ({lookups} lookups)"
    );
}

#[test]
fn quota_stays_exact_after_records_are_ingested_and_the_cache_refreshes_on_sqlite() {
    quota_stays_exact_after_records_are_ingested_and_the_cache_refreshes(Backend::Sqlite);
}

#[test]
fn quota_stays_exact_after_records_are_ingested_and_the_cache_refreshes_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        quota_stays_exact_after_records_are_ingested_and_the_cache_refreshes(backend);
    }
}

/// A workspace on a custom plan of `per_second` requests a second (`POST /v1/plans`,
/// `PATCH /v1/workspaces/{ws}`); its per-minute limit, 60 × that, never binds here.
fn plan_workspace(admin: &Admin, per_second: u64) -> (String, u64) {
    let per_minute = per_second * 60;
    (
        admin.workspace_on_custom_plan(Some(per_second), Some(per_minute)),
        per_minute,
    )
}

/// Admitted per second the client can pin a request to: Envoy's decision lies between the
/// client's send and answer times, so a client-side bucket is only sure for requests sent and
/// answered within the same second (the records give Envoy's own view,
/// `records::admitted_per_second`).
fn surely_admitted_per_second(outcomes: &[Outcome]) -> BTreeMap<u64, u64> {
    let mut per_second = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.status() == 200) {
        let (sent, answered) = (o.sent_us / 1_000_000, o.answered_us / 1_000_000);
        if sent == answered {
            *per_second.entry(sent).or_insert(0) += 1;
        }
    }
    per_second
}

#[test]
fn plan_per_second_limit_holds_at_twice_the_rate_over_ten_seconds() {
    const LIMIT: u64 = 100;
    const SECONDS: u64 = 10;
    let _serial = exclusive();
    let stack = Stack::builder()
        .set("/usage/flush_interval", "500ms")
        // The IETF pair and the X-RateLimit-* trio (the default is the pair alone).
        .set("/limits/headers", "all")
        // No lookup during the run: every request is decided at its arrival, the record's
        // timestamp (a request waiting for a lookup is decided when the answer comes).
        .cache_ttl("60s")
        .key_cache_ttl_ms(60_000)
        .start();
    let admin = stack.admin();
    let (ws, per_minute) = plan_workspace(&admin, LIMIT);
    let key = admin.create_key(&ws, &json!({"alias": "paced"}));
    assert_eq!(stack.get_with_key("/v1/warm", &key.secret).status, 200);

    let second = load::sleep_until_next_second(Duration::ZERO);
    let start = SystemTime::UNIX_EPOCH + Duration::from_millis(second * 1000 + 1000 + 20);
    let url = stack.envoy().url("/v1/things");
    let total = (2 * LIMIT * SECONDS) as usize;
    let outcomes = load::paced(16, total, (2 * LIMIT) as f64, start, |client, _| {
        client.try_request("GET", &url, &[("x-api-key", &key.secret)])
    });
    let admitted: Vec<&Outcome> = outcomes.iter().filter(|o| o.status() == 200).collect();
    let statuses = load::status_counts(&outcomes);
    println!(
        "plan {LIMIT}/s at {}/s for {SECONDS} s: {} admitted; statuses {statuses:?}",
        2 * LIMIT,
        admitted.len()
    );

    // Denials: 429 with the per-second message, Retry-After and the rate-limit headers.
    let policy = format!("\"per-second\";q={LIMIT};w=1, \"per-minute\";q={per_minute};w=60");
    let limit = LIMIT.to_string();
    for o in outcomes.iter().filter(|o| o.status() != 200) {
        let r = o.response();
        assert_denied(r, 429, PER_SECOND_BODY);
        assert_eq!(r.header("retry-after"), Some("1"), "Retry-After: {r:?}");
        assert_eq!(r.header("ratelimit-policy"), Some(policy.as_str()), "{r:?}");
        assert_eq!(
            r.header("ratelimit"),
            Some("\"per-second\";r=0;t=1"),
            "{r:?}"
        );
        assert_eq!(r.header("x-ratelimit-limit"), Some(limit.as_str()), "{r:?}");
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"), "{r:?}");
        assert_eq!(r.header("x-ratelimit-reset"), Some("1"), "{r:?}");
    }
    // Passes: the rate-limit headers describe the plan and the second window.
    for o in &admitted {
        let r = o.response();
        assert_eq!(r.header("ratelimit-policy"), Some(policy.as_str()), "{r:?}");
        let remaining: u64 = r
            .header("x-ratelimit-remaining")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("X-RateLimit-Remaining: {r:?}"));
        assert!(remaining < LIMIT, "{r:?}");
        assert_eq!(
            r.header("ratelimit"),
            Some(format!("\"per-second\";r={remaining};t=1").as_str()),
            "{r:?}"
        );
        assert_eq!(r.header("x-ratelimit-limit"), Some(limit.as_str()), "{r:?}");
        assert_eq!(r.header("x-ratelimit-reset"), Some("1"), "{r:?}");
    }

    // Accuracy: within 2 % of LIMIT × SECONDS.
    let expected = LIMIT * SECONDS;
    let n = admitted.len() as u64;
    assert!(
        n.abs_diff(expected) * 50 <= expected,
        "{n} admitted, expected {expected} ± 2 %"
    );

    // Never more than LIMIT in any second of Envoy's clock (records), nor in any second the
    // client can pin a request to.
    for (s, count) in surely_admitted_per_second(&outcomes) {
        assert!(
            count <= LIMIT,
            "{count} admitted within second {s} (client clock)"
        );
    }
    let records = admin.settled_requests(
        &[("key_id", key.id.clone())],
        total + 1,
        Duration::from_secs(30),
    );
    assert_eq!(records.len(), total + 1, "one record per request");
    let echoed: HashSet<String> = admitted
        .iter()
        .filter_map(|o| {
            o.response()
                .echo()
                .header("x-request-id")
                .map(str::to_string)
        })
        .collect();
    let admitted_records: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| r["response_code"] == 200 && r["endpoint"] == "/v1/things")
        .cloned()
        .collect();
    let recorded: HashSet<String> = admitted_records
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(recorded, echoed, "the admitted requests' records");
    let per_second = admitted_per_second(&admitted_records);
    println!("admitted per second (Envoy's clock): {per_second:?}");
    let over: HashMap<u64, u64> = per_second
        .into_iter()
        .filter(|(_, count)| *count > LIMIT)
        .collect();
    assert!(
        over.is_empty(),
        "more than {LIMIT} admitted in these seconds: {over:?}"
    );
}

/// A plan change (`PATCH /v1/workspaces/{ws}`) reaches the edge within the cache TTL: a key of
/// an unlimited workspace moved to a 5/s plan is limited (and gets the headers) once its state
/// is looked up again.
#[test]
fn a_plan_change_reaches_the_edge_within_the_cache_ttl() {
    let _serial = exclusive();
    let stack = Stack::builder().cache_ttl("1s").without_usage().start();
    let admin = stack.admin();
    let plan = format!("five-{}", std::process::id());
    admin.create_plan(&plan, 25, Some(5), None);
    let ws = admin.create_workspace("moving", Plan::Enterprise);
    let key = admin.create_key(&ws, &json!({"alias": "mover"}));
    let before = overload(&stack, &key, 30);
    assert!(
        before.iter().all(|o| o.status() == 200),
        "enterprise: no plan limit: {:?}",
        load::status_counts(&before)
    );
    assert_eq!(before[0].response().header("ratelimit-policy"), None);

    admin.set_workspace_plan(&ws, &plan);
    std::thread::sleep(Duration::from_millis(1500));
    let second = load::sleep_until_next_second(Duration::from_millis(50));
    let after = overload(&stack, &key, 30);
    let within: Vec<&Outcome> = after
        .iter()
        .filter(|o| o.answered_us / 1_000_000 == second)
        .collect();
    let admitted = within.iter().filter(|o| o.status() == 200).count();
    assert!(
        within.len() >= 10 && admitted <= 5,
        "after the change to 5/s: {admitted} of {} requests within one second admitted; {:?}",
        within.len(),
        load::status_counts(&after)
    );
    let limited = after.iter().find(|o| o.status() == 429).unwrap_or_else(|| {
        panic!(
            "no 429 after the plan change: {:?}",
            load::status_counts(&after)
        )
    });
    assert_denied(limited.response(), 429, PER_SECOND_BODY);
    assert_eq!(
        limited.response().header("ratelimit-policy"),
        Some("\"per-second\";q=5;w=1")
    );
}
