//! Usage records (issue 3): one record per request with a known key, delivered by the usage
//! service to the control plane's `POST /v1/filter/usage`, read back through the analytics API
//! (docs/analytics-api.md). The usage service is, in the wasm build, the `envoy.bootstrap.wasm`
//! singleton (root id `tollgate-usage`); in the native build, the dynamic module's own delivery
//! on Envoy's main thread.
//!
//! Request ids: the record's `request_id` is Envoy's `x-request-id`. Each test request carries
//! `?n=<index>` (the query is never part of a record), and the access log file
//! (`%REQ(X-REQUEST-ID)%` next to the path) maps every request, passed or denied, to its id.
//!
//! The tests of what the control plane stores run on both of its databases: `*_on_sqlite`, and
//! `*_on_postgres` against a PostgreSQL database of their own (`TOLLGATE_TEST_DATABASE_URL`;
//! skipped without it, `make test-postgres` runs them). The filter state in the access log is
//! the filter's alone and runs once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_integration_tests::keys::{bad_checksum_key, unknown_key};
use tollgate_integration_tests::load::{self, Outcome};
use tollgate_integration_tests::time::{now_ms, parse_rfc3339_ms, rfc3339};
use tollgate_integration_tests::{
    eventually, Backend, CreatedKey, FilterBuild, Plan, Stack, StackBuilder,
};

/// Keyed requests of the scenario.
const N: usize = 300;
/// Requests without a valid key (missing, malformed, bad checksum, unknown).
const KEYLESS: usize = 32;
/// Key D's `quotas.total`.
const D_TOTAL: usize = 10;
const QUOTA_BODY: &str = "Rate limit exceeded: quota total";
const SETTLE: Duration = Duration::from_secs(30);

fn routes() -> Value {
    json!([
        {"method": "GET", "path": "/v1/candidates/{id}", "credits": 2},
        {"method": "POST", "path": "/v1/candidates", "credits": 5},
        {"method": "*", "path": "/v1/jobs/{job}/applications/{app}", "credits": 3}
    ])
}

/// The endpoint, resource id and credits a record must carry for `method path`, from the
/// templates above (first match wins; unmatched = the path itself with 1 credit).
fn classify(method: &str, path: &str) -> (String, Option<String>, u64) {
    let s: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, s.as_slice()) {
        ("GET", ["v1", "candidates", id]) => {
            ("/v1/candidates/{id}".into(), Some(id.to_string()), 2)
        }
        ("POST", ["v1", "candidates"]) => ("/v1/candidates".into(), None, 5),
        (_, ["v1", "jobs", _, "applications", app]) => (
            "/v1/jobs/{job}/applications/{app}".into(),
            Some(app.to_string()),
            3,
        ),
        _ => (path.to_string(), None, 1),
    }
}

fn usage_stack(backend: Backend) -> StackBuilder {
    Stack::builder()
        .backend(backend)
        .set("/usage/routes", routes())
        .set("/usage/flush_interval", "500ms")
        .access_log_file()
        .direct_response("/v1/gone", 404)
        .direct_response("/v1/broken", 500)
}

/// One keyed request of the scenario as sent and as answered.
#[derive(Debug, Clone)]
struct Sent {
    /// Shown in failure messages.
    #[allow(dead_code)]
    index: usize,
    key: usize,
    method: &'static str,
    path: String,
    /// Second phase (sent after the phase boundary).
    phase: usize,
    status: u16,
    error: Option<String>,
    sent_ms: u64,
    answered_ms: u64,
    request_id: String,
}

struct Scenario {
    keys: Vec<CreatedKey>,
    sent: Vec<Sent>,
    /// Request ids of the requests without a valid key.
    keyless_ids: Vec<String>,
    /// Whole second (epoch) between the two phases: phase 0 answered before it, phase 1 sent
    /// after it.
    boundary_s: u64,
}

impl Scenario {
    fn of_key(&self, key: usize) -> impl Iterator<Item = &Sent> {
        self.sent.iter().filter(move |s| s.key == key)
    }
}

