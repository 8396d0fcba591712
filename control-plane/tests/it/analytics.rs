//! Usage analytics (rollups), the request log, CSV, `calls_this_month` and retention.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{now_ms, record, rfc3339, with, TestServer, ADMIN};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// A start of hour a few hours back, so every test record is in the past.
fn base() -> i64 {
    let now = now_ms();
    now - now.rem_euclid(HOUR) - 3 * HOUR
}

struct Fixture {
    srv: TestServer,
    ws: String,
    a: Value,
    b: Value,
    sent: Vec<Value>,
}

/// Two keys in one workspace, a third key elsewhere; 60 records with varied fields.
async fn fixture() -> Fixture {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let other = srv.workspace("pro").await;
    let a = srv.key(&ws, json!({"alias": "a"})).await;
    let b = srv.key(&ws, json!({"alias": "b"})).await;
    let c = srv.key(&other, json!({"alias": "c"})).await;
    let t0 = base();
    let methods = ["GET", "POST", "GET", "DELETE"];
    let codes = [
        (200, "completed"),
        (201, "completed"),
        (429, "rate_limited"),
        (500, "failed"),
        (404, "failed"),
    ];
    let mut sent = Vec::new();
    for i in 0..60i64 {
        let key = if i % 3 == 0 { &b } else { &a };
        let (code, status) = codes[(i % 5) as usize];
        sent.push(with(
            record(key, &format!("r-{i:02}"), t0 + i * 90_000 + 17),
            json!({
                "method": methods[(i % 4) as usize],
                "endpoint": format!("/v1/e{}", i % 12),
                "resource_id": if i % 2 == 0 { json!(format!("res-{}", i % 6)) } else { Value::Null },
                "response_code": code,
                "status": status,
                // Denied at the edge now and then: counted, but spends no credits.
                "credits": i % 4 + 1,
                "admitted": i % 10 != 2,
            }),
        ));
    }
    let answer = srv.ingest(&sent).await;
    assert_eq!(answer["accepted"], 60, "{answer}");
    // Noise in another workspace that must never show up.
    srv.ingest(&[record(&c, "other-1", t0 + 1000)]).await;
    Fixture {
        srv,
        ws,
        a,
        b,
        sent,
    }
}

/// Credits spent by `records`: of the admitted ones only.
fn spent<'a>(records: impl Iterator<Item = &'a Value>) -> u64 {
    records
        .filter(|r| r["admitted"] == true)
        .map(|r| r["credits"].as_u64().unwrap())
        .sum()
}

fn count_by(records: &[&Value], field: &str) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r[field].to_string().trim_matches('"').to_owned())
            .or_default() += 1;
    }
    m
}

