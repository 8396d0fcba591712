//! Credits spent in usage reports (totals and per endpoint) and the `external_id` filters of
//! reports and the request log (docs/analytics-api.md).

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{now_ms, record, with, TestServer};

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;

#[tokio::test]
async fn usage_reports_count_credits_spent_in_totals_and_per_endpoint() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("enterprise").await;
    let a = srv
        .key(&ws, json!({"alias": "a", "external_id": "cus_1"}))
        .await;
    let b = srv
        .key(&ws, json!({"alias": "b", "external_id": "cus_2"}))
        .await;
    let now = now_ms();
    let rec = |key: &Value, id: &str, endpoint: &str, credits: u32, admitted: bool| {
        with(
            record(key, id, now - 5 * MINUTE),
            json!({"endpoint": endpoint, "credits": credits, "admitted": admitted,
                   "status": if admitted { "completed" } else { "rate_limited" },
                   "response_code": if admitted { 200 } else { 429 }}),
        )
    };
    srv.ingest(&[
        rec(&a, "a1", "/v1/search", 5, true),
        rec(&a, "a2", "/v1/search", 5, true),
        rec(&a, "a3", "/v1/search", 5, false),
        rec(&a, "a4", "/v1/items/{id}", 1, true),
        rec(&b, "b1", "/v1/search", 5, true),
    ])
    .await;
    let credits_of = |report: &Value, endpoint: &str| {
        report["top_endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint"] == endpoint)
            .map(|e| e["credits"].clone())
    };
    let key_report = srv
        .get(
            &format!("/v1/keys/{}/usage", a["id"].as_str().unwrap()),
            200,
        )
        .await;
    assert_eq!(key_report["totals"]["total"], 4);
    assert_eq!(key_report["totals"]["credits"], 11, "{key_report}");
    assert_eq!(credits_of(&key_report, "/v1/search"), Some(json!(10)));
    assert_eq!(credits_of(&key_report, "/v1/items/{id}"), Some(json!(1)));

    // Every hour-and-day report of the workspace agrees (1d reads the day rollups).
    for interval in ["1m", "1h", "1d"] {
        let r = srv
            .get(
                &format!("/v1/workspaces/{ws}/usage?interval={interval}"),
                200,
            )
            .await;
        assert_eq!(r["totals"]["credits"], 16, "{interval}: {r}");
        assert_eq!(credits_of(&r, "/v1/search"), Some(json!(15)), "{interval}");
    }
    // external_id narrows the workspace report to that customer's keys.
    let r = srv
        .get(&format!("/v1/workspaces/{ws}/usage?external_id=cus_2"), 200)
        .await;
    assert_eq!(r["totals"]["total"], 1, "{r}");
    assert_eq!(r["totals"]["credits"], 5);
    let r = srv
        .get(
            &format!("/v1/workspaces/{ws}/usage?external_id=cus_none"),
            200,
        )
        .await;
    assert_eq!(r["totals"]["total"], 0);
    assert!(!r["series"].as_array().unwrap().is_empty());
    // On a key's report it filters too: another customer's id leaves nothing.
    let r = srv
        .get(
            &format!(
                "/v1/keys/{}/usage?external_id=cus_2",
                a["id"].as_str().unwrap()
            ),
            200,
        )
        .await;
    assert_eq!(r["totals"]["total"], 0);
}

#[tokio::test]
async fn the_request_log_filters_by_external_id_within_the_callers_workspace() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("enterprise").await;
    let other = srv.workspace("enterprise").await;
    let a = srv
        .key(&ws, json!({"alias": "a", "external_id": "cus_1"}))
        .await;
    let b = srv
        .key(&ws, json!({"alias": "b", "external_id": "cus_1"}))
        .await;
    let c = srv
        .key(&ws, json!({"alias": "c", "external_id": "cus_2"}))
        .await;
    let d = srv
        .key(&other, json!({"alias": "d", "external_id": "cus_1"}))
        .await;
    let now = now_ms();
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.push(record(
            &a,
            &format!("req-a-{i}"),
            now - (10 - 2 * i) * SECOND,
        ));
        batch.push(record(
            &b,
            &format!("req-b-{i}"),
            now - (9 - 2 * i) * SECOND,
        ));
        batch.push(record(
            &c,
            &format!("req-c-{i}"),
            now - (9 - 2 * i) * SECOND,
        ));
        batch.push(record(
            &d,
            &format!("req-d-{i}"),
            now - (9 - 2 * i) * SECOND,
        ));
    }
    srv.ingest(&batch).await;
    let admin = srv.admin_token.clone();
    let ids = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Both keys of cus_1 in this workspace, newest first, whole across pages of 3.
    let mut rows = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = srv
            .get(
                &format!("/v1/requests?workspace_id={ws}&external_id=cus_1&limit=3{cursor}"),
                200,
            )
            .await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 3);
        rows.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        ids(&rows),
        [
            "req-b-4", "req-a-4", "req-b-3", "req-a-3", "req-b-2", "req-a-2", "req-b-1", "req-a-1",
            "req-b-0", "req-a-0"
        ]
    );
    // The admin without a workspace sees every workspace's keys of that id.
    let all = srv.all_requests("external_id=cus_1", &admin).await;
    assert_eq!(all.len(), 15);
    // With key_id too: that key only, when it carries the id; else nothing.
    let one = srv
        .all_requests(
            &format!("external_id=cus_1&key_id={}", a["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert_eq!(one.len(), 5);
    let none = srv
        .all_requests(
            &format!("external_id=cus_1&key_id={}", c["id"].as_str().unwrap()),
            &admin,
        )
        .await;
    assert!(none.is_empty());
    // A console token of the other workspace sees its own key of cus_1 only.
    let token = srv
        .post(
            &format!("/v1/workspaces/{other}/console-tokens"),
            json!({"name": "t"}),
            201,
        )
        .await;
    let console = srv
        .all_requests("external_id=cus_1", token["token"].as_str().unwrap())
        .await;
    assert_eq!(
        ids(&console),
        ["req-d-4", "req-d-3", "req-d-2", "req-d-1", "req-d-0"]
    );
    // The CSV export takes the filter too.
    let (status, _) = srv
        .send(
            Method::GET,
            "/v1/requests?external_id=bad%20id",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 400);
    let resp = reqwest::Client::new()
        .get(srv.url(&format!(
            "/v1/requests.csv?workspace_id={ws}&external_id=cus_2"
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let csv = resp.text().await.unwrap();
    assert_eq!(csv.lines().count(), 1 + 5, "{csv}");
    assert!(csv.contains("req-c-4") && !csv.contains("req-a-"), "{csv}");
}
