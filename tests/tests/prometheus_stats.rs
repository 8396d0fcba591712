//! The filter's counters in Envoy's `/stats/prometheus`: one name for both builds, the build and
//! the denial's code as tags (`stats_config` of envoy/*.yaml and of the harness's bootstrap;
//! docs/metrics.md).

use std::time::Duration;

use tollgate_integration_tests::envoy::STATS_CONFIG;
use tollgate_integration_tests::keys::bad_checksum_key;
use tollgate_integration_tests::paths::repo_root;
use tollgate_integration_tests::{assert_denied, eventually, FilterBuild, Stack};

/// The `filter_build` tag Envoy extracts from the build's stats prefix.
fn build_tag(build: FilterBuild) -> &'static str {
    match build {
        FilterBuild::Wasm => "wasm",
        FilterBuild::Native => "dynamicmodules",
    }
}

#[test]
fn denials_are_tagged_with_their_reason_in_prometheus_output() {
    let stack = Stack::builder().without_usage().start();
    assert_denied(&stack.get("/a", &[]), 401, "Missing API Key");
    // A bad checksum: denied without a lookup, so nothing else moves.
    let key = bad_checksum_key();
    for _ in 0..2 {
        assert_denied(&stack.get_with_key("/a", &key), 401, "Invalid API Key");
    }
    let build = build_tag(stack.envoy().filter);
    let expected = [
        format!("envoy_tollgate_requests_denied{{filter_build=\"{build}\",reason=\"invalid_key\"}} 2"),
        format!("envoy_tollgate_requests_denied{{filter_build=\"{build}\",reason=\"missing_key\"}} 1"),
        format!("envoy_tollgate_requests_denied{{filter_build=\"{build}\",reason=\"quota_exceeded\"}} 0"),
        format!("envoy_tollgate_requests_allowed{{filter_build=\"{build}\"}} 0"),
    ];
    // Counts reach Envoy on the filter's tick.
    let body = eventually(Duration::from_secs(10), Duration::from_millis(200), || {
        let response = stack.envoy().admin_get("/stats/prometheus");
        assert_eq!(response.status, 200, "{response:?}");
        let lines: Vec<&str> = response.body.lines().collect();
        expected
            .iter()
            .all(|e| lines.contains(&e.as_str()))
            .then_some(response.body)
    });
    let body = body.unwrap_or_else(|| {
        let now = stack.envoy().admin_get("/stats/prometheus").body;
        let ours: Vec<&str> = now
            .lines()
            .filter(|l| l.contains("tollgate_requests"))
            .collect();
        panic!("expected {expected:#?} in /stats/prometheus; its tollgate lines: {ours:#?}")
    });
    assert!(
        body.contains("# TYPE envoy_tollgate_requests_denied counter"),
        "one counter family for every reason"
    );
    for prefix in ["wasmcustom", "dynamicmodulescustom"] {
        assert!(
            !body
                .lines()
                .any(|l| l.contains(&format!("{prefix}_tollgate"))),
            "a build's prefix left in a name"
        );
    }
}

/// The shipped bootstraps tag the filter's stats exactly as the harness's does, so the test
/// above checks what users run.
#[test]
fn shipped_bootstraps_tag_the_filter_stats_like_the_harness() {
    for file in ["envoy.yaml", "envoy-native.yaml", "envoy-compose.yaml"] {
        let path = repo_root().join("envoy").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(STATS_CONFIG),
            "{} lacks the harness's stats_config:\n{STATS_CONFIG}",
            path.display()
        );
    }
}