fn breakdown(usage: &Value, list: &str, field: &str) -> BTreeMap<String, u64> {
    usage[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[field].to_string().trim_matches('"').to_owned(),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn check_usage(usage: &Value, sent: &[&Value], interval: &str) {
    assert_eq!(usage["interval"], interval, "{usage}");
    let status = count_by(sent, "status");
    assert_eq!(
        usage["totals"],
        json!({
            "total": sent.len(),
            "completed": status.get("completed").copied().unwrap_or(0),
            "failed": status.get("failed").copied().unwrap_or(0),
            "rate_limited": status.get("rate_limited").copied().unwrap_or(0),
            "credits": spent(sent.iter().copied()),
        })
    );
    assert_eq!(
        breakdown(usage, "by_method", "method"),
        count_by(sent, "method")
    );
    assert_eq!(
        breakdown(usage, "by_response_code", "response_code"),
        count_by(sent, "response_code")
    );
    let mut endpoints: BTreeMap<String, u64> = BTreeMap::new();
    for r in sent {
        *endpoints
            .entry(format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["endpoint"].as_str().unwrap()
            ))
            .or_default() += 1;
    }
    let top: Vec<(String, u64)> = usage["top_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                format!(
                    "{} {}",
                    e["method"].as_str().unwrap(),
                    e["endpoint"].as_str().unwrap()
                ),
                e["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(top.len(), endpoints.len().min(10), "{usage}");
    assert!(top.windows(2).all(|w| w[0].1 >= w[1].1), "sorted: {top:?}");
    for (name, count) in &top {
        assert_eq!(endpoints.get(name), Some(count), "{name}");
    }
    // Each endpoint shown carries the credits its admitted records spent.
    for e in usage["top_endpoints"].as_array().unwrap() {
        let of_it = sent
            .iter()
            .copied()
            .filter(|r| r["method"] == e["method"] && r["endpoint"] == e["endpoint"]);
        assert_eq!(e["credits"], spent(of_it), "{e}");
    }
    // Whatever is left out counts no more than the last entry shown.
    let shown: HashSet<&String> = top.iter().map(|(n, _)| n).collect();
    let min_shown = top.last().map_or(0, |t| t.1);
    assert!(endpoints
        .iter()
        .filter(|(n, _)| !shown.contains(n))
        .all(|(_, c)| *c <= min_shown));
    // Buckets: each record in the bucket holding its timestamp.
    let series = usage["series"].as_array().unwrap();
    assert!(series.len() <= 200);
    let starts: Vec<i64> = series
        .iter()
        .map(|b| {
            tollgate_control_plane::clock::parse_rfc3339(b["start"].as_str().unwrap()).unwrap()
        })
        .collect();
    let step = match usage["interval"].as_str().unwrap() {
        "1m" => MINUTE,
        "5m" => 5 * MINUTE,
        "1h" => HOUR,
        _ => DAY,
    };
    assert!(
        starts.iter().all(|s| s % step == 0),
        "buckets start on the interval"
    );
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] == step),
        "zero-filled, evenly spaced"
    );
    let mut want = vec![[0u64; 3]; series.len()];
    for r in sent {
        let i = ((r["timestamp"].as_i64().unwrap() - starts[0]) / step) as usize;
        let s = ["completed", "failed", "rate_limited"]
            .iter()
            .position(|s| r["status"] == *s)
            .unwrap();
        want[i][s] += 1;
    }
    for (bucket, w) in series.iter().zip(want) {
        assert_eq!(
            [
                bucket["completed"].as_u64().unwrap(),
                bucket["failed"].as_u64().unwrap(),
                bucket["rate_limited"].as_u64().unwrap()
            ],
            w,
            "{bucket}"
        );
    }
}

#[tokio::test]
async fn usage_analytics_equal_what_was_ingested() {
    let f = fixture().await;
    let of = |key: &Value| -> Vec<&Value> {
        f.sent.iter().filter(|r| r["key_id"] == key["id"]).collect()
    };
    let all: Vec<&Value> = f.sent.iter().collect();
    let a_id = f.a["id"].as_str().unwrap();
    let b_id = f.b["id"].as_str().unwrap();

    // Default range (last 24 h): hourly buckets.
    let usage = f.srv.get(&format!("/v1/keys/{a_id}/usage"), 200).await;
    check_usage(&usage, &of(&f.a), "1h");
    let usage = f.srv.get(&format!("/v1/keys/{b_id}/usage"), 200).await;
    check_usage(&usage, &of(&f.b), "1h");
    let usage = f
        .srv
        .get(&format!("/v1/workspaces/{}/usage", f.ws), 200)
        .await;
    check_usage(&usage, &all, "1h");

    // A 3-hour range from minutes: 1m buckets, 180 of them.
    let (from, to) = (rfc3339(base()), rfc3339(base() + 3 * HOUR));
    let usage = f
        .srv
        .get(
            &format!("/v1/workspaces/{}/usage?from={from}&to={to}", f.ws),
            200,
        )
        .await;
    assert_eq!(usage["series"].as_array().unwrap().len(), 180);
    assert_eq!(
        (usage["from"].as_str(), usage["to"].as_str()),
        (Some(from.as_str()), Some(to.as_str()))
    );
    check_usage(&usage, &all, "1m");
    let usage = f
        .srv
        .get(
            &format!(
                "/v1/workspaces/{}/usage?from={from}&to={to}&interval=5m",
                f.ws
            ),
            200,
        )
        .await;
    check_usage(&usage, &all, "5m");
    let usage = f
        .srv
        .get(
            &format!("/v1/keys/{a_id}/usage?from={from}&to={to}&interval=1d"),
            200,
        )
        .await;
    check_usage(&usage, &of(&f.a), "1d");

    // Half the range: only what falls inside it.
    let mid = base() + 45 * MINUTE;
    let inside: Vec<&Value> = all
        .iter()
        .copied()
        .filter(|r| r["timestamp"].as_i64().unwrap() < mid)
        .collect();
    let usage = f
        .srv
        .get(
            &format!(
                "/v1/workspaces/{}/usage?from={from}&to={}",
                f.ws,
                rfc3339(mid)
            ),
            200,
        )
        .await;
    check_usage(&usage, &inside, "1m");

    // A range with nothing in it is all zeros.
    let usage = f
        .srv
        .get(
            &format!(
                "/v1/workspaces/{}/usage?from={}&to={}",
                f.ws,
                rfc3339(base() - 2 * DAY),
                rfc3339(base() - DAY)
            ),
            200,
        )
        .await;
    assert_eq!(usage["totals"]["total"], 0);
    assert_eq!(usage["series"].as_array().unwrap().len(), 24);

    for (query, param) in [
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("interval=2m", "interval"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        (
            "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z&interval=1m",
            "interval",
        ),
    ] {
        let answer = f
            .srv
            .get(&format!("/v1/workspaces/{}/usage?{query}", f.ws), 400)
            .await;
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{param}:")),
            "{query}: {answer}"
        );
    }
    f.srv.get("/v1/keys/key_nope/usage", 404).await;
    f.srv.get("/v1/workspaces/ws_nope/usage", 404).await;
}

