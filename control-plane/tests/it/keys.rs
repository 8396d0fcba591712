use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{secret_hash, TestServer, ADMIN};

const BASE62: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn assert_secret_format(secret: &str) {
    assert_eq!(secret.len(), 42, "{secret}");
    assert!(secret.starts_with("tg_"), "{secret}");
    assert!(secret[3..].chars().all(|c| BASE62.contains(c)), "{secret}");
    let crc = crc32fast::hash(&secret.as_bytes()[..36]);
    let mut n = u64::from(crc);
    let mut check = String::new();
    for _ in 0..6 {
        check.insert(0, BASE62.as_bytes()[(n % 62) as usize] as char);
        n /= 62;
    }
    assert_eq!(&secret[36..], check, "checksum of {secret}");
}

#[tokio::test]
async fn create_key_returns_the_secret_once() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(
            &ws,
            json!({
                "alias": "mobile app",
                "description": "iOS client",
                "quotas": {"daily": 1000, "monthly": null},
                "allowed": [{"method": "get", "path": "/v1/things/*"}, {"path": "/v1/**"}],
            }),
        )
        .await;
    let secret = key["secret"].as_str().unwrap();
    assert_secret_format(secret);
    let id = key["id"].as_str().unwrap();
    assert!(id.starts_with("key_") && id.len() == 20, "{id}");
    assert_eq!(key["hash"], secret_hash(&key));
    assert_eq!(key["prefix"], &secret[..8]);
    assert_eq!(key["workspace_id"], ws);
    assert_eq!(key["alias"], "mobile app");
    assert_eq!(key["description"], "iOS client");
    assert_eq!(key["category"], "production");
    assert_eq!(key["active"], true);
    assert_eq!(key["status"], "active");
    assert_eq!(key["expires_at"], Value::Null);
    assert_eq!(key["last_used_at"], Value::Null);
    assert_eq!(
        key["quotas"],
        json!({"total": null, "daily": 1000, "weekly": null, "monthly": null})
    );
    assert_eq!(
        key["allowed"],
        json!([{"method": "GET", "path": "/v1/things/*"}, {"method": "*", "path": "/v1/**"}])
    );

    let shown = srv.get(&format!("/v1/keys/{id}"), 200).await;
    assert!(shown.get("secret").is_none(), "{shown}");
    let mut without_secret = key.clone();
    without_secret.as_object_mut().unwrap().remove("secret");
    assert_eq!(shown, without_secret);
    let list = srv.get(&format!("/v1/workspaces/{ws}/keys"), 200).await;
    assert_eq!(list["data"], json!([without_secret]));

    let second = srv.key(&ws, json!({"alias": "web"})).await;
    assert_ne!(second["secret"], key["secret"]);
}

#[tokio::test]
async fn plan_key_limit_counts_existing_keys() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("free").await;
    let first = srv.key(&ws, json!({"alias": "one"})).await;
    srv.key(&ws, json!({"alias": "two"})).await;
    let path = format!("/v1/workspaces/{ws}/keys");
    let err = srv.post(&path, json!({"alias": "three"}), 409).await;
    assert_eq!(err, json!({"error": "plan 'free' allows at most 2 keys"}));

    // A deactivated key still holds its slot.
    let first_id = first["id"].as_str().unwrap();
    srv.patch(
        &format!("/v1/keys/{first_id}"),
        json!({"active": false}),
        200,
    )
    .await;
    srv.post(&path, json!({"alias": "three"}), 409).await;
    assert_eq!(srv.key_count(&ws).await, 2);

    // Deleting a never-used key frees it.
    srv.delete(&format!("/v1/keys/{first_id}"), 204).await;
    srv.key(&ws, json!({"alias": "three"})).await;
    assert_eq!(srv.key_count(&ws).await, 2);

    // Enterprise has no limit.
    let big = srv.workspace("enterprise").await;
    for i in 0..30 {
        srv.key(&big, json!({"alias": format!("k{i}")})).await;
    }
}

