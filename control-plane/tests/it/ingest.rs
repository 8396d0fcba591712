//! `POST /v1/filter/usage`: validation, idempotency, and what a batch stores.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{now_ms, record, with, TestServer, ADMIN, FILTER};

async fn stored_ids(srv: &TestServer) -> Vec<String> {
    let mut ids: Vec<String> = srv
        .all_requests("from=2000-01-01T00:00:00Z", ADMIN)
        .await
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn mixed_batch_stores_exactly_the_good_records_once() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let other_ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "a"})).await;
    let other_key = srv.key(&other_ws, json!({"alias": "b"})).await;
    let t = now_ms() - 60_000;

    let first = srv.ingest(&[record(&key, "r-0", t)]).await;
    assert_eq!(
        first,
        json!({"accepted": 1, "duplicates": 0, "rejected": []})
    );

    let batch = vec![
        record(&key, "r-1", t),                                          // 0 good
        with(record(&key, "r-2", t), json!({"timestamp": 0})),           // 1 bad
        record(&key, "r-0", t), // 2 duplicate (earlier batch)
        with(record(&key, "r-3", t), json!({"method": "get"})), // 3 bad
        record(&key, "r-1", t), // 4 duplicate (same batch)
        with(record(&key, "r-4", t), json!({"key_id": "key_nope"})), // 5 unknown key
        with(record(&key, "r-5", t), json!({"workspace_id": other_ws})), // 6 wrong workspace
        with(
            record(&key, "r-6", t),
            json!({"resource_id": null, "response_code": 503,
                                             "status": "failed", "admitted": false}),
        ), // 7 good
        with(record(&key, "r-7", t), json!({"status": "done"})), // 8 bad
        json!("not a record"),  // 9 bad
        with(record(&other_key, "r-8", t), json!({"endpoint": "x"})), // 10 bad
        record(&other_key, "r-9", t), // 11 good
    ];
    let answer = srv.ingest(&batch).await;
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(answer["duplicates"], 2, "{answer}");
    let rejected: Vec<(u64, Value, String)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["request_id"].clone(),
                r["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        (1, json!("r-2"), "timestamp: must be a positive integer"),
        (3, json!("r-3"), "method:"),
        (5, json!("r-4"), "key_id: unknown API key"),
        (6, json!("r-5"), "workspace_id:"),
        (8, json!("r-7"), "status:"),
        (9, Value::Null, ""),
        (10, json!("r-8"), "endpoint: must start with /"),
    ];
    assert_eq!(rejected.len(), expected.len(), "{answer}");
    for ((index, id, error), (want_index, want_id, want_error)) in rejected.iter().zip(expected) {
        assert_eq!((*index, id), (want_index, &want_id), "{answer}");
        assert!(
            error.starts_with(want_error),
            "{error} should name {want_error}"
        );
    }
    assert_eq!(stored_ids(&srv).await, ["r-0", "r-1", "r-6", "r-9"]);

    // Sending the whole batch again stores nothing new.
    let again = srv.ingest(&batch).await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(5))
    );
    assert_eq!(stored_ids(&srv).await, ["r-0", "r-1", "r-6", "r-9"]);

    // The stored record reads back as sent.
    let r6 = srv
        .get(
            &format!(
                "/v1/requests?key_id={}&status=failed",
                key["id"].as_str().unwrap()
            ),
            200,
        )
        .await;
    let r6 = &r6["data"][0];
    assert_eq!(r6["request_id"], "r-6");
    assert_eq!(r6["resource_id"], Value::Null);
    assert_eq!(r6["response_code"], 503);
    assert_eq!(r6["duration_ms"], 1.5);
    assert_eq!(r6["client_ip"], "127.0.0.1");
    assert_eq!(r6["credits"], 1);
    assert!(r6["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn malformed_bodies_are_400_with_a_reason_and_store_nothing() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "a"})).await;
    let good = record(&key, "r-1", now_ms());
    let too_many: Vec<Value> = (0..10_001)
        .map(|i| record(&key, &format!("x-{i}"), now_ms()))
        .collect();
    for body in [
        String::new(),
        "[]".to_owned(),
        "{}".to_owned(),
        "{\"records\": {}}".to_owned(),
        format!("{{\"records\": [{good}]"),
        format!("{{\"rows\": [{good}]}}"),
        json!({ "records": too_many }).to_string(),
    ] {
        let (status, answer) = srv
            .send(Method::POST, "/v1/filter/usage", Some(FILTER), Some(&body))
            .await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"].as_str().unwrap().len() > 10, "{answer}");
    }
    assert!(stored_ids(&srv).await.is_empty());

    let huge = format!(
        "{{\"records\": [{}]}}",
        vec![format!("\"{}\"", "x".repeat(1 << 20)); 17].join(",")
    );
    let (status, _) = srv
        .send(Method::POST, "/v1/filter/usage", Some(FILTER), Some(&huge))
        .await;
    assert_eq!(status, 413);

    // The filter token is required.
    let body = json!({ "records": [good] }).to_string();
    for token in [None, Some(ADMIN)] {
        let (status, _) = srv
            .send(Method::POST, "/v1/filter/usage", token, Some(&body))
            .await;
        assert_eq!(status, 401);
    }
    assert!(stored_ids(&srv).await.is_empty());
}

#[tokio::test]
async fn ingest_sets_last_used_and_blocks_deletion() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "a"})).await;
    let id = key["id"].as_str().unwrap();
    let t = 1_795_465_967_000;
    srv.ingest(&[record(&key, "r-1", t), record(&key, "r-2", t - 5000)])
        .await;
    let shown = srv.get(&format!("/v1/keys/{id}"), 200).await;
    assert_eq!(shown["last_used_at"], "2026-11-23T20:32:47Z");
    // An older record does not move it back.
    srv.ingest(&[record(&key, "r-3", t - 60_000)]).await;
    let shown = srv.get(&format!("/v1/keys/{id}"), 200).await;
    assert_eq!(shown["last_used_at"], "2026-11-23T20:32:47Z");
    srv.delete(&format!("/v1/keys/{id}"), 409).await;
}

