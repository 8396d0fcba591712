//! The edge keeps working from its cache when the control plane goes away.

use std::time::Duration;

use tollgate_integration_tests::keys::unknown_key;
use tollgate_integration_tests::{assert_denied, assert_passed, Plan, Stack};

#[test]
fn cached_key_passes_after_ttl_while_control_plane_is_down() {
    let mut stack = Stack::builder().cache_ttl("1s").start();
    let key = stack.admin().new_key(Plan::Pro);
    // Fresh connections land on both workers, so each has seen the key if caches are per worker.
    for _ in 0..10 {
        assert_passed(&stack.get_with_key("/a", &key.secret), &key);
    }

    stack.kill_control_plane();
    std::thread::sleep(Duration::from_millis(1600));
    for _ in 0..10 {
        assert_passed(&stack.get_with_key("/a", &key.secret), &key);
    }
    assert_denied(
        &stack.get_with_key("/a", &unknown_key()),
        503,
        "Key verification unavailable",
    );
}

#[test]
fn failure_mode_open_lets_unknown_key_through_without_identity() {
    let mut stack = Stack::builder().failure_mode("open").start();
    stack.kill_control_plane();
    let key = unknown_key();
    let response = stack.get(
        "/a",
        &[
            ("x-api-key", &key),
            // Spoofed identity must not survive a fail-open pass either.
            ("x-tollgate-key-id", "key_spoofed"),
            ("x-tollgate-workspace-id", "ws_spoofed"),
        ],
    );
    assert_eq!(response.status, 200, "{response:?}");
    let echo = response.echo();
    assert!(
        echo.header("x-tollgate-key-id").is_none()
            && echo.header("x-tollgate-workspace-id").is_none(),
        "fail-open pass must not carry identity headers: {echo:?}"
    );
    // Fail-open is about verification being unavailable, not about missing or malformed keys.
    assert_denied(&stack.get("/a", &[]), 401, "Missing API Key");
    assert_denied(
        &stack.get_with_key("/a", "tg_short"),
        401,
        "Invalid API Key",
    );
}
