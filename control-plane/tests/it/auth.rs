use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestServer, ADMIN, FILTER};

const HASH: &str = "7f9e105d15b376af7af578fb88118a3748eef28aa0ff95e4fa8fd8ff43e51617";

#[tokio::test]
async fn admin_api_requires_the_admin_token() {
    let srv = TestServer::start().await;
    for token in [None, Some("wrong"), Some(FILTER), Some("")] {
        for (method, path) in [
            (Method::GET, "/v1/workspaces"),
            (Method::POST, "/v1/workspaces"),
            (Method::GET, "/v1/plans"),
            (Method::GET, "/v1/keys/key_x"),
            (Method::DELETE, "/v1/keys/key_x"),
        ] {
            let (status, body) = srv
                .send(method.clone(), path, token, Some(r#"{"name": "x"}"#))
                .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
            assert!(body["error"].as_str().is_some(), "{body}");
        }
    }
    // Nothing was created by the rejected POSTs.
    assert_eq!(srv.get("/v1/workspaces", 200).await, json!({"data": []}));
}

#[tokio::test]
async fn unauthorized_answers_name_the_problem() {
    let srv = TestServer::start().await;
    let resp = srv.answer(srv.request(Method::GET, "/v1/workspaces")).await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.headers["www-authenticate"], "Bearer");
    assert_eq!(resp.json(), json!({"error": "missing bearer token"}));
    let (_, body) = srv
        .send(Method::GET, "/v1/workspaces", Some("nope"), None)
        .await;
    assert_eq!(body, json!({"error": "invalid admin token"}));
    let resp = srv
        .answer(
            srv.request(Method::GET, "/v1/workspaces")
                .header("authorization", format!("Basic {ADMIN}")),
        )
        .await;
    assert_eq!(resp.status, 401);
}

#[tokio::test]
async fn filter_endpoint_requires_the_filter_token() {
    let srv = TestServer::start().await;
    let path = format!("/v1/filter/keys/{HASH}");
    for token in [None, Some("wrong"), Some(ADMIN)] {
        let (status, body) = srv.send(Method::GET, &path, token, None).await;
        assert_eq!(status, 401, "{token:?}");
        assert!(body["error"].as_str().is_some());
    }
    let (status, body) = srv.send(Method::GET, &path, Some(ADMIN), None).await;
    assert_eq!(
        (status.as_u16(), body),
        (401, json!({"error": "invalid filter token"}))
    );
    // With the right token the (unknown) hash gets its real answer.
    let (status, _) = srv.send(Method::GET, &path, Some(FILTER), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn healthz_needs_no_token() {
    let srv = TestServer::start().await;
    let (status, body) = srv.send(Method::GET, "/healthz", None, None).await;
    assert_eq!((status.as_u16(), body), (200, json!({"status": "ok"})));
}