#[tokio::test]
async fn concurrent_batches_share_commits_and_stay_exact() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(&ws, json!({"alias": "a", "quotas": {"total": 1_000_000}}))
        .await;
    let t = now_ms() - 1000;
    // 8 senders, 200 records each, every record also sent (same request id and timestamp:
    // a re-delivery) by the next sender.
    let batches: Vec<Vec<Value>> = (0..8)
        .map(|s| {
            (0..200)
                .map(|i| {
                    let n = (s * 100 + i) % 800;
                    record(&key, &format!("c-{n}"), t - 800 + n)
                })
                .collect()
        })
        .collect();
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let client = srv.client();
            let request = srv
                .request(Method::POST, "/v1/filter/usage")
                .bearer_auth(FILTER)
                .json(&json!({ "records": batch }));
            tokio::spawn(async move {
                let answer = crate::common::answer(&client, request).await;
                assert_eq!(answer.status, 200);
                answer.json()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let accepted: u64 = answers
        .iter()
        .map(|a| a["accepted"].as_u64().unwrap())
        .sum();
    let duplicates: u64 = answers
        .iter()
        .map(|a| a["duplicates"].as_u64().unwrap())
        .sum();
    assert_eq!((accepted, duplicates), (800, 800));
    assert_eq!(stored_ids(&srv).await.len(), 800);
    let id = key["id"].as_str().unwrap();
    assert_eq!(
        srv.get(&format!("/v1/keys/{id}"), 200).await["calls_this_month"],
        800
    );
    // Records are analytics: the quota is charged by leases only.
    let (_, lookup) = srv.lookup(&crate::common::secret_hash(&key)).await;
    assert_eq!(lookup["usage"]["total"], 0);
}
