//! The first leases granted with the key lookup (docs/protocol.md, "The first leases, granted
//! with the lookup"): `GET /v1/filter/keys/{hash}?lease={base}&want={units}`.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{lookup, secret_hash, TestServer, FILTER};

/// The lookup of `key` with `query`: the status and the answer.
async fn lookup_with(srv: &TestServer, key: &Value, query: &str) -> (StatusCode, Value) {
    let path = format!("/v1/filter/keys/{}{query}", secret_hash(key));
    srv.send(Method::GET, &path, Some(FILTER), None).await
}

async fn leased(srv: &TestServer, key: &Value) -> Value {
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    srv.get(&path, 200).await["leased"].clone()
}

#[tokio::test]
async fn a_lookup_with_lease_grants_one_lease_per_meter_and_reserves_it() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("enterprise").await;
    let key = srv
        .key(
            &ws,
            json!({"alias": "both", "quotas": {"daily": 1000},
                   "credits": {"limit": 500, "period": "month"}}),
        )
        .await;
    let l = lookup(&srv, &key, "?lease=i_a.00000000000000ab&want=40").await;
    let leases = l["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 2, "{l}");
    let calls = &leases[0];
    assert_eq!(calls["lease"], "i_a.00000000000000abc");
    assert_eq!(calls["key_id"], key["id"]);
    assert_eq!(calls["meter"], "calls");
    assert_eq!(calls["units"], 40);
    assert_eq!(calls["ttl_ms"], 30_000);
    assert_eq!(calls["exhausted"], Value::Null);
    assert_eq!(calls["retry_ms"], Value::Null);
    let credits = &leases[1];
    assert_eq!(credits["lease"], "i_a.00000000000000abk");
    assert_eq!(credits["meter"], "credits");
    assert_eq!(credits["units"], 40);
    assert_eq!(
        leased(&srv, &key).await,
        json!({"calls": 40, "credits": 40, "envoys": 1})
    );

    // Settled like any lease: what was spent is charged, the rest is free again.
    let settle = json!({"instance": "i_a", "settle": [
        {"lease": "i_a.00000000000000abc", "spent": 3},
        {"lease": "i_a.00000000000000abk", "spent": 7}]});
    let (status, a) = srv
        .send(
            Method::POST,
            "/v1/filter/leases",
            Some(FILTER),
            Some(&settle.to_string()),
        )
        .await;
    assert_eq!(
        (status, a["settled"].clone()),
        (StatusCode::OK, json!(2)),
        "{a}"
    );
    let l = lookup(&srv, &key, "").await;
    assert_eq!(l["usage"]["daily"], 3, "{l}");
    assert_eq!(l["credits"]["used"], 7, "{l}");
    assert!(l.get("leases").is_none(), "no lease asked: {l}");
}

#[tokio::test]
async fn want_defaults_to_ten_and_the_grant_is_sized_like_any_other() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("enterprise").await;
    let key = srv
        .key(&ws, json!({"alias": "q", "quotas": {"total": 8}}))
        .await;
    let l = lookup(&srv, &key, "?lease=i_a.1").await;
    // Half of an even share of 8, as `POST /v1/filter/leases` would grant.
    assert_eq!(l["leases"][0]["units"], 4, "{l}");
    let wide = srv
        .key(&ws, json!({"alias": "w", "quotas": {"total": 1000}}))
        .await;
    let l = lookup(&srv, &wide, "?lease=i_a.2").await;
    assert_eq!(l["leases"][0]["units"], 10, "{l}");
}

#[tokio::test]
async fn a_retried_lookup_answers_the_same_leases_and_reserves_nothing_more() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("enterprise").await;
    let key = srv
        .key(&ws, json!({"alias": "q", "quotas": {"daily": 1000}}))
        .await;
    let q = "?lease=i_a.0000000000000001&want=25";
    let first = lookup(&srv, &key, q).await["leases"].clone();
    let again = lookup(&srv, &key, q).await["leases"].clone();
    assert_eq!(first[0]["units"], 25);
    assert_eq!(again[0]["lease"], first[0]["lease"]);
    assert_eq!(again[0]["units"], 25);
    assert!(again[0]["ttl_ms"].as_u64().unwrap() <= 30_000);
    assert_eq!(
        leased(&srv, &key).await,
        json!({"calls": 25, "credits": 0, "envoys": 1})
    );
}

