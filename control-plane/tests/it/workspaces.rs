use reqwest::Method;
use serde_json::json;

use crate::common::{TestServer, ADMIN};

#[tokio::test]
async fn create_get_and_list_workspaces() {
    let srv = TestServer::start().await;
    assert_eq!(srv.get("/v1/workspaces", 200).await, json!({"data": []}));

    let ws = srv
        .post(
            "/v1/workspaces",
            json!({"name": "  Acme Corp ", "plan": "pro"}),
            201,
        )
        .await;
    let id = ws["id"].as_str().unwrap();
    assert!(id.starts_with("ws_") && id.len() == 19, "{id}");
    assert_eq!(ws["name"], "Acme Corp");
    assert_eq!(ws["plan"], "pro");
    let created = ws["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");

    assert_eq!(srv.get(&format!("/v1/workspaces/{id}"), 200).await, ws);
    let other = srv
        .post("/v1/workspaces", json!({"name": "Beta"}), 201)
        .await;
    assert_eq!(other["plan"], "free", "plan defaults to free");
    let list = srv.get("/v1/workspaces", 200).await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    // Oldest first; two created in the same millisecond are ordered by id.
    let mut expected =
        [&ws, &other].map(|w| (w["created_at"].as_str().unwrap(), w["id"].as_str().unwrap()));
    expected.sort();
    assert_eq!(ids, expected.map(|(_, id)| id));
}

#[tokio::test]
async fn plans_are_seeded() {
    let srv = TestServer::start().await;
    let plans = srv.get("/v1/plans", 200).await;
    assert_eq!(
        plans,
        json!({"data": [
            {"name": "free", "max_keys": 2, "rate_limit_per_second": 5, "rate_limit_per_minute": 100},
            {"name": "pro", "max_keys": 25, "rate_limit_per_second": 50, "rate_limit_per_minute": 2000},
            {"name": "enterprise", "max_keys": null, "rate_limit_per_second": null, "rate_limit_per_minute": null},
        ]})
    );
}

#[tokio::test]
async fn bad_workspace_input_is_rejected_without_writing() {
    let srv = TestServer::start().await;
    let cases: &[(&str, &str)] = &[
        (r#"{"name": "", "plan": "free"}"#, "name: must not be blank"),
        (
            &format!(r#"{{"name": "{}"}}"#, "x".repeat(101)),
            "name: must be at most 100 characters",
        ),
        (
            r#"{"name": "A", "plan": "gold"}"#,
            "plan: unknown plan 'gold' (expected one of: free, pro, enterprise)",
        ),
        (
            r#"{"name": "A", "colour": "red"}"#,
            "unknown field `colour`",
        ),
        (r#"{"plan": "free"}"#, "missing field `name`"),
        (r#"{"name": 7}"#, "name: invalid type: integer `7`"),
        (r#"{"name": "A""#, "invalid JSON body"),
        (r#"{"name": "A"} {}"#, "invalid JSON body"),
        ("", "request body must be a JSON object"),
    ];
    for (body, expected) in cases {
        let (status, value) = srv
            .send(Method::POST, "/v1/workspaces", Some(ADMIN), Some(body))
            .await;
        assert_eq!(status, 400, "{body}: {value}");
        let message = value["error"].as_str().unwrap();
        assert!(
            message.contains(expected),
            "{body}: got {message:?}, want {expected:?}"
        );
    }
    assert_eq!(srv.get("/v1/workspaces", 200).await, json!({"data": []}));
}

#[tokio::test]
async fn unknown_workspace_and_route_are_json_404() {
    let srv = TestServer::start().await;
    assert_eq!(
        srv.get("/v1/workspaces/ws_nope", 404).await,
        json!({"error": "workspace not found"})
    );
    assert_eq!(
        srv.get("/v1/workspaces/ws_nope/keys", 404).await,
        json!({"error": "workspace not found"})
    );
    let (status, body) = srv
        .send(
            Method::POST,
            "/v1/workspaces/ws_nope/keys",
            Some(ADMIN),
            Some(r#"{"alias": "a"}"#),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body),
        (404, json!({"error": "workspace not found"}))
    );
    assert_eq!(
        srv.get("/v2/nothing", 404).await,
        json!({"error": "not found"})
    );
    let (status, body) = srv
        .send(Method::PUT, "/v1/workspaces", Some(ADMIN), None)
        .await;
    assert_eq!(status, 405);
    assert_eq!(body, json!({"error": "method not allowed"}));
}

#[tokio::test]
async fn custom_plans_and_moving_a_workspace_between_plans() {
    let srv = TestServer::start().await;
    let plan = srv
        .post(
            "/v1/plans",
            json!({"name": "scale", "max_keys": 100, "rate_limit_per_second": 100, "rate_limit_per_minute": null}),
            201,
        )
        .await;
    assert_eq!(plan["rate_limit_per_second"], 100);
    assert!(plan["rate_limit_per_minute"].is_null());
    let dup = srv.post("/v1/plans", json!({"name": "scale"}), 409).await;
    assert_eq!(dup["error"], "plan 'scale' already exists");
    let bad = srv
        .post("/v1/plans", json!({"name": "Big Plan"}), 400)
        .await;
    assert!(bad["error"].as_str().unwrap().starts_with("name:"), "{bad}");
    let bad = srv
        .post(
            "/v1/plans",
            json!({"name": "zero", "rate_limit_per_second": 0}),
            400,
        )
        .await;
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .starts_with("rate_limit_per_second:"),
        "{bad}"
    );
    assert_eq!(
        srv.get("/v1/plans", 200).await["data"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // A key's lookup reflects its workspace's plan, also after the workspace moves.
    let ws = srv.workspace("free").await;
    let key = srv.key(&ws, json!({"alias": "k"})).await;
    let hash = crate::common::secret_hash(&key);
    let (_, before) = srv.lookup(&hash).await;
    assert_eq!(before["plan"]["rate_limit_per_second"], 5);
    let moved = srv
        .patch(
            &format!("/v1/workspaces/{ws}"),
            json!({"plan": "scale"}),
            200,
        )
        .await;
    assert_eq!(moved["plan"], "scale");
    let (_, after) = srv.lookup(&hash).await;
    assert_eq!(after["plan"]["name"], "scale");
    assert_eq!(after["plan"]["rate_limit_per_second"], 100);
    let unknown = srv
        .patch(
            &format!("/v1/workspaces/{ws}"),
            json!({"plan": "nope"}),
            400,
        )
        .await;
    assert!(
        unknown["error"].as_str().unwrap().starts_with("plan:"),
        "{unknown}"
    );
    srv.patch("/v1/workspaces/ws_missing", json!({"plan": "pro"}), 404)
        .await;
}
