//! The harness itself, without the filter: the processes start, Envoy proxies to the demo
//! upstream, and the admin API answers. If these fail, the filter tests cannot mean anything.

use serde_json::json;
use tollgate_integration_tests::http::request;
use tollgate_integration_tests::{Plan, Stack};

#[test]
fn envoy_without_filter_proxies_to_demo_upstream() {
    let stack = Stack::builder().without_filter().start();
    let response = stack.get("/hello/world?x=1", &[("x-custom", "abc")]);
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.echo();
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.path, "/hello/world");
    assert_eq!(echo.header("x-custom"), Some("abc"));
    assert_eq!(stack.envoy().control_plane_requests(), 0);
}

#[test]
fn admin_api_creates_workspaces_and_keys() {
    let stack = Stack::builder().without_envoy().start();
    let admin = stack.admin();
    let key = admin.new_key(Plan::Pro);
    assert!(
        tollgate_integration_tests::keys::is_well_formed(&key.secret),
        "issued secret does not follow docs/protocol.md: {}",
        key.secret
    );
    let fetched = admin.get_key(&key.id);
    assert_eq!(fetched["id"], json!(key.id));
    assert!(
        fetched.get("secret").is_none(),
        "GET must not return the secret: {fetched}"
    );

    let anonymous = request(
        "POST",
        &format!("{}/v1/workspaces", stack.control_plane_url()),
        &[],
        Some(&json!({"name": "nope", "plan": "pro"})),
    );
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
}
