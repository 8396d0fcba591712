//! Console tokens and tenant isolation: a console token sees its workspace only (404 for the
//! rest, as if it did not exist) and gets 403 on admin-only routes.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{now_ms, record, TestServer, ADMIN};

struct Tenants {
    srv: TestServer,
    ws_a: String,
    ws_b: String,
    key_a: Value,
    key_b: Value,
    token_a: String,
    token_a_id: String,
}

async fn tenants() -> Tenants {
    let srv = TestServer::start().await;
    let ws_a = srv.workspace("pro").await;
    let ws_b = srv.workspace("pro").await;
    let key_a = srv.key(&ws_a, json!({"alias": "a"})).await;
    let key_b = srv.key(&ws_b, json!({"alias": "b"})).await;
    let t = now_ms() - 1000;
    srv.ingest(&[record(&key_a, "ra", t), record(&key_b, "rb", t)])
        .await;
    let created = srv
        .post(
            &format!("/v1/workspaces/{ws_a}/console-tokens"),
            json!({"name": " Acme console "}),
            201,
        )
        .await;
    assert_eq!(created["workspace_id"], ws_a.as_str());
    assert_eq!(created["name"], "Acme console");
    assert!(created["id"].as_str().unwrap().starts_with("ct_"));
    assert!(created["created_at"].is_string());
    let token_a = created["token"].as_str().unwrap().to_owned();
    assert!(token_a.starts_with("tgc_"));
    Tenants {
        srv,
        ws_a,
        ws_b,
        key_a,
        key_b,
        token_a,
        token_a_id: created["id"].as_str().unwrap().to_owned(),
    }
}

impl Tenants {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string());
        let (status, value) = self
            .srv
            .send(method, path, Some(&self.token_a), body.as_deref())
            .await;
        (status.as_u16(), value)
    }
}

#[tokio::test]
async fn console_token_lifecycle_and_whoami() {
    let t = tenants().await;
    assert_eq!(t.srv.get("/v1/whoami", 200).await, json!({"kind": "admin"}));
    assert_eq!(
        t.call(Method::GET, "/v1/whoami", None).await,
        (200, json!({"kind": "console", "workspace_id": t.ws_a}))
    );
    let listed = t
        .srv
        .get(&format!("/v1/workspaces/{}/console-tokens", t.ws_a), 200)
        .await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(listed["data"][0].get("token").is_none(), "{listed}");
    assert_eq!(listed["data"][0]["id"], t.token_a_id.as_str());
    for body in [
        json!({"name": ""}),
        json!({"name": "x".repeat(101)}),
        json!({}),
    ] {
        let answer = t
            .srv
            .post(
                &format!("/v1/workspaces/{}/console-tokens", t.ws_a),
                body,
                400,
            )
            .await;
        assert!(
            answer["error"].as_str().unwrap().contains("name"),
            "{answer}"
        );
    }
    t.srv
        .post(
            "/v1/workspaces/ws_nope/console-tokens",
            json!({"name": "x"}),
            404,
        )
        .await;

    t.srv
        .delete(&format!("/v1/console-tokens/{}", t.token_a_id), 204)
        .await;
    t.srv
        .delete(&format!("/v1/console-tokens/{}", t.token_a_id), 404)
        .await;
    let (status, body) = t.call(Method::GET, "/v1/whoami", None).await;
    assert_eq!(
        (status, body),
        (401, json!({"error": "invalid console token"}))
    );
}