#[tokio::test]
async fn a_full_budget_answers_units_zero_with_what_is_exhausted() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("enterprise").await;
    let key = srv
        .key(&ws, json!({"alias": "q", "quotas": {"daily": 1}}))
        .await;
    let l = lookup(&srv, &key, "?lease=i_a.1").await;
    assert_eq!(l["leases"][0]["units"], 1, "{l}");
    let l = lookup(&srv, &key, "?lease=i_b.1").await;
    let g = &l["leases"][0];
    assert_eq!(
        (
            g["units"].clone(),
            g["exhausted"].clone(),
            g["retry_ms"].clone()
        ),
        (json!(0), json!("daily"), json!(1000)),
        "{l}"
    );
}

#[tokio::test]
async fn no_lease_for_a_key_without_budgets_an_inactive_or_expired_key() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("enterprise").await;
    let free = srv.key(&ws, json!({"alias": "free"})).await;
    let l = lookup(&srv, &free, "?lease=i_a.1&want=5").await;
    assert!(l.get("leases").is_none(), "{l}");

    let off = srv
        .key(&ws, json!({"alias": "off", "quotas": {"daily": 100}}))
        .await;
    let path = format!("/v1/keys/{}", off["id"].as_str().unwrap());
    srv.patch(&path, json!({"active": false}), 200).await;
    let l = lookup(&srv, &off, "?lease=i_a.2").await;
    assert_eq!(l["active"], false);
    assert!(l.get("leases").is_none(), "{l}");

    let old = srv
        .key(
            &ws,
            json!({"alias": "old", "quotas": {"daily": 100},
                   "credits": {"limit": 5, "period": "total"}}),
        )
        .await;
    // Expired by a patch: a key cannot be created expired.
    srv.patch(
        &format!("/v1/keys/{}", old["id"].as_str().unwrap()),
        json!({"expires_at": "2020-06-01T12:00:00Z"}),
        200,
    )
    .await;
    let l = lookup(&srv, &old, "?lease=i_a.3").await;
    assert!(l.get("leases").is_none(), "{l}");
    for key in [&off, &old] {
        assert_eq!(
            leased(&srv, key).await,
            json!({"calls": 0, "credits": 0, "envoys": 0})
        );
    }

    let unknown = format!("/v1/filter/keys/{}?lease=i_a.4", "ab".repeat(32));
    let (status, body) = srv.send(Method::GET, &unknown, Some(FILTER), None).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn a_bad_lease_or_want_is_a_400_naming_the_parameter() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("enterprise").await;
    let key = srv
        .key(&ws, json!({"alias": "q", "quotas": {"daily": 100}}))
        .await;
    let cases = [
        ("?lease=nodot", "lease"),
        ("?lease=i_a.", "lease"),
        ("?lease=i_a.a-b", "lease"),
        ("?lease=a%20b.1", "lease"),
        (&format!("?lease=i_a.{}", "a".repeat(32)), "lease"),
        ("?lease=i_a.1&want=0", "want"),
        ("?lease=i_a.1&want=1000000001", "want"),
        ("?lease=i_a.1&want=ten", "want"),
        ("?want=5", "want"),
    ];
    for (query, field) in cases {
        let (status, body) = lookup_with(&srv, &key, query).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}: ")),
            "{query}: {body}"
        );
    }
    // The longest base leaves room for the meter's letter.
    let (status, body) = lookup_with(&srv, &key, &format!("?lease=i_a.{}", "a".repeat(31))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        leased(&srv, &key).await,
        json!({"calls": 10, "credits": 0, "envoys": 1})
    );
}

#[tokio::test]
async fn with_the_lookup_cache_on_a_lookup_with_a_new_base_still_grants() {
    let srv = TestServer::start_with(|config| config.lookup_cache_entries = 1_000).await;
    let ws = srv.workspace("enterprise").await;
    let key = srv
        .key(&ws, json!({"alias": "q", "quotas": {"daily": 1000}}))
        .await;
    // Warm the cache: the key part may come from it from now on.
    lookup(&srv, &key, "").await;
    lookup(&srv, &key, "").await;
    let a = lookup(&srv, &key, "?lease=i_a.1").await;
    let b = lookup(&srv, &key, "?lease=i_a.2").await;
    assert_eq!(a["leases"][0]["lease"], "i_a.1c");
    assert_eq!(b["leases"][0]["lease"], "i_a.2c");
    assert_eq!(b["leases"][0]["units"], 10, "{b}");
    assert_eq!(
        leased(&srv, &key).await,
        json!({"calls": 20, "credits": 0, "envoys": 1})
    );
}