#[tokio::test]
async fn every_request_filter_narrows_and_pages_return_each_record_once() {
    let f = fixture().await;
    let all_ids = |records: &[Value]| -> Vec<String> {
        records
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let from = format!("from={}", rfc3339(base() - HOUR));
    let everything = f
        .srv
        .all_requests(&format!("workspace_id={}&{from}", f.ws), ADMIN)
        .await;
    let mut want: Vec<&Value> = f.sent.iter().collect();
    want.sort_by_key(|r| std::cmp::Reverse(r["timestamp"].as_i64().unwrap()));
    assert_eq!(
        all_ids(&everything),
        want.iter()
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    );

    // Small pages: every record exactly once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/requests?workspace_id={}&{from}&limit=7", f.ws);
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = f.srv.get(&path, 200).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 7);
        seen.extend(all_ids(data));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, all_ids(&everything));

    let a_id = f.a["id"].as_str().unwrap().to_owned();
    let mid = base() + 45 * MINUTE;
    type Keep = Box<dyn Fn(&Value) -> bool>;
    let filters: Vec<(String, Keep)> = vec![
        (
            format!("key_id={a_id}"),
            Box::new(move |r: &Value| r["key_id"] == a_id.as_str()),
        ),
        (
            "resource_id=res-2".into(),
            Box::new(|r: &Value| r["resource_id"] == "res-2"),
        ),
        (
            "status=failed".into(),
            Box::new(|r: &Value| r["status"] == "failed"),
        ),
        (
            "status=rate_limited".into(),
            Box::new(|r: &Value| r["status"] == "rate_limited"),
        ),
        (
            "method=DELETE".into(),
            Box::new(|r: &Value| r["method"] == "DELETE"),
        ),
        (
            "method=post".into(),
            Box::new(|r: &Value| r["method"] == "POST"),
        ),
        (
            "endpoint=/v1/e3".into(),
            Box::new(|r: &Value| r["endpoint"] == "/v1/e3"),
        ),
        (
            "response_code=429".into(),
            Box::new(|r: &Value| r["response_code"] == 429),
        ),
        (
            format!("from={}", rfc3339(mid)),
            Box::new(move |r: &Value| r["timestamp"].as_i64().unwrap() >= mid),
        ),
        (
            format!("to={}", rfc3339(mid)),
            Box::new(move |r: &Value| r["timestamp"].as_i64().unwrap() < mid),
        ),
        (
            "method=GET&status=completed&endpoint=/v1/e0".into(),
            Box::new(|r: &Value| {
                r["method"] == "GET" && r["status"] == "completed" && r["endpoint"] == "/v1/e0"
            }),
        ),
    ];
    for (query, keep) in filters {
        let q = if query.starts_with("from=") {
            query.clone()
        } else {
            format!("{from}&{query}")
        };
        let got = f
            .srv
            .all_requests(&format!("workspace_id={}&{q}", f.ws), ADMIN)
            .await;
        let want: Vec<String> = want
            .iter()
            .filter(|r| keep(r))
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            !want.is_empty() && want.len() < f.sent.len(),
            "{query} must narrow"
        );
        assert_eq!(all_ids(&got), want, "{query}");
    }
    // Without a workspace the admin sees the other workspace's record too.
    assert_eq!(f.srv.all_requests(&from, ADMIN).await.len(), 61);

    for (query, param) in [
        ("status=ok", "status"),
        ("method=G%20T", "method"),
        ("response_code=abc", "response_code"),
        ("response_code=1000", "response_code"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=zzz", "cursor"),
        ("from=now", "from"),
        ("to=1700000000", "to"),
    ] {
        let answer = f.srv.get(&format!("/v1/requests?{query}"), 400).await;
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{param}:")),
            "{query}: {answer}"
        );
    }
}

