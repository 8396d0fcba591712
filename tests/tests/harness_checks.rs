//! The harness itself, without the filter: the processes start, Envoy proxies to the demo
//! upstream, and the admin API answers; `TOLLGATE_TEST_FILTER` picks the filter build and the
//! harness renders and names each build's parts. If these fail, the filter tests cannot mean
//! anything.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tollgate_integration_tests::envoy::{filter_yaml, render, render_with_access_log};
use tollgate_integration_tests::http::{free_port, request};
use tollgate_integration_tests::tools::program;
use tollgate_integration_tests::{EnvoyOptions, FilterBuild, Plan, Stack, FILTER_TOKEN};

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

/// `TOLLGATE_TEST_FILTER`: unset is wasm, `wasm` and `native` name their builds, anything else
/// (an empty value, another case, a typo) is refused naming the variable and the allowed values.
#[test]
fn test_filter_variable_parses_its_values_and_defaults_to_wasm() {
    use std::ffi::OsStr;
    assert_eq!(FilterBuild::from_variable(None), FilterBuild::Wasm);
    assert_eq!(
        FilterBuild::from_variable(Some(OsStr::new("wasm"))),
        FilterBuild::Wasm
    );
    assert_eq!(
        FilterBuild::from_variable(Some(OsStr::new("native"))),
        FilterBuild::Native
    );
    for bad in ["", "Native", "WASM", "v8", "native ", "dynamic_module"] {
        let message = FilterBuild::parse(Some(OsStr::new(bad)))
            .expect_err(&format!("{bad:?} must be refused"));
        for needle in [
            "TOLLGATE_TEST_FILTER",
            "TOLLGATE_TEST_FILTER=wasm",
            "TOLLGATE_TEST_FILTER=native",
            "unset",
        ] {
            assert!(
                message.contains(needle),
                "message for {bad:?} lacks {needle:?}: {message}"
            );
        }
    }
    for build in FilterBuild::ALL {
        assert_eq!(
            FilterBuild::from_variable(Some(OsStr::new(build.name()))),
            build
        );
    }
    // The build this process runs is the one the environment names.
    let variable = std::env::var_os("TOLLGATE_TEST_FILTER");
    assert_eq!(
        FilterBuild::under_test(),
        FilterBuild::from_variable(variable.as_deref())
    );
}

#[test]
#[should_panic(
    expected = "TOLLGATE_TEST_FILTER=\"wasm32\" is not a filter build: set \
                           TOLLGATE_TEST_FILTER=wasm"
)]
fn an_unknown_test_filter_stops_the_test() {
    FilterBuild::from_variable(Some(std::ffi::OsStr::new("wasm32")));
}

/// What differs between the builds, as the harness names it.
#[test]
fn filter_stats_and_filter_state_are_named_per_build() {
    assert_eq!(
        FilterBuild::Wasm.stat_name("usage.dropped"),
        "wasmcustom.tollgate.usage.dropped"
    );
    assert_eq!(
        FilterBuild::Native.stat_name("usage.dropped"),
        "dynamicmodulescustom.tollgate.usage.dropped"
    );
    assert_eq!(FilterBuild::Wasm.filter_state_key(), "wasm.tollgate");
    assert_eq!(FilterBuild::Native.filter_state_key(), "tollgate");
    for prefixed in [
        "wasmcustom.tollgate.usage.dropped",
        "dynamicmodulescustom.tollgate.usage.dropped",
        "tollgate.usage.dropped",
    ] {
        let refused = std::panic::catch_unwind(|| FilterBuild::Native.stat_name(prefixed));
        assert!(refused.is_err(), "{prefixed:?} must be refused");
    }
}

