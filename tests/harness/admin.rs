//! Client for the control plane's admin API (`Authorization: Bearer <admin token>`). Helpers that
//! state an expected status panic with the full response when it differs; `try_*` variants
//! return the response.

use std::sync::atomic::{AtomicU32, Ordering};

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{query_string, request, Response};
use crate::time::{now_ms, rfc3339};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Free,
    Pro,
    Enterprise,
}

impl Plan {
    pub fn name(self) -> &'static str {
        match self {
            Plan::Free => "free",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }
}

/// A key as returned by create or rotate (the only answers that carry the secret).
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub id: String,
    pub workspace_id: String,
    pub secret: String,
    pub body: Value,
}

#[derive(Debug, Clone)]
pub struct Admin {
    base: String,
    token: String,
}

impl Admin {
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Admin {
        Admin {
            base: base.into(),
            token: token.into(),
        }
    }

    /// Any admin API call; `path` starts with `/`.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let auth = format!("Bearer {}", self.token);
        request(
            method,
            &format!("{}{path}", self.base),
            &[("authorization", &auth)],
            body,
        )
    }

    pub fn try_create_workspace(&self, name: &str, plan: Plan) -> Response {
        self.call(
            "POST",
            "/v1/workspaces",
            Some(&json!({"name": name, "plan": plan.name()})),
        )
    }

    /// Creates a workspace (expects 201) and returns its id.
    pub fn create_workspace(&self, name: &str, plan: Plan) -> String {
        let response = self.try_create_workspace(name, plan);
        expect_status(&response, 201, "create workspace");
        string_field(&response.json(), "id")
    }

    pub fn try_create_key(&self, workspace_id: &str, body: &Value) -> Response {
        self.call(
            "POST",
            &format!("/v1/workspaces/{workspace_id}/keys"),
            Some(body),
        )
    }

    /// Creates a key (expects 201). `body` needs at least `alias`.
    pub fn create_key(&self, workspace_id: &str, body: &Value) -> CreatedKey {
        let response = self.try_create_key(workspace_id, body);
        expect_status(&response, 201, "create key");
        created_key(&response.json(), workspace_id)
    }

    /// A new workspace on `plan` with one key without restrictions.
    pub fn new_key(&self, plan: Plan) -> CreatedKey {
        let workspace = self.create_workspace(&unique_name("ws"), plan);
        self.create_key(&workspace, &json!({"alias": unique_name("key")}))
    }

    /// A new workspace on plan `pro` with one key created from `body` (`alias` is added).
    pub fn new_key_with(&self, mut body: Value) -> CreatedKey {
        let workspace = self.create_workspace(&unique_name("ws"), Plan::Pro);
        body["alias"] = json!(unique_name("key"));
        self.create_key(&workspace, &body)
    }

    /// What the filter's lookup answers for the key (`GET /v1/filter/keys/{hash}` with the
    /// filter token): its budgets and what leases have charged to them (`usage`,
    /// `credits.used`).
    pub fn filter_lookup(&self, key_id: &str) -> Value {
        let hash = self.get_key(key_id)["hash"]
            .as_str()
            .expect("the key's hash")
            .to_string();
        let auth = format!("Bearer {}", crate::FILTER_TOKEN);
        let url = format!("{}/v1/filter/keys/{hash}", self.base);
        let response = request("GET", &url, &[("authorization", &auth)], None);
        expect_status(&response, 200, "filter lookup");
        response.json()
    }

    /// The key's units leased out and not settled (`leased` of `GET /v1/keys/{id}`):
    /// (calls, credits, Envoys holding any).
    pub fn leased(&self, key_id: &str) -> (u64, u64, u64) {
        let leased = &self.get_key(key_id)["leased"];
        let n = |field: &str| leased[field].as_u64().unwrap_or(0);
        (n("calls"), n("credits"), n("envoys"))
    }

    pub fn get_key(&self, key_id: &str) -> Value {
        let response = self.call("GET", &format!("/v1/keys/{key_id}"), None);
        expect_status(&response, 200, "get key");
        response.json()
    }

    /// `PATCH /v1/keys/{id}` (expects 200).
    pub fn patch_key(&self, key_id: &str, body: &Value) -> Value {
        let response = self.call("PATCH", &format!("/v1/keys/{key_id}"), Some(body));
        expect_status(&response, 200, "patch key");
        response.json()
    }

    pub fn set_active(&self, key_id: &str, active: bool) -> Value {
        self.patch_key(key_id, &json!({ "active": active }))
    }

    /// `POST /v1/keys/{id}/rotate` (expects 200); returns the key with its new secret.
    pub fn rotate_key(&self, key: &CreatedKey, grace_seconds: Option<u64>) -> CreatedKey {
        let body = match grace_seconds {
            Some(grace) => json!({ "grace_seconds": grace }),
            None => json!({}),
        };
        let response = self.call("POST", &format!("/v1/keys/{}/rotate", key.id), Some(&body));
        expect_status(&response, 200, "rotate key");
        created_key(&response.json(), &key.workspace_id)
    }

    pub fn delete_key(&self, key_id: &str) -> Response {
        self.call("DELETE", &format!("/v1/keys/{key_id}"), None)
    }
}

impl Admin {
    /// Creates a workspace on the plan named `plan` (a seeded or a custom one); returns its id.
    pub fn create_workspace_on(&self, name: &str, plan: &str) -> String {
        let response = self.call(
            "POST",
            "/v1/workspaces",
            Some(&json!({"name": name, "plan": plan})),
        );
        expect_status(&response, 201, "create workspace");
        string_field(&response.json(), "id")
    }