#[tokio::test]
async fn csv_export_has_the_header_and_the_rows() {
    let f = fixture().await;
    let a_id = f.a["id"].as_str().unwrap();
    let path = format!(
        "/v1/requests.csv?key_id={a_id}&status=failed&from={}",
        rfc3339(base() - HOUR)
    );
    let resp = f
        .srv
        .answer(f.srv.request(Method::GET, &path).bearer_auth(ADMIN))
        .await;
    assert_eq!(resp.status, 200);
    assert!(resp.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = resp.text();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("request_id,timestamp,key_id,workspace_id,method,endpoint,resource_id,response_code,status,duration_ms,client_ip,credits")
    );
    let rows: Vec<&str> = lines.collect();
    let want: Vec<&Value> = f
        .sent
        .iter()
        .filter(|r| r["key_id"] == a_id && r["status"] == "failed")
        .collect();
    assert_eq!(rows.len(), want.len());
    for r in want {
        let id = r["request_id"].as_str().unwrap();
        let row = rows
            .iter()
            .find(|l| l.starts_with(&format!("{id},")))
            .unwrap();
        let cols: Vec<&str> = row.split(',').collect();
        assert_eq!(cols.len(), 12, "{row}");
        assert_eq!(
            cols[1],
            tollgate_control_plane::clock::format_rfc3339_millis(r["timestamp"].as_i64().unwrap())
        );
        assert_eq!(
            (cols[2], cols[4], cols[5]),
            (
                a_id,
                r["method"].as_str().unwrap(),
                r["endpoint"].as_str().unwrap()
            )
        );
        assert_eq!(cols[7], r["response_code"].to_string());
        assert_eq!(cols[8], "failed");
    }
}

#[tokio::test]
async fn calls_this_month_restarts_on_the_first() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "a"})).await;
    let id = key["id"].as_str().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let month_start = now
        .replace_day(1)
        .unwrap()
        .replace_time(time::Time::MIDNIGHT);
    let first_ms = (month_start.unix_timestamp_nanos() / 1_000_000) as i64;
    assert_eq!(
        srv.get(&format!("/v1/keys/{id}"), 200).await["calls_this_month"],
        0
    );
    srv.ingest(&[
        record(&key, "last-month-1", first_ms - 1),
        record(&key, "last-month-2", first_ms - 20 * DAY),
        record(&key, "this-month-1", first_ms),
        with(
            record(&key, "this-month-2", first_ms + 1),
            json!({"admitted": false, "status": "rate_limited", "response_code": 429}),
        ),
        with(
            record(&key, "this-month-3", now_ms() - 1000),
            json!({"admitted": false, "status": "failed", "response_code": 401}),
        ),
    ])
    .await;
    assert_eq!(
        srv.get(&format!("/v1/keys/{id}"), 200).await["calls_this_month"],
        3
    );
    let listed = srv.get(&format!("/v1/workspaces/{ws}/keys"), 200).await;
    assert_eq!(listed["data"][0]["calls_this_month"], 3);
}

#[tokio::test]
async fn retention_deletes_old_raw_records_and_keeps_rollups() {
    let srv = TestServer::start_with(|c| {
        c.retention.raw_days = 30;
        c.retention.every = Duration::from_millis(100);
    })
    .await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "a"})).await;
    let id = key["id"].as_str().unwrap();
    let now = now_ms();
    let old: Vec<Value> = (0..20)
        .map(|i| record(&key, &format!("old-{i}"), now - 40 * DAY + i * 1000))
        .collect();
    srv.ingest(&old).await;
    srv.ingest(&[
        record(&key, "new-1", now - DAY),
        record(&key, "new-2", now - 1000),
    ])
    .await;
    let ids = srv.request_ids_once(2).await;
    assert_eq!(ids, ["new-2", "new-1"]);
    // Rollups still count the deleted records.
    let usage = srv
        .get(
            &format!(
                "/v1/keys/{id}/usage?from={}&to={}",
                rfc3339(now - 45 * DAY),
                rfc3339(now)
            ),
            200,
        )
        .await;
    assert_eq!(usage["totals"]["total"], 22, "{usage}");
}
