//! `/v1/ext-authz/check/{*rest}`: Envoy's HTTP ext_authz asking about a request.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::TestServer;

async fn check(
    srv: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = srv.request(method, &format!("/v1/ext-authz/check{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let answer = srv.answer(req).await;
    let (status, headers, bytes) = (answer.status.as_u16(), answer.headers, answer.bytes);
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, headers, body)
}

#[tokio::test]
async fn answers_like_the_filter() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(&ws, json!({"alias": "a", "allowed": [{"method": "GET", "path": "/v1/things/*"}, {"path": "/open/**"}]}))
        .await;
    let secret = key["secret"].as_str().unwrap();

    for (method, path, headers) in [
        (Method::GET, "/v1/things/7?x=1", vec![("x-api-key", secret)]),
        (Method::POST, "/open", vec![("x-api-key", secret)]),
        (Method::DELETE, "/open/a/b", vec![("x-api-key", secret)]),
    ] {
        let (status, h, _) = check(&srv, method.clone(), path, &headers).await;
        assert_eq!(status, 200, "{method} {path}");
        assert_eq!(h["x-tollgate-key-id"], key["id"].as_str().unwrap());
        assert_eq!(h["x-tollgate-workspace-id"], ws.as_str());
        assert!(h.get("x-tollgate-external-id").is_none());
    }
    // A key that says whom it belongs to passes that on too.
    let owned = srv
        .key(&ws, json!({"alias": "owned", "external_id": "cus_4f2a"}))
        .await;
    let (status, h, _) = check(
        &srv,
        Method::GET,
        "/anything",
        &[("x-api-key", owned["secret"].as_str().unwrap())],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["x-tollgate-external-id"], "cus_4f2a");
    let bearer = format!("Bearer {secret}");
    let (status, _, _) = check(
        &srv,
        Method::GET,
        "/v1/things/1",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 200);
    // Being checked marks the key as used.
    assert!(srv
        .get(&format!("/v1/keys/{}", key["id"].as_str().unwrap()), 200)
        .await["last_used_at"]
        .is_string());

    let deny =
        |status: u16, error: &str, code: &str| (status, json!({"error": error, "code": code}));
    let (status, h, body) = check(&srv, Method::GET, "/v1/things/1", &[]).await;
    assert_eq!((status, body), deny(401, "Missing API Key", "missing_key"));
    assert!(h.contains_key("www-authenticate"));
    let mut bad_checksum = secret.to_owned();
    let last = if bad_checksum.ends_with('A') {
        "B"
    } else {
        "A"
    };
    bad_checksum.replace_range(41.., last);
    let unknown = "tg_AbCdEfGhIjKlMnOpQrStUvWxYz01234561huhoC";
    for headers in [
        vec![("x-api-key", "nope")],
        vec![("x-api-key", bad_checksum.as_str())],
        vec![("x-api-key", unknown)],
        vec![("x-api-key", secret), ("x-api-key", secret)],
    ] {
        let (status, _, body) = check(&srv, Method::GET, "/v1/things/1", &headers).await;
        assert_eq!(
            (status, body),
            deny(401, "Invalid API Key", "invalid_key"),
            "{headers:?}"
        );
    }
    for (method, path) in [
        (Method::POST, "/v1/things/1"),
        (Method::GET, "/v1/things/1/x"),
        (Method::GET, "/"),
    ] {
        let (status, _, body) = check(&srv, method, path, &[("x-api-key", secret)]).await;
        assert_eq!(
            (status, body),
            deny(
                403,
                "API key not allowed to access this endpoint",
                "endpoint_not_allowed"
            ),
            "{path}"
        );
    }

    let id = key["id"].as_str().unwrap();
    srv.patch(
        &format!("/v1/keys/{id}"),
        json!({"expires_at": "2001-01-01T00:00:00Z"}),
        200,
    )
    .await;
    let (status, _, body) =
        check(&srv, Method::GET, "/v1/things/1", &[("x-api-key", secret)]).await;
    assert_eq!((status, body), deny(401, "Expired API Key", "expired_key"));
    srv.patch(&format!("/v1/keys/{id}"), json!({"active": false}), 200)
        .await;
    let (status, _, body) =
        check(&srv, Method::GET, "/v1/things/1", &[("x-api-key", secret)]).await;
    assert_eq!(
        (status, body),
        deny(401, "Inactive API Key", "inactive_key")
    );

    // A rotated secret is invalid at once.
    srv.patch(
        &format!("/v1/keys/{id}"),
        json!({"active": true, "expires_at": null}),
        200,
    )
    .await;
    let rotated = srv
        .post(&format!("/v1/keys/{id}/rotate"), json!({}), 200)
        .await;
    let (status, _, _) = check(&srv, Method::GET, "/v1/things/1", &[("x-api-key", secret)]).await;
    assert_eq!(status, 401);
    let (status, _, _) = check(
        &srv,
        Method::GET,
        "/v1/things/1",
        &[("x-api-key", rotated["secret"].as_str().unwrap())],
    )
    .await;
    assert_eq!(status, 200);
}