/// Request `i`'s method and path (before the `?n=` tag). Keys cycle A, B, C, D.
fn spec(i: usize) -> (&'static str, String) {
    match (i / 4) % 7 {
        0 => ("GET", format!("/v1/candidates/c-{}", i % 5)),
        1 => ("POST", "/v1/candidates".to_string()),
        2 => (
            "PUT",
            format!("/v1/jobs/j-{}/applications/a-{}", i % 3, (i / 28) % 3),
        ),
        3 => ("DELETE", format!("/v1/candidates/c-{}", i % 2)),
        4 => ("GET", "/v1/gone/x".to_string()),
        5 => ("GET", "/v1/broken".to_string()),
        _ => ("PATCH", "/v1/candidates/c-0".to_string()),
    }
}

/// What the filter and Envoy must answer for request `(key, method, path)`, except key D's
/// quota (checked by count).
fn expected_status(key: usize, method: &str, path: &str) -> u16 {
    if key == 2 && !(method == "GET" && path.starts_with("/v1/candidates/")) {
        return 403; // key C may only GET /v1/candidates/*
    }
    if path.starts_with("/v1/gone") {
        404
    } else if path.starts_with("/v1/broken") {
        500
    } else {
        200
    }
}

/// Creates the keys, sends `N` keyed requests (8 connections, two phases around a whole second)
/// and `KEYLESS` requests without a valid key, and maps each to its request id.
fn run_scenario(stack: &Stack) -> Scenario {
    let admin = stack.admin();
    // Enterprise: no plan rate limits, so only the filter's other decisions matter here.
    let ws1 = admin.create_workspace("records-1", Plan::Enterprise);
    let ws2 = admin.create_workspace("records-2", Plan::Enterprise);
    let keys = vec![
        admin.create_key(&ws1, &json!({"alias": "a"})),
        admin.create_key(&ws1, &json!({"alias": "b"})),
        admin.create_key(
            &ws1,
            &json!({"alias": "c", "allowed": [{"method": "GET", "path": "/v1/candidates/*"}]}),
        ),
        admin.create_key(&ws2, &json!({"alias": "d", "quotas": {"total": D_TOTAL}})),
    ];
    let url = |path: &str, i: usize| stack.envoy().url(&format!("{path}?n={i}"));
    let send = |client: &tollgate_integration_tests::http::Client, i: usize| {
        let (method, path) = spec(i);
        client.try_request(
            method,
            &url(&path, i),
            &[("x-api-key", &keys[i % 4].secret)],
        )
    };
    let half = N / 2;
    let first = load::burst(8, half, send);
    let boundary_s = load::sleep_until_next_second(Duration::from_millis(300));
    let second = load::burst(8, N - half, |client, i| send(client, half + i));

    let keyless_key = |i: usize| -> Option<String> {
        match i % 4 {
            0 => None,
            1 => Some("tg_short".to_string()),
            2 => Some(bad_checksum_key()),
            _ => Some(unknown_key()),
        }
    };
    let mut keyless_status = Vec::new();
    for i in 0..KEYLESS {
        let n = 10_000 + i;
        let response = match keyless_key(i) {
            None => stack.get(&format!("/v1/candidates/c-1?n={n}"), &[]),
            Some(key) => stack.get_with_key(&format!("/v1/candidates/c-1?n={n}"), &key),
        };
        keyless_status.push(response.status);
    }
    assert!(
        keyless_status.iter().all(|s| *s == 401),
        "requests without a valid key must be 401: {keyless_status:?}"
    );

    // Map ?n= to Envoy's request id through the access log (flushed every 200 ms).
    let ids = eventually(Duration::from_secs(10), Duration::from_millis(200), || {
        let mut ids: HashMap<usize, String> = HashMap::new();
        for entry in stack.envoy().access_log() {
            let path = entry["path"].as_str().unwrap_or_default();
            let Some((_, n)) = path.split_once("?n=") else {
                continue;
            };
            if let (Ok(n), Some(id)) = (n.parse(), entry["request_id"].as_str()) {
                ids.insert(n, id.to_string());
            }
        }
        (ids.len() == N + KEYLESS).then_some(ids)
    })
    .expect("every request of the scenario in the access log within 10 s");

    let mut sent = Vec::new();
    for (phase, outcomes) in [(0, first), (1, second)] {
        for o in outcomes {
            let index = if phase == 0 { o.index } else { half + o.index };
            let (method, path) = spec(index);
            let response = o.response();
            sent.push(Sent {
                index,
                key: index % 4,
                method,
                path,
                phase,
                status: response.status,
                error: response.error(),
                sent_ms: o.sent_us / 1000,
                answered_ms: o.answered_us.div_ceil(1000),
                request_id: ids[&index].clone(),
            });
        }
    }
    let keyless_ids = (0..KEYLESS).map(|i| ids[&(10_000 + i)].clone()).collect();

    // The answers themselves: every keyed request got what its key and path call for.
    let d_admitted = sent
        .iter()
        .filter(|s| s.key == 3 && s.error.as_deref() != Some(QUOTA_BODY))
        .count();
    assert_eq!(
        d_admitted, D_TOTAL,
        "key D (quota total {D_TOTAL}) must be admitted exactly {D_TOTAL} times"
    );
    for s in &sent {
        if s.key == 3 && s.error.as_deref() == Some(QUOTA_BODY) {
            assert_eq!(s.status, 401, "quota denial status: {s:?}");
            continue;
        }
        assert_eq!(
            s.status,
            expected_status(s.key, s.method, &s.path),
            "request {s:?}"
        );
    }
    Scenario {
        keys,
        sent,
        keyless_ids,
        boundary_s,
    }
}

