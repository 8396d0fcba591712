//! Per-key rate limits, credit budgets and owners (`external_id`, `meta`): the key API and the
//! filter's lookup answer (`credits`, charged by leases), docs/protocol.md. Analytics credits
//! and the `external_id` filters of reports and the request log: `credits_analytics.rs`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{lookup, month_bounds, now_ms, record, with, TestServer, FILTER};

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const DAY: i64 = 24 * 60 * MINUTE;

#[tokio::test]
async fn keys_carry_limits_budget_and_owner_through_create_patch_and_clear() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(
            &ws,
            json!({"alias": "owned", "rate_limits": {"per_second": 10, "per_hour": 5000},
                   "credits": {"limit": 100000, "period": "month"},
                   "external_id": " cus_4f2a ", "meta": {"tier": "gold", "region": "eu"}}),
        )
        .await;
    assert_eq!(
        key["rate_limits"],
        json!({"per_second": 10, "per_minute": null, "per_hour": 5000})
    );
    assert_eq!(key["credits"], json!({"limit": 100000, "period": "month"}));
    assert_eq!(key["credits_used"], 0);
    assert_eq!(key["credits_remaining"], 100000);
    assert_eq!(key["external_id"], "cus_4f2a");
    assert_eq!(key["meta"], json!({"tier": "gold", "region": "eu"}));
    let id = key["id"].as_str().unwrap();

    // Every answer that shows a key shows them: get, list, rotate.
    let got = srv.get(&format!("/v1/keys/{id}"), 200).await;
    for field in ["rate_limits", "credits", "external_id", "meta"] {
        assert_eq!(got[field], key[field], "{field}");
    }
    let list = srv.get(&format!("/v1/workspaces/{ws}/keys"), 200).await;
    assert_eq!(list["data"][0]["external_id"], "cus_4f2a");
    let rotated = srv
        .post(&format!("/v1/keys/{id}/rotate"), json!({}), 200)
        .await;
    assert_eq!(rotated["credits"], key["credits"]);
    assert_eq!(rotated["meta"], key["meta"]);

    // Rate limits merge per window; null clears one window.
    let k = srv
        .patch(
            &format!("/v1/keys/{id}"),
            json!({"rate_limits": {"per_minute": 300, "per_second": null}}),
            200,
        )
        .await;
    assert_eq!(
        k["rate_limits"],
        json!({"per_second": null, "per_minute": 300, "per_hour": 5000})
    );
    // Other fields are left alone by a patch that does not name them.
    assert_eq!(k["credits"], key["credits"]);
    assert_eq!(k["meta"], key["meta"]);

    // The budget is replaced whole; meta is replaced whole.
    let k = srv
        .patch(
            &format!("/v1/keys/{id}"),
            json!({"credits": {"limit": 50, "period": "day"}, "meta": {"plan": "trial"},
                   "external_id": "cus_other"}),
            200,
        )
        .await;
    assert_eq!(k["credits"], json!({"limit": 50, "period": "day"}));
    assert_eq!(k["credits_remaining"], 50);
    assert_eq!(k["meta"], json!({"plan": "trial"}));
    assert_eq!(k["external_id"], "cus_other");

    // null clears: every window, the budget, the external id; {} and null clear meta.
    let k = srv
        .patch(
            &format!("/v1/keys/{id}"),
            json!({"rate_limits": null, "credits": null, "external_id": null, "meta": {}}),
            200,
        )
        .await;
    assert_eq!(
        k["rate_limits"],
        json!({"per_second": null, "per_minute": null, "per_hour": null})
    );
    assert_eq!(k["credits"], Value::Null);
    assert_eq!(k["credits_remaining"], Value::Null);
    assert_eq!(k["external_id"], Value::Null);
    assert_eq!(k["meta"], json!({}));
    srv.patch(&format!("/v1/keys/{id}"), json!({"meta": {"a": "b"}}), 200)
        .await;
    let k = srv
        .patch(&format!("/v1/keys/{id}"), json!({"meta": null}), 200)
        .await;
    assert_eq!(k["meta"], json!({}));

    // What the lookup answers follows at once.
    let l = lookup(&srv, &rotated, "").await;
    assert_eq!(l["credits"], Value::Null);
    assert_eq!(l["external_id"], Value::Null);
    assert_eq!(l["meta"], json!({}));
}