#[tokio::test]
async fn alias_is_unique_per_workspace() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let other = srv.workspace("pro").await;
    srv.key(&ws, json!({"alias": "backend"})).await;
    let err = srv
        .post(
            &format!("/v1/workspaces/{ws}/keys"),
            json!({"alias": " backend "}),
            409,
        )
        .await;
    assert_eq!(
        err,
        json!({"error": "alias 'backend' is already used in this workspace"})
    );
    srv.key(&other, json!({"alias": "backend"})).await;

    let web = srv.key(&ws, json!({"alias": "web"})).await;
    let web_path = format!("/v1/keys/{}", web["id"].as_str().unwrap());
    let err = srv.patch(&web_path, json!({"alias": "backend"}), 409).await;
    assert_eq!(
        err,
        json!({"error": "alias 'backend' is already used in this workspace"})
    );
    // Renaming to its own alias is not a conflict.
    srv.patch(&web_path, json!({"alias": "web"}), 200).await;
    assert_eq!(srv.get(&web_path, 200).await["alias"], "web");
}

#[tokio::test]
async fn bad_key_input_names_the_field_and_writes_nothing() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let path = format!("/v1/workspaces/{ws}/keys");
    let long_description = "x".repeat(501);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"alias": ""}), "alias: must not be blank"),
        (json!({"alias": "a/b"}), "alias: may only contain"),
        (
            json!({"alias": "x".repeat(65)}),
            "alias: must be at most 64 characters",
        ),
        (json!({"alias": 5}), "alias: invalid type"),
        (
            json!({"alias": "a", "description": long_description}),
            "description: must be at most 500 characters",
        ),
        (
            json!({"alias": "a", "category": "Load Test"}),
            "category: must be production, development, staging or a custom label",
        ),
        (
            json!({"alias": "a", "expires_at": "tomorrow"}),
            "expires_at: must be an RFC 3339 timestamp",
        ),
        (
            json!({"alias": "a", "quotas": {"daily": 0}}),
            "quotas.daily: must be a positive integer",
        ),
        (
            json!({"alias": "a", "quotas": {"total": -3}}),
            "quotas.total: must be a positive integer",
        ),
        (
            json!({"alias": "a", "quotas": {"weekly": 1.5}}),
            "quotas.weekly: must be a positive integer",
        ),
        (
            json!({"alias": "a", "quotas": {"monthly": "10"}}),
            "quotas.monthly: must be a positive integer",
        ),
        (
            json!({"alias": "a", "quotas": {"daily": 1_000_000_000_001u64}}),
            "quotas.daily: must be at most 1000000000000",
        ),
        (
            json!({"alias": "a", "quotas": {"hourly": 5}}),
            "unknown field `hourly`",
        ),
        (
            json!({"alias": "a", "allowed": [{"method": "FETCH", "path": "/"}]}),
            "allowed[0].method: must be one of",
        ),
        (
            json!({"alias": "a", "allowed": [{"path": "/"}, {"path": "v1"}]}),
            "allowed[1].path: must start with '/'",
        ),
        (
            json!({"alias": "a", "allowed": [{"path": "/v1/**/x"}]}),
            "allowed[0].path: '**' is only allowed as the final segment",
        ),
        (
            json!({"alias": "a", "allowed": [{"path": "/v1//x"}]}),
            "allowed[0].path: must not contain empty segments",
        ),
        (
            json!({"alias": "a", "allowed": [{"path": format!("/{}", "a".repeat(256))}]}),
            "allowed[0].path: must be at most 256 characters",
        ),
        (
            json!({"alias": "a", "allowed": vec![json!({"path": "/"}); 101]}),
            "allowed: must have at most 100 entries",
        ),
        (
            json!({"alias": "a", "secret": "tg_mine"}),
            "unknown field `secret`",
        ),
    ];
    for (body, expected) in cases {
        let err = srv.post(&path, body.clone(), 400).await;
        let message = err["error"].as_str().unwrap();
        assert!(
            message.starts_with(expected) || message.contains(expected),
            "{body}: got {message:?}, want {expected:?}"
        );
    }
    let (status, err) = srv
        .send(Method::POST, &path, Some(ADMIN), Some("{\"alias\": \"a\","))
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON body"),
        "{err}"
    );
    assert_eq!(srv.key_count(&ws).await, 0);
}