/// The record's expected `status` for what the client saw.
fn record_status(s: &Sent) -> &'static str {
    if s.error.as_deref() == Some(QUOTA_BODY) || s.status == 429 {
        "rate_limited"
    } else if s.status < 400 {
        "completed"
    } else {
        "failed"
    }
}

fn str_field<'a>(record: &'a Value, field: &str) -> &'a str {
    record[field]
        .as_str()
        .unwrap_or_else(|| panic!("record without string {field}: {record}"))
}

fn every_request_with_a_known_key_is_recorded_once_with_its_fields(backend: Backend) {
    let stack = usage_stack(backend).start();
    // Wasm only: the usage service is a separate VM (the envoy.bootstrap.wasm singleton) that
    // says when it starts. The native module has no separate service to start; in both builds
    // the records and `usage.delivered` below show that delivery works.
    if stack.envoy().filter == FilterBuild::Wasm {
        assert!(
            stack
                .envoy()
                .log()
                .contains("tollgate: usage service started"),
            "the usage service (envoy.bootstrap.wasm, root id tollgate-usage) did not start"
        );
    }
    let scenario = run_scenario(&stack);
    let admin = stack.admin();

    let records = admin.settled_requests(&[], N, SETTLE);
    let by_id: HashMap<&str, &Value> = records
        .iter()
        .map(|r| (str_field(r, "request_id"), r))
        .collect();
    assert_eq!(
        by_id.len(),
        records.len(),
        "a request id is stored more than once"
    );
    let keyless: Vec<&String> = scenario
        .keyless_ids
        .iter()
        .filter(|id| by_id.contains_key(id.as_str()))
        .collect();
    assert!(
        keyless.is_empty(),
        "requests without a valid key must not be recorded: {keyless:?}"
    );
    let missing: Vec<&Sent> = scenario
        .sent
        .iter()
        .filter(|s| !by_id.contains_key(s.request_id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {N} requests have no record, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(records.len(), N, "exactly one record per keyed request");

    for s in &scenario.sent {
        let r = by_id[s.request_id.as_str()];
        let key = &scenario.keys[s.key];
        let (endpoint, resource_id, credits) = classify(s.method, &s.path);
        let context = format!("request {s:?}\nrecord {r}");
        assert_eq!(str_field(r, "key_id"), key.id, "{context}");
        assert_eq!(str_field(r, "workspace_id"), key.workspace_id, "{context}");
        assert_eq!(str_field(r, "method"), s.method, "{context}");
        assert_eq!(str_field(r, "endpoint"), endpoint, "{context}");
        assert_eq!(
            r["resource_id"].as_str(),
            resource_id.as_deref(),
            "{context}"
        );
        assert_eq!(
            r["response_code"].as_u64(),
            Some(u64::from(s.status)),
            "{context}"
        );
        assert_eq!(str_field(r, "status"), record_status(s), "{context}");
        assert_eq!(r["credits"].as_u64(), Some(credits), "{context}");
        assert_eq!(str_field(r, "client_ip"), "127.0.0.1", "{context}");
        let duration = r["duration_ms"].as_f64().unwrap_or(-1.0);
        let round_trip = (s.answered_ms - s.sent_ms) as f64;
        assert!(
            duration > 0.0 && duration <= round_trip + 1.0,
            "duration_ms must be > 0 and within the client's round trip ({round_trip} ms): {context}"
        );
        let at = parse_rfc3339_ms(str_field(r, "timestamp"))
            .unwrap_or_else(|| panic!("timestamp is not RFC 3339: {context}"));
        assert!(
            at + 1 >= s.sent_ms && at <= s.answered_ms + 1,
            "timestamp must be when the request arrived ({}..{}): {context}",
            s.sent_ms,
            s.answered_ms
        );
    }

    // Metrics: the keyless requests are only counted there.
    let envoy = stack.envoy();
    let denied = |code: &str| envoy.filter_stat(&format!("requests.denied.{code}"));
    assert_eq!(denied("missing_key"), (KEYLESS / 4) as u64);
    assert_eq!(denied("invalid_key"), (KEYLESS - KEYLESS / 4) as u64);
    let delivered = envoy.settled_filter_stat(
        "usage.delivered",
        Duration::from_millis(600),
        Duration::from_secs(5),
    );
    assert_eq!(delivered, N as u64, "tollgate.usage.delivered");
    assert_eq!(envoy.filter_stat("usage.rejected"), 0);
    assert_eq!(envoy.filter_stat("usage.dropped"), 0);
}

#[test]
fn every_request_with_a_known_key_is_recorded_once_with_its_fields_on_sqlite() {
    every_request_with_a_known_key_is_recorded_once_with_its_fields(Backend::Sqlite);
}

#[test]
fn every_request_with_a_known_key_is_recorded_once_with_its_fields_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        every_request_with_a_known_key_is_recorded_once_with_its_fields(backend);
    }
}