/// The filter as each build renders it: wasm as `envoy.filters.http.wasm` plus the
/// `envoy.bootstrap.wasm` usage service; native as `envoy.filters.http.dynamic_modules` and no
/// bootstrap extension, whatever `usage_service` says.
#[test]
fn each_build_renders_its_own_filter() {
    let config = json!({"failure_mode": "closed"});
    let (filter, bootstrap) = filter_yaml(
        FilterBuild::Wasm,
        Path::new("/x/tollgate.wasm"),
        &config,
        true,
    );
    assert!(filter.contains("name: envoy.filters.http.wasm"), "{filter}");
    assert!(filter.contains("\"/x/tollgate.wasm\""), "{filter}");
    assert!(
        filter.contains(r#"value: "{\"failure_mode\":\"closed\"}""#),
        "{filter}"
    );
    assert!(bootstrap.contains("envoy.bootstrap.wasm"), "{bootstrap}");
    assert!(
        bootstrap.contains("root_id: \"tollgate-usage\""),
        "{bootstrap}"
    );
    let (_, none) = filter_yaml(
        FilterBuild::Wasm,
        Path::new("/x/tollgate.wasm"),
        &config,
        false,
    );
    assert_eq!(none, "");

    for usage_service in [true, false] {
        let (filter, bootstrap) = filter_yaml(
            FilterBuild::Native,
            Path::new("/x/libtollgate_native.so"),
            &config,
            usage_service,
        );
        assert!(
            filter.contains("name: envoy.filters.http.dynamic_modules"),
            "{filter}"
        );
        assert!(filter.contains("filter_name: tollgate"), "{filter}");
        assert!(filter.contains("\"/x/libtollgate_native.so\""), "{filter}");
        assert!(filter.contains("do_not_close: true"), "{filter}");
        assert!(!filter.contains("wasm"), "{filter}");
        assert_eq!(bootstrap, "", "the native build has no bootstrap extension");
    }

    // The access log's filter-state key (no filter: renders without the built artifacts).
    for build in FilterBuild::ALL {
        let mut options = EnvoyOptions::new(1, 2);
        options.filter = build;
        options.plugin_config = None;
        options.access_log_file = true;
        let yaml = render_with_access_log(&options, 3, 4, Some(Path::new("/x/access.log")));
        let want = format!("%FILTER_STATE({}:PLAIN)%", build.filter_state_key());
        assert!(yaml.contains(&want), "{build}: no {want} in\n{yaml}");
        assert!(
            yaml.starts_with(&format!(
                "# Tollgate integration test, filter build: {build}\n"
            )),
            "{yaml}"
        );
        assert!(!yaml.contains("bootstrap_extensions"), "{yaml}");
    }
}

/// The bootstrap the tests start Envoy with, for the build under test, passes `envoy --mode
/// validate` (which loads the filter and runs its configuration).
#[test]
fn rendered_bootstrap_of_the_build_under_test_validates() {
    let options = EnvoyOptions::new(free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, render(&options, free_port(), free_port())).unwrap();
    let output = Command::new(program("envoy"))
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .env("TOLLGATE_FILTER_TOKEN", FILTER_TOKEN)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} build: envoy --mode validate failed ({}):\n{}{}",
        options.filter,
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A test that reads a filter metric by one build's full name would read 0 under the other:
/// the raw readers refuse it.
#[test]
fn raw_stats_refuse_a_build_prefixed_filter_metric() {
    let stack = Stack::builder().without_filter().start();
    let envoy = stack.envoy();
    assert_eq!(stack.get("/", &[]).status, 200);
    let upstream = envoy.settled_stat(
        "cluster.demo_upstream.upstream_rq_total",
        Duration::from_millis(300),
        Duration::from_secs(3),
    );
    assert_eq!(upstream, 1, "Envoy's own stats read as before");
    assert_eq!(envoy.filter_stat("requests.total"), 0);
    assert!(envoy.filter_stats_with_prefix("leases").is_empty());
    for name in [
        "wasmcustom.tollgate.usage.dropped",
        "dynamicmodulescustom.tollgate.usage.dropped",
    ] {
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| envoy.stat(name)));
        assert!(refused.is_err(), "stat({name:?}) must be refused");
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            envoy.stats_with_prefix(name)
        }));
        assert!(
            refused.is_err(),
            "stats_with_prefix({name:?}) must be refused"
        );
    }
}
