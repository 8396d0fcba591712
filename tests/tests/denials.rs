//! Every denial the filter answers itself, with its status and JSON body (docs/protocol.md).

use std::time::{Duration, SystemTime};

use serde_json::json;
use tollgate_integration_tests::http::raw_get;
use tollgate_integration_tests::keys::{bad_checksum_key, unknown_key};
use tollgate_integration_tests::time::rfc3339_in;
use tollgate_integration_tests::{assert_denied, assert_passed, eventually, Plan, Stack};

#[test]
fn missing_key_is_401_with_www_authenticate() {
    let stack = Stack::builder().without_usage().start();
    let response = stack.get("/anything", &[]);
    assert_denied(&response, 401, "Missing API Key");
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(!challenge.is_empty(), "no WWW-Authenticate: {response:?}");
    assert_eq!(stack.envoy().control_plane_requests(), 0);
}

#[test]
fn malformed_keys_are_401_invalid_without_a_lookup() {
    let stack = Stack::builder().without_usage().start();
    let good = unknown_key();
    let malformed = [
        "tg_short".to_string(),
        format!("{good}x"),            // too long
        format!("xx_{}", &good[3..]),  // wrong prefix
        format!("tg_-{}", &good[4..]), // outside the alphabet
        format!("TG_{}", &good[3..]),  // prefix is case-sensitive
        bad_checksum_key(),            // checksum mismatch
    ];
    for key in &malformed {
        assert_denied(&stack.get_with_key("/a", key), 401, "Invalid API Key");
        let bearer = format!("Bearer {key}");
        assert_denied(
            &stack.get("/a", &[("authorization", &bearer)]),
            401,
            "Invalid API Key",
        );
    }
    assert_eq!(
        stack.envoy().control_plane_requests(),
        0,
        "malformed keys must be rejected without asking the control plane"
    );
}

#[test]
fn unknown_well_formed_key_is_401_invalid() {
    let stack = Stack::start();
    let key = unknown_key();
    assert_denied(&stack.get_with_key("/a", &key), 401, "Invalid API Key");
    assert!(stack.envoy().control_plane_requests() >= 1);
    // Cached as invalid (negative_ttl): still denied.
    assert_denied(&stack.get_with_key("/a", &key), 401, "Invalid API Key");
}

#[test]
fn deactivated_key_is_401_inactive() {
    let stack = Stack::start();
    let admin = stack.admin();
    let key = admin.new_key(Plan::Pro);
    admin.set_active(&key.id, false);
    assert_denied(
        &stack.get_with_key("/a", &key.secret),
        401,
        "Inactive API Key",
    );
}

#[test]
fn expired_key_is_401_expired() {
    let stack = Stack::start();
    let admin = stack.admin();
    let (expires_at, instant) = rfc3339_in(Duration::from_secs(2));
    let key = admin.new_key_with(json!({ "expires_at": expires_at }));
    assert_passed(&stack.get_with_key("/a", &key.secret), &key);

    if let Ok(left) = instant.duration_since(SystemTime::now()) {
        std::thread::sleep(left + Duration::from_millis(100));
    }
    // The filter compares expires_at_ms with its clock, so the cached copy must not keep the key
    // alive; a little slack for clock granularity.
    let denied = eventually(Duration::from_secs(1), Duration::from_millis(100), || {
        let r = stack.get_with_key("/a", &key.secret);
        (r.status == 401).then_some(r)
    })
    .unwrap_or_else(|| stack.get_with_key("/a", &key.secret));
    assert_denied(&denied, 401, "Expired API Key");
}

#[test]
fn endpoint_outside_allowed_is_403() {
    let stack = Stack::start();
    let admin = stack.admin();
    let key = admin.new_key_with(json!({
        "allowed": [
            {"method": "GET", "path": "/v1/things/*"},
            {"method": "*", "path": "/public/**"}
        ]
    }));
    let h = [("x-api-key", key.secret.as_str())];
    let forbidden = "API key not allowed to access this endpoint";

    assert_passed(&stack.request("GET", "/v1/things/42", &h), &key);
    assert_passed(&stack.request("GET", "/v1/things/42?page=2", &h), &key);
    assert_passed(&stack.request("DELETE", "/public", &h), &key);
    assert_passed(&stack.request("POST", "/public/a/b/c", &h), &key);

    assert_denied(&stack.request("POST", "/v1/things/42", &h), 403, forbidden);
    assert_denied(
        &stack.request("GET", "/v1/things/42/parts", &h),
        403,
        forbidden,
    );
    assert_denied(&stack.request("GET", "/v1/things", &h), 403, forbidden);
    assert_denied(&stack.request("GET", "/v1/other", &h), 403, forbidden);
}

#[test]
fn repeated_key_header_is_401_invalid() {
    let stack = Stack::start();
    let key = stack.admin().new_key(Plan::Pro);
    let port = stack.envoy().listen_port;
    let twice = raw_get(
        port,
        "/a",
        &[("x-api-key", &key.secret), ("x-api-key", &key.secret)],
    );
    assert_denied(&twice, 401, "Invalid API Key");
    // The same key once passes.
    let once = raw_get(port, "/a", &[("x-api-key", &key.secret)]);
    assert_passed(&once, &key);
}

#[test]
fn control_plane_down_and_key_not_cached_is_503() {
    let mut stack = Stack::start();
    stack.kill_control_plane();
    assert_denied(
        &stack.get_with_key("/a", &unknown_key()),
        503,
        "Key verification unavailable",
    );
    // Malformed keys and missing keys need no lookup and keep their answers.
    assert_denied(
        &stack.get_with_key("/a", "tg_short"),
        401,
        "Invalid API Key",
    );
    assert_denied(&stack.get("/a", &[]), 401, "Missing API Key");
}