/// Counts of `items` by `key`, for comparing with the API's breakdowns.
fn count_by<T: Ord>(items: impl Iterator<Item = T>) -> BTreeMap<T, u64> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts
}

fn breakdown(usage: &Value, list: &str, field: &str) -> BTreeMap<String, u64> {
    usage[list]
        .as_array()
        .unwrap_or_else(|| panic!("usage without {list}: {usage}"))
        .iter()
        .map(|e| {
            let name = match &e[field] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (name, e["count"].as_u64().unwrap_or(0))
        })
        .collect()
}

fn check_usage(usage: &Value, sent: &[&Sent], what: &str) {
    let totals = &usage["totals"];
    let by_status = count_by(sent.iter().map(|s| record_status(s)));
    let want = json!({
        "total": sent.len(),
        "completed": by_status.get("completed").copied().unwrap_or(0),
        "failed": by_status.get("failed").copied().unwrap_or(0),
        "rate_limited": by_status.get("rate_limited").copied().unwrap_or(0),
    });
    for field in ["total", "completed", "failed", "rate_limited"] {
        assert_eq!(
            totals[field], want[field],
            "{what}: totals.{field} in {usage}"
        );
    }
    let by_method = count_by(sent.iter().map(|s| s.method.to_string()));
    assert_eq!(
        breakdown(usage, "by_method", "method"),
        by_method,
        "{what}: by_method in {usage}"
    );
    let by_code = count_by(sent.iter().map(|s| s.status.to_string()));
    assert_eq!(
        breakdown(usage, "by_response_code", "response_code"),
        by_code,
        "{what}: by_response_code in {usage}"
    );
    let by_endpoint = count_by(sent.iter().map(|s| {
        let (endpoint, _, _) = classify(s.method, &s.path);
        format!("{} {endpoint}", s.method)
    }));
    let top: Vec<(String, u64)> = usage["top_endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no top_endpoints in {usage}"))
        .iter()
        .map(|e| {
            (
                format!(
                    "{} {}",
                    e["method"].as_str().unwrap_or_default(),
                    e["endpoint"].as_str().unwrap_or_default()
                ),
                e["count"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert!(
        by_endpoint.len() <= 10,
        "the scenario has at most 10 endpoints per key"
    );
    assert_eq!(
        top.iter().cloned().collect::<BTreeMap<_, _>>(),
        by_endpoint,
        "{what}: top_endpoints in {usage}"
    );
    assert!(
        top.windows(2).all(|w| w[0].1 >= w[1].1),
        "{what}: top_endpoints must be sorted by count: {top:?}"
    );
    let series = usage["series"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no series in {usage}"));
    let in_series: u64 = series
        .iter()
        .map(|b| {
            ["completed", "failed", "rate_limited"]
                .iter()
                .map(|f| b[*f].as_u64().unwrap_or(0))
                .sum::<u64>()
        })
        .sum();
    assert_eq!(
        in_series,
        sent.len() as u64,
        "{what}: series sum in {usage}"
    );
    assert!(
        series.len() <= 200,
        "{what}: series has more than 200 points"
    );
}

fn analytics_match_what_was_sent_and_every_filter_narrows(backend: Backend) {
    let stack = usage_stack(backend).start();
    let scenario = run_scenario(&stack);
    let admin = stack.admin();
    let all = admin.settled_requests(&[], N, SETTLE);
    assert_eq!(all.len(), N, "records stored");

    // Per key and per workspace usage.
    for (k, key) in scenario.keys.iter().enumerate() {
        let sent: Vec<&Sent> = scenario.of_key(k).collect();
        let usage = admin.key_usage(&key.id, &[]);
        check_usage(&usage, &sent, &format!("GET /v1/keys/{}/usage", key.id));
    }
    let ws1 = &scenario.keys[0].workspace_id;
    let sent_ws1: Vec<&Sent> = scenario.sent.iter().filter(|s| s.key < 3).collect();
    check_usage(
        &admin.workspace_usage(ws1, &[]),
        &sent_ws1,
        "GET /v1/workspaces/{ws}/usage",
    );

    // Key listings: calls_this_month counts every record, admitted or not.
    for (k, key) in scenario.keys.iter().enumerate() {
        let listed = admin.get_key(&key.id);
        assert_eq!(
            listed["calls_this_month"].as_u64(),
            Some(scenario.of_key(k).count() as u64),
            "calls_this_month of {}: {listed}",
            key.id
        );
        assert!(
            listed["last_used_at"].is_string(),
            "last_used_at of a used key: {listed}"
        );
    }

    // Every filter of /v1/requests, alone and combined, against counts from what was sent.
    let ids = |records: &[Value]| -> HashSet<String> {
        records
            .iter()
            .map(|r| str_field(r, "request_id").to_string())
            .collect()
    };
    let expect = |what: &str, params: Vec<(&str, String)>, keep: &dyn Fn(&Sent) -> bool| {
        let want: HashSet<String> = scenario
            .sent
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.request_id.clone())
            .collect();
        assert!(
            !want.is_empty(),
            "{what}: the scenario must have such requests"
        );
        assert!(want.len() < N, "{what}: the filter must narrow");
        let got = admin.requests(&params);
        assert_eq!(got.len(), want.len(), "{what}: number of records");
        assert_eq!(ids(&got), want, "{what}: which records");
    };
    let a = &scenario.keys[0];
    let d = &scenario.keys[3];
    expect("key_id", vec![("key_id", a.id.clone())], &|s| s.key == 0);
    expect(
        "workspace_id",
        vec![("workspace_id", d.workspace_id.clone())],
        &|s| s.key == 3,
    );
    expect("resource_id", vec![("resource_id", "c-3".into())], &|s| {
        classify(s.method, &s.path).1.as_deref() == Some("c-3")
    });
    for status in ["completed", "failed", "rate_limited"] {
        expect(
            &format!("status={status}"),
            vec![("status", status.into())],
            &|s| record_status(s) == status,
        );
    }
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
        expect(
            &format!("method={method}"),
            vec![("method", method.into())],
            &|s| s.method == method,
        );
    }
    for endpoint in [
        "/v1/candidates/{id}",
        "/v1/jobs/{job}/applications/{app}",
        "/v1/broken",
    ] {
        expect(
            &format!("endpoint={endpoint}"),
            vec![("endpoint", endpoint.into())],
            &|s| classify(s.method, &s.path).0 == endpoint,
        );
    }
    for code in [200u16, 401, 403, 404, 500] {
        expect(
            &format!("response_code={code}"),
            vec![("response_code", code.to_string())],
            &|s| s.status == code,
        );
    }
    let boundary = rfc3339(scenario.boundary_s);
    let hour_ago = rfc3339(now_ms() / 1000 - 3600);
    expect(
        "from (second phase)",
        vec![("from", boundary.clone())],
        &|s| s.phase == 1,
    );
    expect(
        "to (first phase)",
        vec![("from", hour_ago), ("to", boundary)],
        &|s| s.phase == 0,
    );
    expect(
        "key_id + method + status",
        vec![
            ("key_id", a.id.clone()),
            ("method", "GET".into()),
            ("status", "completed".into()),
        ],
        &|s| s.key == 0 && s.method == "GET" && record_status(s) == "completed",
    );
    expect(
        "resource_id + response_code",
        vec![
            ("resource_id", "a-1".into()),
            ("response_code", "403".into()),
        ],
        &|s| classify(s.method, &s.path).1.as_deref() == Some("a-1") && s.status == 403,
    );

    // Pages: newest first, no record twice, all of them.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut params = vec![
            ("key_id", a.id.clone()),
            ("limit", "7".to_string()),
            ("from", rfc3339(now_ms() / 1000 - 3600)),
        ];
        if let Some(c) = &cursor {
            params.push(("cursor", c.clone()));
        }
        let page = admin.requests_page(&params);
        assert_eq!(page.status, 200, "{page:?}");
        let body = page.json();
        let data = body["data"].as_array().cloned().unwrap_or_default();
        assert!(data.len() <= 7, "limit=7 gave {} records", data.len());
        paged.extend(data);
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let a_count = scenario.of_key(0).count();
    assert_eq!(paged.len(), a_count, "paging with limit=7");
    assert_eq!(ids(&paged).len(), a_count, "a record appeared on two pages");
    let times: Vec<u64> = paged
        .iter()
        .map(|r| parse_rfc3339_ms(str_field(r, "timestamp")).unwrap_or(0))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "records must come newest first: {times:?}"
    );

    // Bad filter values are 400 naming the parameter.
    for (param, value) in [
        ("status", "sometimes"),
        ("response_code", "abc"),
        ("from", "yesterday"),
        ("limit", "0"),
        ("limit", "501"),
    ] {
        let response = admin.requests_page(&[(param, value.to_string())]);
        assert_eq!(response.status, 400, "{param}={value}: {response:?}");
        let error = response.error().unwrap_or_default();
        assert!(
            error.contains(param),
            "{param}={value}: the error must name the parameter: {response:?}"
        );
    }
}

