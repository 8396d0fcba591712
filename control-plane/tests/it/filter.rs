use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::common::{now_ms, secret_hash, sha256, TestServer, FILTER};

fn rfc3339_in(seconds: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn lookup_returns_the_contract_body() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("free").await;
    let key = srv
        .key(
            &ws,
            json!({
                "alias": "k",
                "expires_at": "2999-01-01T00:00:00Z",
                "quotas": {"daily": 1000},
                "allowed": [{"method": "GET", "path": "/v1/things/*"}],
            }),
        )
        .await;
    let before = now_ms();
    let (status, body) = srv.lookup(&secret_hash(&key)).await;
    assert_eq!(status, 200, "{body}");
    let now = body["now_ms"].as_i64().unwrap();
    assert!(now >= before && now <= now_ms(), "{now}");
    assert_eq!(
        body,
        json!({
            "key_id": key["id"],
            "workspace_id": ws,
            "active": true,
            "expires_at": "2999-01-01T00:00:00Z",
            "expires_at_ms": 32_472_144_000_000i64,
            "secret_valid_until_ms": null,
            "allowed": [{"method": "GET", "path": "/v1/things/*"}],
            "quotas": {"total": null, "daily": 1000, "weekly": null, "monthly": null},
            "usage": {"total": 0, "daily": 0, "weekly": 0, "monthly": 0},
            "plan": {"name": "free", "rate_limit_per_second": 5, "rate_limit_per_minute": 100},
            "rate_limits": {"per_second": null, "per_minute": null, "per_hour": null},
            "credits": null,
            "external_id": null,
            "meta": {},
            "cache_ttl_ms": 5000,
            "now_ms": now,
        })
    );
}

#[tokio::test]
async fn lookup_shows_plan_limits_and_empty_allow_list() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("enterprise").await;
    let key = srv.key(&ws, json!({"alias": "k"})).await;
    let (_, body) = srv.lookup(&secret_hash(&key)).await;
    assert_eq!(
        body["plan"],
        json!({"name": "enterprise", "rate_limit_per_second": null, "rate_limit_per_minute": null})
    );
    assert_eq!(body["allowed"], json!([]));
    assert_eq!(body["expires_at"], Value::Null);
    assert_eq!(body["expires_at_ms"], Value::Null);
}

#[tokio::test]
async fn unknown_and_malformed_hashes() {
    let srv = TestServer::start().await;
    let (status, body) = srv.lookup(&sha256("tg_unknown")).await;
    assert_eq!(
        (status.as_u16(), body),
        (404, json!({"error": "API key not found"}))
    );
    let good = sha256("x");
    for bad in [
        good.to_uppercase(),
        good[1..].to_owned(),
        format!("{good}0"),
        format!("{}z", &good[1..]),
        "tg_AbCdEfGhIjKlMnOpQrStUvWxYz01234561huhoC".to_owned(),
    ] {
        let (status, body) = srv.lookup(&bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(
            body,
            json!({"error": "hash: must be 64 lowercase hex characters", "field": "hash"})
        );
    }
}

#[tokio::test]
async fn lookup_marks_the_key_used() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "k"})).await;
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    assert_eq!(srv.get(&path, 200).await["last_used_at"], Value::Null);
    srv.lookup(&secret_hash(&key)).await;
    let first = srv.get(&path, 200).await["last_used_at"].clone();
    assert!(first.as_str().unwrap().ends_with('Z'), "{first}");
    // Within the resolution window further lookups do not rewrite it.
    tokio::time::sleep(Duration::from_millis(20)).await;
    srv.lookup(&secret_hash(&key)).await;
    assert_eq!(srv.get(&path, 200).await["last_used_at"], first);
}

#[tokio::test]
async fn deactivation_is_visible_to_the_filter() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "k"})).await;
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
    srv.patch(&path, json!({"active": false}), 200).await;
    let (status, body) = srv.lookup(&secret_hash(&key)).await;
    assert_eq!(status, 200);
    assert_eq!(body["active"], false);
    srv.patch(&path, json!({"active": true, "quotas": {"total": 10}}), 200)
        .await;
    let (_, body) = srv.lookup(&secret_hash(&key)).await;
    assert_eq!(body["active"], true);
    assert_eq!(body["quotas"]["total"], 10);
}