#[tokio::test]
async fn categories_and_expiry() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let staging = srv
        .key(&ws, json!({"alias": "s", "category": "Staging"}))
        .await;
    assert_eq!(staging["category"], "staging");
    let custom = srv
        .key(&ws, json!({"alias": "c", "category": "load-test_2"}))
        .await;
    assert_eq!(custom["category"], "load-test_2");

    // A new key cannot be created expired (it could never be used)...
    for past in ["2001-01-01T00:00:00Z", "1970-01-01T00:00:00Z"] {
        let err = srv
            .post(
                &format!("/v1/workspaces/{ws}/keys"),
                json!({"alias": "old", "expires_at": past}),
                400,
            )
            .await;
        assert_eq!(err["field"], "expires_at", "{err}");
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .starts_with("expires_at: must be in the future"),
            "{err}"
        );
    }
    assert_eq!(srv.key_count(&ws).await, 2);
    // ...but a patch may set a past expiry on purpose: it expires the key now.
    let old = srv.key(&ws, json!({"alias": "old"})).await;
    let past = srv
        .patch(
            &format!("/v1/keys/{}", old["id"].as_str().unwrap()),
            json!({"expires_at": "2001-01-01T00:00:00Z"}),
            200,
        )
        .await;
    assert_eq!(past["status"], "expired");
    assert_eq!(past["active"], true);
    assert_eq!(past["expires_at"], "2001-01-01T00:00:00Z");
    let future = srv
        .key(
            &ws,
            json!({"alias": "new", "expires_at": "2999-01-01T01:00:00.250+01:00"}),
        )
        .await;
    assert_eq!(future["status"], "active");
    assert_eq!(future["expires_at"], "2999-01-01T00:00:00.250Z");
}

#[tokio::test]
async fn patch_updates_only_what_it_names() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(
            &ws,
            json!({
                "alias": "k",
                "description": "first",
                "expires_at": "2999-01-01T00:00:00Z",
                "quotas": {"daily": 100, "total": 5000},
                "allowed": [{"method": "GET", "path": "/a"}],
            }),
        )
        .await;
    let path = format!("/v1/keys/{}", key["id"].as_str().unwrap());

    let k = srv
        .patch(&path, json!({"quotas": {"daily": 200, "total": null}}), 200)
        .await;
    assert_eq!(
        k["quotas"],
        json!({"total": null, "daily": 200, "weekly": null, "monthly": null})
    );
    assert_eq!(k["description"], "first");
    assert_eq!(k["expires_at"], "2999-01-01T00:00:00Z");

    let k = srv
        .patch(
            &path,
            json!({"quotas": {"weekly": 700}, "category": "development", "description": null}),
            200,
        )
        .await;
    assert_eq!(
        k["quotas"],
        json!({"total": null, "daily": 200, "weekly": 700, "monthly": null})
    );
    assert_eq!(k["category"], "development");
    assert_eq!(k["description"], Value::Null);

    let k = srv
        .patch(
            &path,
            json!({"expires_at": null, "allowed": [], "quotas": null, "alias": "renamed"}),
            200,
        )
        .await;
    assert_eq!(k["expires_at"], Value::Null);
    assert_eq!(k["allowed"], json!([]));
    assert_eq!(
        k["quotas"],
        json!({"total": null, "daily": null, "weekly": null, "monthly": null})
    );
    assert_eq!(k["alias"], "renamed");

    let k = srv.patch(&path, json!({"active": false}), 200).await;
    assert_eq!(
        (k["active"].clone(), k["status"].clone()),
        (json!(false), json!("inactive"))
    );
    assert_eq!(srv.get(&path, 200).await, k);

    // A bad field rejects the whole patch.
    let before = srv.get(&path, 200).await;
    for (body, expected) in [
        (
            json!({"alias": "ok", "quotas": {"daily": 0}}),
            "quotas.daily: must be a positive integer",
        ),
        (json!({"active": null}), "active: must not be null"),
        (json!({"allowed": null}), "allowed: must not be null"),
        (
            json!({"expires_at": "soon"}),
            "expires_at: must be an RFC 3339 timestamp",
        ),
        (json!({"hash": "x"}), "unknown field `hash`"),
    ] {
        let err = srv.patch(&path, body.clone(), 400).await;
        assert!(
            err["error"].as_str().unwrap().contains(expected),
            "{body}: {err}"
        );
    }
    assert_eq!(srv.get(&path, 200).await, before);
}

