//! The lookup's `usage` windows and `recent` (docs/protocol.md, exact quotas).

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{lookup, now_ms, record, secret_hash, with, TestServer, FILTER};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

#[tokio::test]
async fn usage_windows_roll_and_count_admitted_records_only() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(
            &ws,
            json!({"alias": "q", "quotas": {"daily": 1000, "weekly": 10000, "monthly": 100000,
                                            "total": 1000000}}),
        )
        .await;
    assert_eq!(
        lookup(&srv, &key, "").await["usage"],
        json!({"total": 0, "daily": 0, "weekly": 0, "monthly": 0})
    );
    let now = now_ms();
    let mut records = Vec::new();
    let mut add = |prefix: &str, n: usize, t: i64, admitted: bool| {
        for i in 0..n {
            records.push(with(
                record(&key, &format!("{prefix}-{i}"), t + i as i64),
                json!({"admitted": admitted}),
            ));
        }
    };
    add("now", 3, now - 5 * MINUTE, true);
    add("denied", 4, now - 5 * MINUTE, false);
    add("day-edge-in", 2, now - DAY + 5 * MINUTE, true);
    add("day-edge-out", 5, now - DAY - 5 * MINUTE, true);
    add("week", 7, now - 6 * DAY, true);
    add("week-out", 11, now - 8 * DAY, true);
    add("month", 13, now - 29 * DAY - 20 * HOUR, true);
    add("month-out", 17, now - 31 * DAY, true);
    add("old-denied", 19, now - 40 * DAY, false);
    srv.ingest(&records).await;

    let usage = &lookup(&srv, &key, "").await["usage"];
    assert_eq!(usage["daily"], 3 + 2, "{usage}");
    assert_eq!(usage["weekly"], 3 + 2 + 5 + 7, "{usage}");
    assert_eq!(usage["monthly"], 3 + 2 + 5 + 7 + 11 + 13, "{usage}");
    assert_eq!(usage["total"], 3 + 2 + 5 + 7 + 11 + 13 + 17, "{usage}");

    // The answer follows the next ingest at once (no stale cache).
    srv.ingest(&[record(&key, "later", now - MINUTE)]).await;
    assert_eq!(lookup(&srv, &key, "").await["usage"]["daily"], 6);

    // Only the windows the key has a quota for are counted (the filter ignores the others).
    let daily = srv
        .key(&ws, json!({"alias": "daily", "quotas": {"daily": 10}}))
        .await;
    srv.ingest(&[record(&daily, "daily-1", now - MINUTE)]).await;
    assert_eq!(
        lookup(&srv, &daily, "").await["usage"],
        json!({"total": 0, "daily": 1, "weekly": 0, "monthly": 0})
    );

    // A key without quotas is not counted at all.
    let free = srv.key(&ws, json!({"alias": "free"})).await;
    srv.ingest(&[record(&free, "free-1", now - MINUTE)]).await;
    assert_eq!(lookup(&srv, &free, "").await["usage"]["total"], 0);
}

#[tokio::test]
async fn recent_counts_this_instance_since_s_only() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(&ws, json!({"alias": "q", "quotas": {"total": 100000}}))
        .await;
    let other = srv
        .key(&ws, json!({"alias": "o", "quotas": {"total": 100000}}))
        .await;
    let now = now_ms();
    let since = now - 120_000 - (now - 120_000).rem_euclid(10_000);
    let at = |key: &Value, id: &str, t: i64, instance: &str, admitted: bool| {
        with(
            record(key, id, t),
            json!({"instance": instance, "admitted": admitted}),
        )
    };
    srv.ingest(&[
        at(&key, "a-1", since, "i_a", true),          // counts (t == S)
        at(&key, "a-2", since + 15_003, "i_a", true), // counts
        at(&key, "a-3", now - 10, "i_a", true),       // counts
        at(&key, "a-4", since - 1, "i_a", true),      // before S
        at(&key, "a-5", now - 10, "i_a", false),      // not admitted
        at(&key, "b-1", now - 10, "i_b", true),       // other instance
        at(&other, "o-1", now - 10, "i_a", true),     // other key
    ])
    .await;
    let body = lookup(&srv, &key, &format!("?instance=i_a&since_ms={since}")).await;
    // No budget: no credits counted.
    assert_eq!(
        body["recent"],
        json!({"since_ms": since, "count": 3, "credits": 0})
    );
    assert_eq!(body["usage"]["total"], 5);
    let body = lookup(&srv, &key, &format!("?instance=i_b&since_ms={since}")).await;
    assert_eq!(body["recent"]["count"], 1);
    // Counted from 10-second buckets kept for a day: any other since_ms is refused.
    for bad in [
        since + 1,
        since + 15_004,
        now - 3 * DAY - (now - 3 * DAY).rem_euclid(10_000),
    ] {
        let (status, body) = srv
            .send(
                Method::GET,
                &format!(
                    "/v1/filter/keys/{}?instance=i_a&since_ms={bad}",
                    secret_hash(&key)
                ),
                Some(FILTER),
                None,
            )
            .await;
        assert_eq!(status, 400, "since_ms={bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("since_ms:"),
            "{body}"
        );
    }
    let body = lookup(
        &srv,
        &key,
        &format!("?instance=i_a&since_ms={}", since + 10_000),
    )
    .await;
    assert_eq!(body["recent"]["count"], 2);
    // Without both parameters there is no `recent`.
    assert!(lookup(&srv, &key, "").await.get("recent").is_none());
    assert!(lookup(&srv, &key, "?instance=i_a")
        .await
        .get("recent")
        .is_none());
    let (status, body) = srv
        .send(
            Method::GET,
            &format!(
                "/v1/filter/keys/{}?instance=i_a&since_ms=soon",
                secret_hash(&key)
            ),
            Some(FILTER),
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().starts_with("since_ms:"));
}
