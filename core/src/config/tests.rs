use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(json: &str) -> Result<FilterConfig, ConfigError> {
    FilterConfig::parse(json.as_bytes(), no_env)
}

const MINIMAL: &str = r#"{"control_plane":{"cluster":"cp","token":"t0k"}}"#;

#[test]
fn minimal_config_gets_documented_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.control_plane.cluster, "cp");
    assert_eq!(config.control_plane.authority, "cp");
    assert_eq!(config.control_plane.timeout, Duration::from_secs(1));
    assert_eq!(
        config.key_sources,
        vec![
            KeySource::Header("x-api-key".into()),
            KeySource::Bearer("authorization".into())
        ]
    );
    assert_eq!(config.cache.ttl, Duration::from_secs(5));
    assert_eq!(config.cache.negative_ttl, Duration::from_secs(30));
    assert_eq!(config.cache.max_keys, 8192);
    assert_eq!(config.failure_mode, FailureMode::Closed);
    assert!(config.hide_key);
    assert!(config.usage.enabled);
    assert_eq!(config.usage.delivery.batch_size, 500);
    assert_eq!(config.usage.delivery.max_records, 300_000);
    assert_eq!(config.usage.delivery.max_age_ms, 1_000);
    assert_eq!(config.limits.quota_status, 401);
    assert_eq!(config.limits.headers, LimitHeaders::Ietf);
    let ip = config.ip_blocking.unwrap();
    assert_eq!(
        (ip.max_failures, ip.window_ms, ip.block_ms),
        (20, 60_000, 300_000)
    );
    assert_eq!(config.client_ip, ClientIpSource::Downstream);
    assert_eq!(config.limits.key_rate_slots, 16_384);
    assert!(
        config.forward_meta.is_empty(),
        "no meta leaves unless listed"
    );
}

#[test]
fn forwarded_for_and_disabled_blocking() {
    let config = parse(
        r#"{"control_plane":{"cluster":"cp","token":"t"},
            "client_ip":{"source":"x_forwarded_for","trusted_hops":2},
            "ip_blocking":{"enabled":false},"limits":{"quota_status":429,"headers":"ietf"}}"#,
    )
    .unwrap();
    assert_eq!(
        config.client_ip,
        ClientIpSource::ForwardedFor { trusted_hops: 2 }
    );
    assert!(config.ip_blocking.is_none());
    assert_eq!(config.limits.quota_status, 429);
}

#[test]
fn token_falls_back_to_the_vm_environment() {
    let json = r#"{"control_plane":{"cluster":"cp"}}"#;
    let err = parse(json).unwrap_err();
    assert!(err.0.starts_with("control_plane.token:"), "{err}");
    let config = FilterConfig::parse(json.as_bytes(), |name| {
        (name == FILTER_TOKEN_ENV).then(|| "from-env".to_string())
    })
    .unwrap();
    assert_eq!(config.filter_token, "from-env");
}

#[test]
fn every_error_names_its_field() {
    let cases = [
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"bogus":1}"#,
            "bogus",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t","retries":3}}"#,
            "control_plane:",
        ),
        (
            r#"{"control_plane":{"cluster":"","token":"t"}}"#,
            "control_plane:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t","timeout":"5"}}"#,
            "control_plane.timeout:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t","timeout":"2m"}}"#,
            "control_plane.timeout:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"cache":{"ttl":"0s"}}"#,
            "cache.ttl:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"cache":{"ttll":"5s"}}"#,
            "cache:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"cache":{"max_keys":0}}"#,
            "cache.max_keys:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"key_sources":[]}"#,
            "key_sources:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"key_sources":[{"header":"X-Key"}]}"#,
            "key_sources[0]:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"key_sources":[{"cookie":"k"}]}"#,
            "key_sources:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"failure_mode":"sometimes"}"#,
            "failure_mode:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"hide_key":"yes"}"#,
            "hide_key:",
        ),
        (r#"{"cache":{}}"#, "control_plane:"),
        ("not json", "plugin configuration:"),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"usage":{"routes":[{"method":"GET","path":"x"}]}}"#,
            "usage.routes[0]:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"usage":{"batch_size":0}}"#,
            "usage.batch_size:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"usage":{"batch_size":10,"max_buffered":5}}"#,
            "usage.max_buffered:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"usage":{"flush":"1s"}}"#,
            "usage:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"key_sources":[{"query":"api key"}]}"#,
            "key_sources[0]:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"forward_meta":["Tier"]}"#,
            "forward_meta[0]:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"forward_meta":"tier"}"#,
            "forward_meta:",
        ),
        (
            r#"{"control_plane":{"cluster":"cp","token":"t"},"limits":{"key_rate_slots":0}}"#,
            "limits.key_rate_slots:",
        ),
    ];
    for (json, field) in cases {
        let err = parse(json).expect_err(json);
        assert!(err.0.contains(field), "{json} gave {err}, expected {field}");
    }
}

#[test]
fn custom_sources_and_modes_are_kept_in_order() {
    let config = parse(
        r#"{"control_plane":{"cluster":"cp","authority":"cp.internal","token":"t","timeout":"250ms"},
            "key_sources":[{"bearer":"authorization"},{"header":"x-key"}],
            "cache":{"ttl":"2s","negative_ttl":"1m","max_keys":16,"max_invalid_keys":4},
            "failure_mode":"open","hide_key":false}"#,
    )
    .unwrap();
    assert_eq!(config.control_plane.authority, "cp.internal");
    assert_eq!(config.control_plane.timeout, Duration::from_millis(250));
    assert_eq!(
        config.key_sources[0],
        KeySource::Bearer("authorization".into())
    );
    assert_eq!(config.key_sources[1], KeySource::Header("x-key".into()));
    assert_eq!(config.cache.negative_ttl, Duration::from_secs(60));
    assert_eq!(config.cache.max_invalid_keys, 4);
    assert_eq!(config.failure_mode, FailureMode::Open);
    assert!(!config.hide_key);
    let config = parse(
        r#"{"control_plane":{"cluster":"cp","token":"t"},
            "key_sources":[{"query":"api_key"}],"forward_meta":["tier","region-1"]}"#,
    )
    .unwrap();
    assert_eq!(config.key_sources, [KeySource::Query("api_key".into())]);
    assert_eq!(
        config.forward_meta,
        [
            ("tier".to_string(), "x-tollgate-meta-tier".to_string()),
            (
                "region-1".to_string(),
                "x-tollgate-meta-region-1".to_string()
            ),
        ]
    );
}