#[tokio::test]
async fn expired_key_is_reported_with_its_expiry() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "k"})).await;
    let expired = srv
        .patch(
            &format!("/v1/keys/{}", key["id"].as_str().unwrap()),
            json!({"expires_at": "2020-06-01T12:00:00Z"}),
            200,
        )
        .await;
    assert_eq!(expired["status"], "expired");
    let (status, body) = srv.lookup(&secret_hash(&key)).await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_at_ms"], 1_591_012_800_000i64);
    assert_eq!(body["expires_at"], "2020-06-01T12:00:00Z");
    assert_eq!(body["active"], true);
    // An answer about a past expiry stays true: it is cached for the full TTL.
    assert_eq!(body["cache_ttl_ms"], 5000);
}

#[tokio::test]
async fn cache_ttl_never_outlives_an_upcoming_expiry() {
    let srv = TestServer::start_with_ttl(Some(60_000)).await;
    let ws = srv.workspace("pro").await;
    let far = srv.key(&ws, json!({"alias": "far"})).await;
    let (_, body) = srv.lookup(&secret_hash(&far)).await;
    assert_eq!(body["cache_ttl_ms"], 60_000, "configured TTL is used");

    let soon = srv
        .key(&ws, json!({"alias": "soon", "expires_at": rfc3339_in(3)}))
        .await;
    let (_, body) = srv.lookup(&secret_hash(&soon)).await;
    let ttl = body["cache_ttl_ms"].as_i64().unwrap();
    let remaining = body["expires_at_ms"].as_i64().unwrap() - body["now_ms"].as_i64().unwrap();
    assert_eq!(ttl, remaining);
    assert!(ttl > 0 && ttl <= 3000, "{ttl}");
}

#[tokio::test]
async fn rotation_replaces_the_secret_at_once() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "k"})).await;
    let id = key["id"].as_str().unwrap();
    let rotated = srv
        .post(&format!("/v1/keys/{id}/rotate"), json!({}), 200)
        .await;
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(rotated["secret"], key["secret"]);
    assert_eq!(rotated["id"], key["id"]);
    assert_eq!(rotated["hash"], sha256(new_secret));
    assert_eq!(rotated["prefix"], &new_secret[..8]);

    let (status, body) = srv.lookup(&sha256(new_secret)).await;
    assert_eq!(status, 200);
    assert_eq!(body["key_id"], id);
    assert_eq!(body["secret_valid_until_ms"], Value::Null);
    assert_eq!(srv.lookup(&secret_hash(&key)).await.0, 404);

    let shown = srv.get(&format!("/v1/keys/{id}"), 200).await;
    assert_eq!(shown["hash"], sha256(new_secret));
    assert!(shown.get("secret").is_none());
}

#[tokio::test]
async fn rotation_with_grace_keeps_the_old_secret_for_a_while() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "k"})).await;
    let id = key["id"].as_str().unwrap();
    let before = now_ms();
    let rotated = srv
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({"grace_seconds": 3600}),
            200,
        )
        .await;
    let (status, old) = srv.lookup(&secret_hash(&key)).await;
    assert_eq!(status, 200);
    assert_eq!(old["key_id"], id);
    let until = old["secret_valid_until_ms"].as_i64().unwrap();
    assert!(
        until >= before + 3_600_000 && until <= now_ms() + 3_600_000,
        "{until}"
    );
    let (status, new) = srv.lookup(&secret_hash(&rotated)).await;
    assert_eq!(status, 200);
    assert_eq!(new["secret_valid_until_ms"], Value::Null);

    // A second rotation without grace ends every previous secret.
    let again = srv
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({"grace_seconds": 0}),
            200,
        )
        .await;
    assert_eq!(srv.lookup(&secret_hash(&key)).await.0, 404);
    assert_eq!(srv.lookup(&secret_hash(&rotated)).await.0, 404);
    assert_eq!(srv.lookup(&secret_hash(&again)).await.0, 200);
}

#[tokio::test]
async fn grace_ends_on_time() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "k"})).await;
    let id = key["id"].as_str().unwrap();
    srv.post(
        &format!("/v1/keys/{id}/rotate"),
        json!({"grace_seconds": 1}),
        200,
    )
    .await;
    let (status, old) = srv.lookup(&secret_hash(&key)).await;
    assert_eq!(status, 200);
    let ttl = old["cache_ttl_ms"].as_i64().unwrap();
    assert!(
        ttl > 0 && ttl <= 1000,
        "cache must not outlive the grace: {ttl}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(srv.lookup(&secret_hash(&key)).await.0, 404);
}

#[tokio::test]
async fn filter_token_sees_only_the_lookup() {
    let srv = TestServer::start().await;
    let (status, _) = srv
        .send(Method::GET, "/v1/workspaces", Some(FILTER), None)
        .await;
    assert_eq!(status, 401);
}
