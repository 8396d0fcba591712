//! Harness for Tollgate's end-to-end tests.
//!
//! Everything runs for real: the Envoy binary from `make envoy`, the filter, the control plane
//! from `make control-plane` (`target/release/tollgate serve`) and its demo upstream (`tollgate
//! demo-upstream`). The filter is the build `TOLLGATE_TEST_FILTER` names ([`FilterBuild`]): the
//! proxy-wasm filter from `make wasm` (`target/tollgate.wasm`, the default) or the Envoy dynamic
//! module from `make native` (`target/libtollgate_native.so`). Tests name what differs between
//! the two through the harness: the filter's metrics with [`Envoy::filter_stat`], its
//! filter-state key with [`FilterBuild::filter_state_key`].
//!
//! A [`Stack`] starts the three processes on free ports with a fresh data directory, waits until
//! each is ready, and stops them when dropped. Each process writes its output to a log file; when
//! the test fails (the stack is dropped while panicking) the logs are printed and copied to
//! `tests/artifacts/<test name>/`.
//!
//! ```no_run
//! use tollgate_integration_tests::{Stack, Plan};
//! let stack = Stack::builder().cache_ttl("2s").start();
//! let key = stack.admin().new_key(Plan::Pro);
//! let response = stack.get("/hello", &[("x-api-key", &key.secret)]);
//! assert_eq!(response.status, 200);
//! ```

pub mod admin;
pub mod browser;
pub mod envoy;
pub mod filter_build;
pub mod http;
pub mod keys;
pub mod load;
pub mod logs;
pub mod paths;
pub mod postgres;
pub mod process;
pub mod records;
pub mod stack;
pub mod time;
pub mod tools;
pub mod wrk;

pub use admin::{Admin, CreatedKey, Plan};
pub use envoy::{Envoy, EnvoyOptions};
pub use filter_build::FilterBuild;
pub use http::{Echo, Response};
pub use postgres::Backend;
pub use stack::{eventually, Stack, StackBuilder};

/// Admin token the test control planes are started with (`TOLLGATE_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "tg-test-admin-token-4f1c2a9e";
/// Filter token the test control planes and Envoys are started with (`TOLLGATE_FILTER_TOKEN`).
pub const FILTER_TOKEN: &str = "tg-test-filter-token-8b7d3e10";

/// Asserts a filter denial: `status`, a JSON content type and `{"error": error}` (other fields,
/// such as `code`, are allowed).
#[track_caller]
pub fn assert_denied(response: &Response, status: u16, error: &str) {
    assert_eq!(
        response.status, status,
        "expected {status} {error:?}, got {response:?}"
    );
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "denial must be JSON, got content-type {content_type:?}: {response:?}"
    );
    assert_eq!(
        response.error().as_deref(),
        Some(error),
        "unexpected error body: {response:?}"
    );
}

/// Asserts that the request reached the demo upstream as `key` (identity headers present, key
/// material absent) and returns what the upstream saw.
#[track_caller]
pub fn assert_passed(response: &Response, key: &CreatedKey) -> Echo {
    assert_eq!(response.status, 200, "expected a pass, got {response:?}");
    let echo = response.echo();
    assert_eq!(
        echo.header_values("x-tollgate-key-id"),
        vec![key.id.as_str()],
        "x-tollgate-key-id seen by the upstream: {echo:?}"
    );
    assert_eq!(
        echo.header_values("x-tollgate-workspace-id"),
        vec![key.workspace_id.as_str()],
        "x-tollgate-workspace-id seen by the upstream: {echo:?}"
    );
    for (name, value) in &echo.headers {
        assert!(
            !value.contains(&key.secret),
            "the upstream saw the key in header {name}: {echo:?}"
        );
    }
    echo
}