#[tokio::test]
async fn bad_limits_budgets_and_owners_are_refused_naming_their_field() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "target"})).await;
    let id = key["id"].as_str().unwrap();
    let too_large = 1_000_000_000_001_u64;
    let seventeen: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases = [
        (
            json!({"rate_limits": {"per_second": 0}}),
            "rate_limits.per_second: must be a positive integer",
        ),
        (
            json!({"rate_limits": {"per_minute": -1}}),
            "rate_limits.per_minute: must be a positive integer",
        ),
        (
            json!({"rate_limits": {"per_hour": too_large}}),
            "rate_limits.per_hour: must be at most 1000000000000",
        ),
        (
            json!({"rate_limits": {"per_hour": "10"}}),
            "rate_limits.per_hour: must be a positive integer",
        ),
        (
            json!({"credits": {"limit": 0, "period": "day"}}),
            "credits.limit: must be a positive integer",
        ),
        (
            json!({"credits": {"limit": -4, "period": "day"}}),
            "credits.limit: must be a positive integer",
        ),
        (
            json!({"credits": {"limit": too_large, "period": "day"}}),
            "credits.limit: must be at most 1000000000000",
        ),
        (
            json!({"credits": {"limit": 5, "period": "week"}}),
            "credits.period: must be one of day, month, total",
        ),
        (
            json!({"credits": {"limit": 5}}),
            "credits.period: is required",
        ),
        (
            json!({"credits": {"period": "day"}}),
            "credits.limit: is required",
        ),
        (
            json!({"external_id": "has space"}),
            "external_id: must be 1-128 printable ASCII characters without spaces",
        ),
        (
            json!({"external_id": "x".repeat(129)}),
            "external_id: must be 1-128 printable ASCII characters without spaces",
        ),
        (
            json!({"meta": {"Bad Name": "x"}}),
            "meta.Bad Name: name must be 1-32 characters [a-z0-9_-]",
        ),
        (json!({"meta": {"tier": 3}}), "meta.tier: must be a string"),
        (
            json!({"meta": Value::Object(seventeen)}),
            "meta: must have at most 16 entries",
        ),
        (
            json!({"meta": {"a": "x".repeat(1024)}}),
            "meta: must be at most 1024 bytes in all (names and values)",
        ),
        (
            json!({"meta": ["a"]}),
            "meta: must be an object of name: string pairs",
        ),
    ];
    for (body, expected) in &cases {
        let mut create = body.clone();
        create["alias"] = json!("new");
        let e = srv
            .post(&format!("/v1/workspaces/{ws}/keys"), create, 400)
            .await;
        assert_eq!(e["error"], *expected, "POST {body}");
        let e = srv
            .patch(&format!("/v1/keys/{id}"), body.clone(), 400)
            .await;
        assert_eq!(e["error"], *expected, "PATCH {body}");
    }
    // Unknown members name themselves too.
    let e = srv
        .patch(
            &format!("/v1/keys/{id}"),
            json!({"rate_limits": {"per_day": 5}}),
            400,
        )
        .await;
    assert!(
        e["error"].as_str().unwrap().starts_with("rate_limits"),
        "{e}"
    );
    // Nothing was created or changed.
    assert_eq!(srv.key_count(&ws).await, 1);
    let unchanged = srv.get(&format!("/v1/keys/{id}"), 200).await;
    assert_eq!(unchanged["credits"], Value::Null);
    assert_eq!(unchanged["meta"], json!({}));
}