#[test]
fn analytics_match_what_was_sent_and_every_filter_narrows_on_sqlite() {
    analytics_match_what_was_sent_and_every_filter_narrows(Backend::Sqlite);
}

#[test]
fn analytics_match_what_was_sent_and_every_filter_narrows_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        analytics_match_what_was_sent_and_every_filter_narrows(backend);
    }
}

/// The access log's `%FILTER_STATE(wasm.tollgate:PLAIN)%` (wasm) or
/// `%FILTER_STATE(tollgate:PLAIN)%` (native; the harness renders the key of the build under
/// test): the filter's summary of each request with a known key, nothing for requests without
/// one.
#[test]
fn access_log_prints_the_filter_state_summary() {
    let stack = usage_stack(Backend::Sqlite).start();
    let admin = stack.admin();
    let ws = admin.create_workspace("filter-state", Plan::Enterprise);
    let key = admin.create_key(
        &ws,
        &json!({"alias": "fs", "quotas": {"total": 2},
                "allowed": [{"method": "GET", "path": "/v1/candidates/*"}]}),
    );
    // (path, key sent, status answered, summary status and credits if the key is known)
    let k = Some(key.secret.as_str());
    let cases = [
        ("/v1/candidates/c-1?n=1", k, 200, Some(("completed", 2))),
        ("/v1/jobs/j/applications/a?n=2", k, 403, Some(("failed", 3))),
        ("/v1/candidates/c-2?n=3", k, 200, Some(("completed", 2))),
        ("/v1/candidates/c-3?n=4", k, 401, Some(("rate_limited", 2))),
        ("/v1/candidates/c-4?n=5", None, 401, None),
    ];
    for (path, secret, status, _) in &cases {
        let response = match secret {
            Some(secret) => stack.get_with_key(path, secret),
            None => stack.get(path, &[]),
        };
        assert_eq!(response.status, *status, "{path}: {response:?}");
    }
    let entries = eventually(Duration::from_secs(10), Duration::from_millis(200), || {
        let entries = stack.envoy().access_log();
        (entries.len() >= cases.len()).then_some(entries)
    })
    .expect("access log entries within 10 s");
    for (path, _, _, summary) in &cases {
        let entry = entries
            .iter()
            .find(|e| e["path"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("no access log entry for {path}: {entries:?}"));
        let state = &entry["tollgate"];
        match summary {
            None => assert!(
                state.is_null() || state.as_str() == Some("-"),
                "{path}: no filter state without a key, got {entry}"
            ),
            Some((status, credits)) => {
                let text = state
                    .as_str()
                    .unwrap_or_else(|| panic!("{path}: no filter state in {entry}"));
                let summary: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("{path}: filter state is not JSON ({e}): {text}"));
                assert_eq!(
                    summary,
                    json!({"key_id": key.id, "workspace_id": key.workspace_id,
                           "status": status, "credits": credits}),
                    "{path}: {entry}"
                );
            }
        }
    }
}