#[tokio::test]
async fn console_token_sees_its_workspace_only() {
    let t = tenants().await;
    let (a, b) = (
        t.key_a["id"].as_str().unwrap(),
        t.key_b["id"].as_str().unwrap(),
    );
    let (ws_a, ws_b) = (t.ws_a.as_str(), t.ws_b.as_str());

    // Its own workspace works.
    for path in [
        format!("/v1/workspaces/{ws_a}"),
        format!("/v1/workspaces/{ws_a}/keys"),
        format!("/v1/workspaces/{ws_a}/usage"),
        format!("/v1/workspaces/{ws_a}/console-tokens"),
        format!("/v1/keys/{a}"),
        format!("/v1/keys/{a}/usage"),
        "/v1/plans".to_owned(),
    ] {
        let (status, body) = t.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, listed) = t.call(Method::GET, "/v1/workspaces", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], ws_a);
    let (status, created) = t
        .call(
            Method::POST,
            &format!("/v1/workspaces/{ws_a}/keys"),
            Some(json!({"alias": "mine"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let mine = created["id"].as_str().unwrap();
    assert_eq!(
        t.call(
            Method::PATCH,
            &format!("/v1/keys/{mine}"),
            Some(json!({"active": false}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        t.call(Method::POST, &format!("/v1/keys/{mine}/rotate"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        t.call(Method::DELETE, &format!("/v1/keys/{mine}"), None)
            .await
            .0,
        204
    );

    // Everything of the other workspace is 404, exactly like something that does not exist.
    let other: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/workspaces/{ws_b}"), None),
        (Method::GET, format!("/v1/workspaces/{ws_b}/keys"), None),
        (
            Method::POST,
            format!("/v1/workspaces/{ws_b}/keys"),
            Some(json!({"alias": "x"})),
        ),
        (Method::GET, format!("/v1/workspaces/{ws_b}/usage"), None),
        (
            Method::GET,
            format!("/v1/workspaces/{ws_b}/console-tokens"),
            None,
        ),
        (Method::GET, format!("/v1/keys/{b}"), None),
        (
            Method::PATCH,
            format!("/v1/keys/{b}"),
            Some(json!({"active": false})),
        ),
        (Method::POST, format!("/v1/keys/{b}/rotate"), None),
        (Method::DELETE, format!("/v1/keys/{b}"), None),
        (Method::GET, format!("/v1/keys/{b}/usage"), None),
    ];
    for (method, path, body) in other {
        let (status, answer) = t.call(method.clone(), &path, body.clone()).await;
        let missing = path
            .replace(ws_b, "ws_doesnotexist1234")
            .replace(b, "key_doesnotexist1234");
        let (admin_status, admin_answer) = t
            .srv
            .send(
                method.clone(),
                &missing,
                Some(ADMIN),
                body.map(|b| b.to_string()).as_deref(),
            )
            .await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert_eq!(
            (admin_status.as_u16(), &admin_answer),
            (404, &answer),
            "{method} {path}"
        );
    }
    // Key b is untouched.
    let key_b = t.srv.get(&format!("/v1/keys/{b}"), 200).await;
    assert_eq!(key_b["active"], true);
    assert_eq!(key_b["hash"], t.key_b["hash"]);

    // Other workspace's console tokens cannot be deleted.
    let other_token = t
        .srv
        .post(
            &format!("/v1/workspaces/{ws_b}/console-tokens"),
            json!({"name": "b"}),
            201,
        )
        .await;
    let (status, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/console-tokens/{}", other_token["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Request log and CSV: own workspace only, whatever workspace_id says.
    let ids = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .collect()
    };
    for query in ["", "?workspace_id=", &format!("?key_id={b}")] {
        let (status, page) = t
            .call(Method::GET, &format!("/v1/requests{query}"), None)
            .await;
        assert_eq!(status, 200);
        let want: Vec<String> = if query.contains("key_id") {
            vec![]
        } else {
            vec!["ra".into()]
        };
        assert_eq!(ids(&page), want, "{query}");
    }
    let (_, page) = t
        .call(
            Method::GET,
            &format!("/v1/requests?workspace_id={ws_b}"),
            None,
        )
        .await;
    assert!(ids(&page).is_empty());
    let admin_page = t.srv.get("/v1/requests", 200).await;
    assert_eq!(ids(&admin_page).len(), 2);
    let csv = t
        .srv
        .answer(
            t.srv
                .request(Method::GET, "/v1/requests.csv")
                .bearer_auth(&t.token_a),
        )
        .await
        .text();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.contains("\nra,"));
}

#[tokio::test]
async fn admin_only_routes_answer_403_to_console_tokens() {
    let t = tenants().await;
    for (method, path, body) in [
        (
            Method::POST,
            "/v1/workspaces".to_owned(),
            json!({"name": "x"}),
        ),
        (
            Method::POST,
            format!("/v1/workspaces/{}/console-tokens", t.ws_a),
            json!({"name": "x"}),
        ),
    ] {
        let (status, answer) = t.call(method.clone(), &path, Some(body)).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert!(answer["error"].is_string());
    }
    assert_eq!(
        t.srv.get("/v1/workspaces", 200).await["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The filter routes do not take console tokens.
    let (status, _) = t
        .call(
            Method::GET,
            &format!("/v1/filter/keys/{}", "a".repeat(64)),
            None,
        )
        .await;
    assert_eq!(status, 401);
}