#[tokio::test]
async fn keys_are_listed_by_external_id_within_their_workspace() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let other = srv.workspace("pro").await;
    let a = srv
        .key(&ws, json!({"alias": "a", "external_id": "cus_1"}))
        .await;
    let b = srv
        .key(&ws, json!({"alias": "b", "external_id": "cus_1"}))
        .await;
    srv.key(&ws, json!({"alias": "c", "external_id": "cus_2"}))
        .await;
    srv.key(&ws, json!({"alias": "d"})).await;
    srv.key(&other, json!({"alias": "e", "external_id": "cus_1"}))
        .await;
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let found = srv
        .get(&format!("/v1/workspaces/{ws}/keys?external_id=cus_1"), 200)
        .await;
    assert_eq!(
        ids(&found),
        [a["id"].as_str().unwrap(), b["id"].as_str().unwrap()]
    );
    let none = srv
        .get(&format!("/v1/workspaces/{ws}/keys?external_id=cus_9"), 200)
        .await;
    assert!(ids(&none).is_empty());
    // An empty value is no filter; a value no key could have is a 400 naming it.
    let all = srv
        .get(&format!("/v1/workspaces/{ws}/keys?external_id="), 200)
        .await;
    assert_eq!(ids(&all).len(), 4);
    let e = srv
        .get(&format!("/v1/workspaces/{ws}/keys?external_id=a%20b"), 400)
        .await;
    assert!(
        e["error"].as_str().unwrap().starts_with("external_id:"),
        "{e}"
    );
    srv.get("/v1/workspaces/ws_missing/keys?external_id=cus_1", 404)
        .await;
}

/// Records of `key`: `(request id, timestamp, credits, admitted, instance)`; the request ids
/// are made the key's own (ingest is idempotent on request id and timestamp).
fn records(key: &Value, rows: &[(&str, i64, u32, bool, &str)]) -> Vec<Value> {
    rows.iter()
        .map(|(id, t, credits, admitted, instance)| {
            let status = if *admitted {
                "completed"
            } else {
                "rate_limited"
            };
            let id = format!("{}-{id}", key["id"].as_str().unwrap());
            with(
                record(key, &id, *t),
                json!({"credits": credits, "admitted": admitted, "instance": instance,
                       "status": status, "response_code": if *admitted { 200 } else { 429 }}),
            )
        })
        .collect()
}

/// `POST /v1/filter/leases` of `body` (filter token), expected 200.
async fn lease(srv: &TestServer, body: Value) -> Value {
    let (status, answer) = srv
        .send(
            Method::POST,
            "/v1/filter/leases",
            Some(FILTER),
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(status, 200, "{body}: {answer}");
    answer
}

/// Charges `spent` credits to `key`'s budget now: a credits lease of `spent` units granted to
/// `instance` and settled in full.
async fn charge_credits(srv: &TestServer, key: &Value, instance: &str, lease_id: &str, spent: u64) {
    let lease_id = format!("{instance}.{lease_id}");
    let a = lease(
        srv,
        json!({"instance": instance, "grant": [{"lease": lease_id, "key_id": key["id"],
               "meter": "credits", "want": spent, "min": spent}]}),
    )
    .await;
    assert_eq!(a["grants"][0]["units"], spent, "{a}");
    let a = lease(
        srv,
        json!({"instance": instance, "settle": [{"lease": lease_id, "spent": spent}]}),
    )
    .await;
    assert_eq!(a["settled"], 1, "{a}");
}

#[tokio::test]
async fn key_objects_show_credits_charged_in_the_budget_period() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let now = now_ms();
    let (month, _) = month_bounds(now);
    let day_key = srv
        .key(
            &ws,
            json!({"alias": "day", "credits": {"limit": 10, "period": "day"}}),
        )
        .await;
    let none_key = srv.key(&ws, json!({"alias": "none"})).await;
    let today = now - now % DAY;
    let rows = [
        ("today-1", now - SECOND, 3, true, "i_a"),
        ("today-2", today.max(now - 2 * MINUTE), 1, true, "i_b"),
        ("denied", now - SECOND, 100, false, "i_a"),
        ("yesterday", today - SECOND, 50, true, "i_a"),
        ("last-month", month - SECOND, 70, true, "i_a"),
    ];
    srv.ingest(&records(&day_key, &rows)).await;
    srv.ingest(&records(&none_key, &rows)).await;

    // The budget counts what leases charged, not the records.
    let path = format!("/v1/keys/{}", day_key["id"].as_str().unwrap());
    let k = srv.get(&path, 200).await;
    assert_eq!(
        (k["credits_used"].clone(), k["credits_remaining"].clone()),
        (json!(0), json!(10))
    );
    charge_credits(&srv, &day_key, "i_a", "c1", 3).await;
    charge_credits(&srv, &day_key, "i_b", "c1", 1).await;
    let k = srv.get(&path, 200).await;
    assert_eq!(k["credits_used"], 4, "{k}");
    assert_eq!(k["credits_remaining"], 6);
    // Without a budget: the credits of the calendar month's admitted records (analytics), and
    // no remaining.
    let k = srv
        .get(
            &format!("/v1/keys/{}", none_key["id"].as_str().unwrap()),
            200,
        )
        .await;
    let this_month: u64 = rows
        .iter()
        .filter(|r| r.3 && r.1 >= month)
        .map(|r| u64::from(r.2))
        .sum();
    assert_eq!(k["credits_used"], this_month, "{k}");
    assert_eq!(k["credits_remaining"], Value::Null);

    // A budget lowered below what is charged: remaining stays at 0.
    let k = srv
        .patch(
            &path,
            json!({"credits": {"limit": 3, "period": "day"}}),
            200,
        )
        .await;
    assert_eq!(k["credits_used"], 4);
    assert_eq!(k["credits_remaining"], 0);
    // The list shows the same.
    let list = srv.get(&format!("/v1/workspaces/{ws}/keys"), 200).await;
    assert_eq!(list["data"][0]["credits_used"], 4);
    // A patch that changes the period answers with the new period's charges.
    let k = srv
        .patch(
            &path,
            json!({"credits": {"limit": 1000, "period": "total"}}),
            200,
        )
        .await;
    assert_eq!(k["credits_used"], 4);
    charge_credits(&srv, &day_key, "i_a", "c2", 20).await;
    let k = srv.get(&path, 200).await;
    assert_eq!(k["credits_used"], 24);
    assert_eq!(k["credits_remaining"], 1000 - 24);
}