/// Control plane down for 30 s while 20 requests a second flow: cached keys keep passing,
/// records wait in the usage service and arrive after the restart, each exactly once.
/// (Named to sort first: libtest starts a binary's tests in name order, two at a time on two
/// cores, so the longest test starts at once and the others run beside it.)
fn all_records_survive_a_control_plane_outage_exactly_once(backend: Backend) {
    const RATE: f64 = 20.0;
    const BEFORE: Duration = Duration::from_secs(3);
    const OUTAGE: Duration = Duration::from_secs(30);
    const AFTER: Duration = Duration::from_secs(3);
    let mut stack = usage_stack(backend).set("/usage/max_backoff", "2s").start();
    let key = stack.admin().new_key(Plan::Enterprise);
    assert_eq!(stack.get_with_key("/v1/warm", &key.secret).status, 200);
    let total = ((BEFORE + OUTAGE + AFTER).as_secs_f64() * RATE) as usize;
    let url = stack.envoy().url("/v1/candidates/c-1");
    let start = std::time::SystemTime::now() + Duration::from_millis(100);

    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| {
            load::paced(4, total, RATE, start, |client, _| {
                client.try_request("GET", &url, &[("x-api-key", &key.secret)])
            })
        });
        std::thread::sleep(BEFORE);
        stack.kill_control_plane();
        std::thread::sleep(OUTAGE);
        stack.start_control_plane();
        traffic.join().expect("traffic thread")
    });

    let mut sent_ids = Vec::new();
    for o in &outcomes {
        let response = o.response();
        assert_eq!(
            response.status, 200,
            "a cached key must keep passing while the control plane is down: {o:?}"
        );
        let echo = response.echo();
        sent_ids.push(
            echo.header("x-request-id")
                .unwrap_or_else(|| panic!("no x-request-id reached the upstream: {echo:?}"))
                .to_string(),
        );
    }
    let sent: HashSet<&String> = sent_ids.iter().collect();
    assert_eq!(sent.len(), total, "Envoy's request ids are unique");

    let records = stack.admin().settled_requests(
        &[("key_id", key.id.clone())],
        total + 1,
        Duration::from_secs(60),
    );
    let stored: Vec<&str> = records.iter().map(|r| str_field(r, "request_id")).collect();
    let stored_set: HashSet<&str> = stored.iter().copied().collect();
    assert_eq!(
        stored_set.len(),
        stored.len(),
        "a record was stored twice ({} records, {} distinct)",
        stored.len(),
        stored_set.len()
    );
    let lost: Vec<&&String> = sent
        .iter()
        .filter(|id| !stored_set.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {total} records sent around the outage never arrived, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert_eq!(stored.len(), total + 1, "the warm-up and every request");
    let envoy = stack.envoy();
    assert!(
        envoy.filter_stat("usage.delivery_failed") > 0,
        "the outage must have been noticed by the usage service"
    );
    assert_eq!(envoy.filter_stat("usage.dropped"), 0);
}