#[tokio::test]
async fn unknown_key_is_404() {
    let srv = TestServer::start().await;
    let not_found = json!({"error": "API key not found"});
    assert_eq!(srv.get("/v1/keys/key_nope", 404).await, not_found);
    assert_eq!(
        srv.patch("/v1/keys/key_nope", json!({"active": false}), 404)
            .await,
        not_found
    );
    assert_eq!(
        srv.post("/v1/keys/key_nope/rotate", json!({}), 404).await,
        not_found
    );
    assert_eq!(srv.delete("/v1/keys/key_nope", 404).await, not_found);
}

#[tokio::test]
async fn delete_only_never_used_keys() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let unused = srv.key(&ws, json!({"alias": "unused"})).await;
    let unused_path = format!("/v1/keys/{}", unused["id"].as_str().unwrap());
    assert_eq!(srv.delete(&unused_path, 204).await, Value::Null);
    srv.get(&unused_path, 404).await;
    // Its secret no longer resolves either.
    assert_eq!(srv.lookup(&secret_hash(&unused)).await.0, 404);

    let used = srv.key(&ws, json!({"alias": "used"})).await;
    let used_path = format!("/v1/keys/{}", used["id"].as_str().unwrap());
    assert_eq!(srv.lookup(&secret_hash(&used)).await.0, 200);
    let err = srv.delete(&used_path, 409).await;
    assert_eq!(
        err,
        json!({"error": "API key has request history; deactivate it instead"})
    );
    srv.get(&used_path, 200).await;
}

#[tokio::test]
async fn rotate_grace_is_bounded() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "k"})).await;
    let path = format!("/v1/keys/{}/rotate", key["id"].as_str().unwrap());
    for bad in [
        json!({"grace_seconds": 604_801}),
        json!({"grace_seconds": -1}),
    ] {
        let err = srv.post(&path, bad, 400).await;
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .starts_with("grace_seconds: must be between 0 and 604800"),
            "{err}"
        );
    }
    let err = srv.post(&path, json!({"grace": 5}), 400).await;
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `grace`"),
        "{err}"
    );
    // The failed attempts did not rotate anything.
    assert_eq!(srv.lookup(&secret_hash(&key)).await.0, 200);
    // No body at all is a rotation without grace.
    let (status, rotated) = srv.send(Method::POST, &path, Some(ADMIN), None).await;
    assert_eq!(status, 200, "{rotated}");
    assert_secret_format(rotated["secret"].as_str().unwrap());
    assert_eq!(srv.lookup(&secret_hash(&key)).await.0, 404);
}

#[tokio::test]
async fn concurrent_creates_respect_the_plan_limit() {
    let srv = std::sync::Arc::new(TestServer::start().await);
    let ws = srv.workspace("free").await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let srv = srv.clone();
        let path = format!("/v1/workspaces/{ws}/keys");
        tasks.push(tokio::spawn(async move {
            let body = json!({"alias": format!("k{i}")}).to_string();
            srv.send(Method::POST, &path, Some(ADMIN), Some(&body))
                .await
                .0
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 201, 409, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(srv.key_count(&ws).await, 2);
}

#[tokio::test]
async fn undecodable_path_segment_is_a_json_400() {
    let srv = TestServer::start().await;
    let err = srv.get("/v1/keys/%FF", 400).await;
    assert!(err["error"].as_str().is_some(), "{err}");
}