#[tokio::test]
async fn lookup_answers_the_budget_its_period_and_the_credits_charged() {
    // A configured TTL longer than any period, so the period's end is what bounds it.
    let configured_ttl = 40 * DAY;
    let srv = TestServer::start_with_ttl(Some(configured_ttl as u64)).await;
    let ws = srv.workspace("enterprise").await;
    let now = now_ms();
    let today = now - now % DAY;
    let (month, next_month) = month_bounds(now);
    for (period, start, resets) in [
        ("day", today, Some(today + DAY)),
        ("month", month, Some(next_month)),
        ("total", 0, None),
    ] {
        let key = srv
            .key(
                &ws,
                json!({"alias": period, "credits": {"limit": 1000, "period": period},
                       "rate_limits": {"per_second": 10, "per_hour": 5000},
                       "external_id": "cus_4f2a", "meta": {"tier": "gold"}}),
            )
            .await;
        // Records are analytics: they charge nothing.
        srv.ingest(&records(&key, &[("a-now", now - SECOND, 3, true, "i_a")]))
            .await;
        charge_credits(&srv, &key, "i_a", "c1", 7).await;
        charge_credits(&srv, &key, "i_b", "c1", 11).await;
        let l = lookup(&srv, &key, "").await;
        assert_eq!(
            l["credits"],
            json!({"limit": 1000, "period": period, "used": 18,
                   "period_start_ms": start, "resets_at_ms": resets}),
            "{period}: {l}"
        );
        assert!(l.get("recent").is_none(), "{l}");
        assert_eq!(
            l["rate_limits"],
            json!({"per_second": 10, "per_minute": null, "per_hour": 5000})
        );
        assert_eq!(l["external_id"], "cus_4f2a");
        assert_eq!(l["meta"], json!({"tier": "gold"}));
        // A cached answer never outlives the period: the TTL ends at its reset at the latest.
        let ttl = l["cache_ttl_ms"].as_i64().unwrap();
        let answered = l["now_ms"].as_i64().unwrap();
        assert_eq!(
            ttl,
            resets.map_or(configured_ttl, |r| r - answered),
            "{period}: {l}"
        );
    }
    // A key without a budget: no `credits`.
    let plain = srv.key(&ws, json!({"alias": "plain"})).await;
    let l = lookup(&srv, &plain, "").await;
    assert_eq!(l["credits"], Value::Null);
    assert_eq!(l["external_id"], Value::Null);
    assert_eq!(l["meta"], json!({}));
}
