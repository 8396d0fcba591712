//! Shipped Envoy configurations and plugin configuration errors.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tollgate_integration_tests::envoy::default_plugin_config;
use tollgate_integration_tests::paths::{native_module, repo_root, wasm_file};
use tollgate_integration_tests::tools::program;
use tollgate_integration_tests::{Stack, FILTER_TOKEN};

#[test]
fn unknown_plugin_configuration_field_stops_envoy() {
    let mut config = default_plugin_config();
    config["no_such_option"] = json!(true);
    let mut stack = Stack::builder()
        .plugin_config(Some(config))
        .start_unchecked();
    let envoy = stack.envoy_mut();
    // Either build refuses the configuration while Envoy loads it and Envoy exits before
    // serving. Observed with Envoy 1.40 and the wasm build: on_configure failing makes Envoy log
    // "Unable to create Wasm plugin" and exit with status 1. The native build fails
    // on_http_filter_config_new the same way; the filter's own message names the field.
    let status = envoy.wait_exit(Duration::from_secs(30));
    let log = envoy.log();
    let status = status.unwrap_or_else(|| panic!("Envoy kept running with a bad config:\n{log}"));
    assert!(!status.success(), "Envoy exited with {status}");
    assert!(
        log.contains("no_such_option"),
        "Envoy's log does not name the unknown field:\n{log}"
    );
}

#[test]
fn nested_unknown_field_is_rejected_too() {
    let mut config = default_plugin_config();
    config["cache"]["ttl_seconds"] = json!(5);
    let mut stack = Stack::builder()
        .plugin_config(Some(config))
        .start_unchecked();
    let envoy = stack.envoy_mut();
    let status = envoy.wait_exit(Duration::from_secs(30));
    let log = envoy.log();
    let status = status.unwrap_or_else(|| panic!("Envoy kept running with a bad config:\n{log}"));
    assert!(!status.success(), "Envoy exited with {status}");
    assert!(
        log.contains("ttl_seconds"),
        "Envoy's log does not name the unknown field:\n{log}"
    );
}

/// `envoy --mode validate` loads the filter and runs its on_configure, so this checks the
/// shipped plugin configurations as well as Envoy's. It checks what ships, whatever
/// `TOLLGATE_TEST_FILTER` says: each configuration loads the build it names (today every one
/// names `tollgate.wasm`), so that build must be there.
#[test]
fn shipped_envoy_configs_validate() {
    let dir = tempfile::tempdir().unwrap();
    let mut configs: Vec<_> = std::fs::read_dir(repo_root().join("envoy"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    configs.sort();
    assert!(
        configs.iter().any(|p| p.ends_with("envoy.yaml")),
        "envoy/envoy.yaml missing"
    );
    let mut failures = Vec::new();
    for config in &configs {
        let text = std::fs::read_to_string(config).unwrap();
        // Container configs name the mounted filter; the others are relative to the repo root.
        // A configuration that names a build needs it built (the lookup says how when not).
        let mut text = text;
        for (file, built) in [
            ("tollgate.wasm", wasm_file as fn() -> _),
            ("libtollgate_native.so", native_module),
        ] {
            if text.contains(file) {
                let built = built().display().to_string();
                text = text.replace(&format!("/etc/tollgate/{file}"), &built);
            }
        }
        let copy = dir.path().join(config.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        let output = Command::new(program("envoy"))
            .args(["--mode", "validate", "--log-level", "warn", "-c"])
            .arg(&copy)
            .current_dir(repo_root())
            .env("TOLLGATE_FILTER_TOKEN", FILTER_TOKEN)
            .output()
            .unwrap();
        if !output.status.success() {
            failures.push(format!(
                "{}: {}\n{}{}",
                config.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