    /// `POST /v1/plans` (expects 201): a custom plan; `None` = unlimited.
    pub fn create_plan(
        &self,
        name: &str,
        max_keys: u64,
        per_second: Option<u64>,
        per_minute: Option<u64>,
    ) -> Value {
        let body = json!({
            "name": name,
            "max_keys": max_keys,
            "rate_limit_per_second": per_second,
            "rate_limit_per_minute": per_minute,
        });
        let response = self.call("POST", "/v1/plans", Some(&body));
        expect_status(&response, 201, "create plan (POST /v1/plans)");
        response.json()
    }

    /// `PATCH /v1/workspaces/{ws}` `{"plan": plan}` (expects 200).
    pub fn set_workspace_plan(&self, workspace_id: &str, plan: &str) -> Value {
        let response = self.call(
            "PATCH",
            &format!("/v1/workspaces/{workspace_id}"),
            Some(&json!({ "plan": plan })),
        );
        expect_status(&response, 200, "change the workspace's plan");
        response.json()
    }

    /// A workspace on a new custom plan with these limits (`max_keys` 25): created on
    /// `enterprise`, then moved to the plan with `PATCH /v1/workspaces/{ws}` (both lead-owned
    /// endpoints are exercised). Returns the workspace id.
    pub fn workspace_on_custom_plan(
        &self,
        per_second: Option<u64>,
        per_minute: Option<u64>,
    ) -> String {
        let plan = unique_name("plan");
        self.create_plan(&plan, 25, per_second, per_minute);
        let workspace = self.create_workspace(&unique_name("ws"), Plan::Enterprise);
        let patched = self.set_workspace_plan(&workspace, &plan);
        assert_eq!(
            patched["plan"].as_str(),
            Some(plan.as_str()),
            "PATCH /v1/workspaces/{workspace} answered {patched}"
        );
        workspace
    }

    /// One page of `GET /v1/requests` with `params` (any status).
    pub fn requests_page(&self, params: &[(&str, String)]) -> Response {
        self.call(
            "GET",
            &format!("/v1/requests{}", query_string(params)),
            None,
        )
    }

    /// Every record `GET /v1/requests` matches with `params`, following `next_cursor` (pages of
    /// 500). `from` defaults to an hour ago here so that records of the test are all included
    /// whatever the API's default window.
    pub fn requests(&self, params: &[(&str, String)]) -> Vec<Value> {
        let mut params: Vec<(&str, String)> = params.to_vec();
        if !params.iter().any(|(k, _)| *k == "from") {
            params.push(("from", rfc3339(now_ms() / 1000 - 3600)));
        }
        params.push(("limit", "500".to_string()));
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let mut page_params = params.clone();
            if let Some(cursor) = &cursor {
                page_params.push(("cursor", cursor.clone()));
            }
            let response = self.requests_page(&page_params);
            expect_status(&response, 200, "GET /v1/requests");
            let body = response.json();
            let data = body["data"]
                .as_array()
                .unwrap_or_else(|| panic!("GET /v1/requests without a data array: {body}"));
            all.extend(data.iter().cloned());
            match body.get("next_cursor").and_then(Value::as_str) {
                Some(next) if !data.is_empty() => cursor = Some(next.to_string()),
                _ => return all,
            }
        }
        panic!("GET /v1/requests: more than 10000 pages");
    }

    /// Polls [`requests`](Self::requests) until at least `expected` records match and the
    /// count then stays the same for 1.5 s (so late duplicates would show), or until `timeout`;
    /// returns the last answer either way (the caller asserts on it).
    pub fn settled_requests(
        &self,
        params: &[(&str, String)],
        expected: usize,
        timeout: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let quiet = Duration::from_millis(1500);
        let mut last = self.requests(params);
        let mut stable_since = Instant::now();
        loop {
            if last.len() >= expected && stable_since.elapsed() >= quiet {
                return last;
            }
            if Instant::now() >= deadline {
                return last;
            }
            std::thread::sleep(Duration::from_millis(250));
            let now = self.requests(params);
            if now.len() != last.len() {
                stable_since = Instant::now();
            }
            last = now;
        }
    }

    /// `GET /v1/keys/{id}/usage` with `params` (expects 200).
    pub fn key_usage(&self, key_id: &str, params: &[(&str, String)]) -> Value {
        let response = self.call(
            "GET",
            &format!("/v1/keys/{key_id}/usage{}", query_string(params)),
            None,
        );
        expect_status(&response, 200, "GET /v1/keys/{id}/usage");
        response.json()
    }

    /// `GET /v1/workspaces/{ws}/usage` with `params` (expects 200).
    pub fn workspace_usage(&self, workspace_id: &str, params: &[(&str, String)]) -> Value {
        let response = self.call(
            "GET",
            &format!(
                "/v1/workspaces/{workspace_id}/usage{}",
                query_string(params)
            ),
            None,
        );
        expect_status(&response, 200, "GET /v1/workspaces/{ws}/usage");
        response.json()
    }
}

fn created_key(body: &Value, workspace_id: &str) -> CreatedKey {
    CreatedKey {
        id: string_field(body, "id"),
        workspace_id: body
            .get("workspace_id")
            .and_then(Value::as_str)
            .unwrap_or(workspace_id)
            .to_string(),
        secret: string_field(body, "secret"),
        body: body.clone(),
    }
}

pub fn expect_status(response: &Response, status: u16, what: &str) {
    assert_eq!(
        response.status, status,
        "{what}: expected HTTP {status}, got {response:?}"
    );
}

fn string_field(body: &Value, field: &str) -> String {
    body.get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string field {field:?} in {body}"))
        .to_string()
}

/// `prefix-<pid>-<n>`: unique in this test run.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
