//! Requests with a valid key reach the upstream with the identity headers and without the key.

use tollgate_integration_tests::{assert_passed, Plan, Stack};

#[test]
fn x_api_key_header_passes_with_identity_headers() {
    let stack = Stack::start();
    let key = stack.admin().new_key(Plan::Pro);
    let response = stack.get("/v1/things?limit=5", &[("x-api-key", &key.secret)]);
    let echo = assert_passed(&response, &key);
    assert_eq!(echo.path, "/v1/things");
    assert!(
        echo.header("x-api-key").is_none(),
        "hide_key: the upstream must not get x-api-key: {echo:?}"
    );
}

#[test]
fn bearer_token_passes_with_identity_headers() {
    let stack = Stack::start();
    let key = stack.admin().new_key(Plan::Pro);
    let bearer = format!("Bearer {}", key.secret);
    let echo = assert_passed(&stack.get("/a", &[("authorization", &bearer)]), &key);
    assert!(
        echo.header("authorization").is_none(),
        "hide_key: the upstream must not get Authorization: {echo:?}"
    );
}

#[test]
fn client_cannot_spoof_identity_headers() {
    let stack = Stack::start();
    let key = stack.admin().new_key(Plan::Pro);
    let response = stack.get(
        "/a",
        &[
            ("x-api-key", &key.secret),
            ("x-tollgate-key-id", "key_spoofed"),
            ("x-tollgate-workspace-id", "ws_spoofed"),
            ("x-tollgate-plan", "enterprise"),
        ],
    );
    let echo = assert_passed(&response, &key);
    assert!(
        echo.header("x-tollgate-plan").is_none(),
        "incoming x-tollgate-* headers must be removed: {echo:?}"
    );
}

#[test]
fn hide_key_false_forwards_the_key_header() {
    let stack = Stack::builder().set("/hide_key", false).start();
    let key = stack.admin().new_key(Plan::Pro);
    let response = stack.get("/a", &[("x-api-key", &key.secret)]);
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.echo();
    assert_eq!(echo.header("x-api-key"), Some(key.secret.as_str()));
    assert_eq!(echo.header("x-tollgate-key-id"), Some(key.id.as_str()));
}