#[test]
fn all_records_survive_a_control_plane_outage_exactly_once_on_sqlite() {
    all_records_survive_a_control_plane_outage_exactly_once(Backend::Sqlite);
}

#[test]
fn all_records_survive_a_control_plane_outage_exactly_once_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        all_records_survive_a_control_plane_outage_exactly_once(backend);
    }
}

/// A full buffer drops the oldest records and counts them; the newest `max_buffered` arrive.
fn buffer_overflow_drops_the_oldest_and_counts_them(backend: Backend) {
    const MAX_BUFFERED: usize = 50;
    const BURST: usize = 10;
    const BURSTS: usize = 12;
    let mut stack = usage_stack(backend)
        .set("/usage/max_buffered", MAX_BUFFERED as u64)
        .set("/usage/batch_size", 10)
        .set("/usage/flush_interval", "200ms")
        .set("/usage/max_backoff", "1s")
        .start();
    let key = stack.admin().new_key(Plan::Enterprise);
    let warm: Vec<String> = (0..2)
        .map(|_| {
            let response = stack.get_with_key("/v1/warm", &key.secret);
            response
                .echo()
                .header("x-request-id")
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let stored = stack
        .admin()
        .settled_requests(&[("key_id", key.id.clone())], 2, SETTLE);
    assert_eq!(stored.len(), 2, "warm-up records before the outage");

    stack.kill_control_plane();
    // Bursts with a pause longer than the workers' 250 ms tick, so each burst reaches the usage
    // service before the next one: "oldest" is then well defined.
    let mut ids = Vec::new();
    for burst in 0..BURSTS {
        for i in 0..BURST {
            let response = stack.get_with_key(&format!("/v1/b{burst}/{i}"), &key.secret);
            assert_eq!(response.status, 200, "cached key while down: {response:?}");
            ids.push(
                response
                    .echo()
                    .header("x-request-id")
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    let excess = (BURST * BURSTS - MAX_BUFFERED) as u64;
    let envoy = stack.envoy();
    let dropped = envoy.settled_filter_stat(
        "usage.dropped",
        Duration::from_millis(800),
        Duration::from_secs(5),
    );
    assert_eq!(dropped, excess, "tollgate.usage.dropped");
    assert_eq!(
        envoy.filter_stat("usage.buffered"),
        MAX_BUFFERED as u64,
        "tollgate.usage.buffered gauge"
    );

    stack.start_control_plane();
    let records =
        stack
            .admin()
            .settled_requests(&[("key_id", key.id.clone())], 2 + MAX_BUFFERED, SETTLE);
    let got: HashSet<String> = records
        .iter()
        .map(|r| str_field(r, "request_id").to_string())
        .collect();
    let want: HashSet<String> = warm
        .iter()
        .chain(ids[ids.len() - MAX_BUFFERED..].iter())
        .cloned()
        .collect();
    assert_eq!(
        records.len(),
        2 + MAX_BUFFERED,
        "records stored after the restart"
    );
    let unexpected: Vec<&String> = got.difference(&want).collect();
    let lost: Vec<&String> = want.difference(&got).collect();
    assert!(
        unexpected.is_empty() && lost.is_empty(),
        "the newest {MAX_BUFFERED} must arrive: {} older ones arrived, {} newest missing",
        unexpected.len(),
        lost.len()
    );
}

#[test]
fn buffer_overflow_drops_the_oldest_and_counts_them_on_sqlite() {
    buffer_overflow_drops_the_oldest_and_counts_them(Backend::Sqlite);
}

#[test]
fn buffer_overflow_drops_the_oldest_and_counts_them_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        buffer_overflow_drops_the_oldest_and_counts_them(backend);
    }
}
