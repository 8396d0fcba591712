//! Plugin configuration: parsed with serde (unknown fields rejected), then compiled into the
//! validated `FilterConfig` that every context shares through an `Rc`.

use crate::duration::parse_duration;
use crate::ip_block::IpPolicy;
use crate::routes::RouteTemplate;
use crate::upstream::Upstream;
use crate::usage_buffer::DeliveryPolicy;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Environment variable read (through Envoy's `host_env_keys`) when no token is configured.
pub const FILTER_TOKEN_ENV: &str = "TOLLGATE_FILTER_TOKEN";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The whole header value is the key.
    Header(String),
    /// `<header>: Bearer <key>`.
    Bearer(String),
}

impl KeySource {
    pub fn header(&self) -> &str {
        match self {
            KeySource::Header(name) | KeySource::Bearer(name) => name,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// A key never seen is denied with 503 while the control plane is unreachable.
    Closed,
    /// A key never seen passes (without identity headers) while the control plane is unreachable.
    Open,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_keys: usize,
    pub max_invalid_keys: usize,
}

#[derive(Debug, Clone)]
pub struct UsageConfig {
    pub enabled: bool,
    pub routes: Vec<RouteTemplate>,
    pub delivery: DeliveryPolicy,
}

/// Which rate-limit headers go on the responses of keys with plan limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitHeaders {
    /// `RateLimit-Policy` + `RateLimit` (IETF httpapi draft) and `X-RateLimit-*`.
    All,
    /// Only the IETF pair.
    Ietf,
    None,
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// 401 (default, as the product documents) or 429 for an exhausted quota.
    pub quota_status: u32,
    pub headers: LimitHeaders,
    /// Shared-data slots for workspace rate counters.
    pub rate_slots: usize,
    /// Envoy instances sharing the plan limits: each enforces `ceil(limit / instances)`
    /// (plan-limit counters live in one Envoy's shared data).
    pub instances: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIpSource {
    Downstream,
    /// The address `trusted_hops` entries from the right of `x-forwarded-for`.
    ForwardedFor {
        trusted_hops: usize,
    },
}

#[derive(Debug, Clone)]
pub struct FilterConfig {
    pub control_plane: Upstream,
    pub filter_token: String,
    pub key_sources: Vec<KeySource>,
    pub cache: CacheConfig,
    pub failure_mode: FailureMode,
    pub hide_key: bool,
    pub usage: UsageConfig,
    pub limits: LimitsConfig,
    /// `None` when IP blocking is disabled.
    pub ip_blocking: Option<IpPolicy>,
    pub client_ip: ClientIpSource,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    control_plane: Option<Value>,
    key_sources: Option<Value>,
    cache: Option<Value>,
    failure_mode: Option<Value>,
    hide_key: Option<Value>,
    usage: Option<Value>,
    limits: Option<Value>,
    ip_blocking: Option<Value>,
    client_ip: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    quota_status: Option<u32>,
    headers: Option<LimitHeaders>,
    rate_slots: Option<u64>,
    instances: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIpBlocking {
    enabled: Option<bool>,
    max_failures: Option<u64>,
    window: Option<String>,
    block_for: Option<String>,
    table_size: Option<u64>,
    max_blocked: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClientIp {
    source: Option<String>,
    trusted_hops: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUsage {
    enabled: Option<bool>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    batch_size: Option<u64>,
    flush_interval: Option<String>,
    max_buffered: Option<u64>,
    max_backoff: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: String,
    path: String,
    credits: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControlPlane {
    cluster: String,
    authority: Option<String>,
    timeout: Option<String>,
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawKeySource {
    Header(String),
    Bearer(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    ttl: Option<String>,
    negative_ttl: Option<String>,
    max_keys: Option<u64>,
    max_invalid_keys: Option<u64>,
}

/// A configuration error, always naming the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn field_error(field: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{field}: {message}"))
}

fn section<T: serde::de::DeserializeOwned>(field: &str, value: Value) -> Result<T, ConfigError> {
    serde_json::from_value(value).map_err(|e| field_error(field, e))
}

const MAX_TABLE: u64 = 1_000_000;

impl FilterConfig {
    /// `env` looks up the VM's environment (std::env in the filter, a map in tests).
    pub fn parse(
        bytes: &[u8],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<FilterConfig, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(bytes)
            .map_err(|e| ConfigError(format!("plugin configuration: {e}")))?;

        let control_plane = raw
            .control_plane
            .ok_or_else(|| field_error("control_plane", "is required"))?;
        let cp: RawControlPlane = section("control_plane", control_plane)?;
        let timeout = duration_field("control_plane.timeout", cp.timeout, Duration::from_secs(1))?;
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            return Err(field_error(
                "control_plane.timeout",
                "must be between 1ms and 60s",
            ));
        }
        let control_plane = Upstream::new(cp.cluster, cp.authority, timeout)
            .map_err(|e| field_error("control_plane", e))?;
        let filter_token = match cp.token {
            Some(token) => token,
            None => env(FILTER_TOKEN_ENV).ok_or_else(|| {
                field_error(
                    "control_plane.token",
                    format!(
                        "not set, and {FILTER_TOKEN_ENV} is not in the VM environment \
                         (list it in vm_config.environment_variables.host_env_keys)"
                    ),
                )
            })?,
        };
        if filter_token.is_empty() || !filter_token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(field_error(
                "control_plane.token",
                "must be non-empty printable ASCII without spaces",
            ));
        }

        let key_sources = match raw.key_sources {
            None => vec![
                KeySource::Header("x-api-key".into()),
                KeySource::Bearer("authorization".into()),
            ],
            Some(value) => {
                let list: Vec<RawKeySource> = section("key_sources", value)?;
                if list.is_empty() || list.len() > 8 {
                    return Err(field_error("key_sources", "must list 1 to 8 sources"));
                }
                list.into_iter()
                    .enumerate()
                    .map(|(i, source)| compile_source(i, source))
                    .collect::<Result<_, _>>()?
            }
        };

        let raw_cache: RawCache = match raw.cache {
            None => RawCache::default(),
            Some(value) => section("cache", value)?,
        };
        let cache = CacheConfig {
            ttl: bounded_duration("cache.ttl", raw_cache.ttl, 5)?,
            negative_ttl: bounded_duration("cache.negative_ttl", raw_cache.negative_ttl, 30)?,
            max_keys: table_size("cache.max_keys", raw_cache.max_keys, 8192)?,
            max_invalid_keys: table_size(
                "cache.max_invalid_keys",
                raw_cache.max_invalid_keys,
                4096,
            )?,
        };

        let failure_mode = match raw.failure_mode {
            None => FailureMode::Closed,
            Some(value) => section("failure_mode", value)?,
        };
        let hide_key = match raw.hide_key {
            None => true,
            Some(value) => section("hide_key", value)?,
        };

        let usage = compile_usage(match raw.usage {
            None => RawUsage::default(),
            Some(value) => section("usage", value)?,
        })?;

        let limits = compile_limits(match raw.limits {
            None => RawLimits::default(),
            Some(value) => section("limits", value)?,
        })?;
        let ip_blocking = compile_ip_blocking(match raw.ip_blocking {
            None => RawIpBlocking::default(),
            Some(value) => section("ip_blocking", value)?,
        })?;
        let client_ip = compile_client_ip(match raw.client_ip {
            None => RawClientIp::default(),
            Some(value) => section("client_ip", value)?,
        })?;

        Ok(FilterConfig {
            control_plane,
            filter_token,
            key_sources,
            cache,
            failure_mode,
            hide_key,
            usage,
            limits,
            ip_blocking,
            client_ip,
        })
    }
}

fn compile_limits(raw: RawLimits) -> Result<LimitsConfig, ConfigError> {
    let quota_status = raw.quota_status.unwrap_or(401);
    if quota_status != 401 && quota_status != 429 {
        return Err(field_error("limits.quota_status", "must be 401 or 429"));
    }
    Ok(LimitsConfig {
        quota_status,
        headers: raw.headers.unwrap_or(LimitHeaders::All),
        rate_slots: table_size("limits.rate_slots", raw.rate_slots, 4096)?,
        instances: match raw.instances.unwrap_or(1) {
            n @ 1..=1000 => n,
            _ => {
                return Err(field_error(
                    "limits.instances",
                    "must be between 1 and 1000",
                ))
            }
        },
    })
}

fn compile_ip_blocking(raw: RawIpBlocking) -> Result<Option<IpPolicy>, ConfigError> {
    let max_failures = raw.max_failures.unwrap_or(20);
    if !(1..=1_000_000).contains(&max_failures) {
        return Err(field_error(
            "ip_blocking.max_failures",
            "must be between 1 and 1000000",
        ));
    }
    let window = bounded_duration("ip_blocking.window", raw.window, 60)?;
    let block_for = duration_field(
        "ip_blocking.block_for",
        raw.block_for,
        Duration::from_secs(300),
    )?;
    if block_for.is_zero() || block_for > Duration::from_secs(86_400) {
        return Err(field_error(
            "ip_blocking.block_for",
            "must be between 1ms and 24h",
        ));
    }
    let policy = IpPolicy {
        max_failures,
        window_ms: window.as_millis() as u64,
        block_ms: block_for.as_millis() as u64,
        table_size: table_size("ip_blocking.table_size", raw.table_size, 4096)?,
        max_blocked: table_size("ip_blocking.max_blocked", raw.max_blocked, 1024)?.min(100_000),
    };
    Ok(raw.enabled.unwrap_or(true).then_some(policy))
}

fn compile_client_ip(raw: RawClientIp) -> Result<ClientIpSource, ConfigError> {
    match raw.source.as_deref().unwrap_or("downstream") {
        "downstream" => {
            if raw.trusted_hops.is_some() {
                return Err(field_error(
                    "client_ip.trusted_hops",
                    "only applies with source x_forwarded_for",
                ));
            }
            Ok(ClientIpSource::Downstream)
        }
        "x_forwarded_for" => {
            let hops = raw.trusted_hops.unwrap_or(1);
            if !(1..=10).contains(&hops) {
                return Err(field_error(
                    "client_ip.trusted_hops",
                    "must be between 1 and 10",
                ));
            }
            Ok(ClientIpSource::ForwardedFor {
                trusted_hops: hops as usize,
            })
        }
        other => Err(field_error(
            "client_ip.source",
            format!("'{other}' is not downstream or x_forwarded_for"),
        )),
    }
}

fn compile_usage(raw: RawUsage) -> Result<UsageConfig, ConfigError> {
    if raw.routes.len() > 1_000 {
        return Err(field_error("usage.routes", "at most 1000 routes"));
    }
    let routes = raw
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            RouteTemplate::compile(&r.method, &r.path, r.credits.unwrap_or(1))
                .map_err(|e| field_error(&format!("usage.routes[{i}]"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let batch_size = raw.batch_size.unwrap_or(500);
    if !(1..=10_000).contains(&batch_size) {
        return Err(field_error(
            "usage.batch_size",
            "must be between 1 and 10000",
        ));
    }
    // Default: 60 s of records at 5,000 requests/s.
    let max_buffered = raw.max_buffered.unwrap_or(300_000);
    if max_buffered < batch_size || max_buffered > 10_000_000 {
        return Err(field_error(
            "usage.max_buffered",
            "must be between usage.batch_size and 10000000",
        ));
    }
    let flush = bounded_duration("usage.flush_interval", raw.flush_interval, 1)?;
    let max_backoff = duration_field(
        "usage.max_backoff",
        raw.max_backoff,
        Duration::from_secs(30),
    )?;
    if max_backoff < Duration::from_millis(100) || max_backoff > Duration::from_secs(600) {
        return Err(field_error(
            "usage.max_backoff",
            "must be between 100ms and 10m",
        ));
    }
    Ok(UsageConfig {
        enabled: raw.enabled.unwrap_or(true),
        routes,
        delivery: DeliveryPolicy {
            batch_size: batch_size as usize,
            max_age_ms: flush.as_millis() as u64,
            max_records: max_buffered as usize,
            min_backoff_ms: 250.min(max_backoff.as_millis() as u64),
            max_backoff_ms: max_backoff.as_millis() as u64,
        },
    })
}

fn compile_source(index: usize, source: RawKeySource) -> Result<KeySource, ConfigError> {
    let field = format!("key_sources[{index}]");
    let (name, make): (String, fn(String) -> KeySource) = match source {
        RawKeySource::Header(name) => (name, KeySource::Header),
        RawKeySource::Bearer(name) => (name, KeySource::Bearer),
    };
    let valid = !name.is_empty()
        && !name.starts_with(':')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(field_error(
            &field,
            format!("'{name}' is not a lower-case HTTP header name"),
        ));
    }
    Ok(make(name))
}

fn duration_field(
    field: &str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => parse_duration(&text).map_err(|e| field_error(field, e)),
    }
}

fn bounded_duration(
    field: &str,
    value: Option<String>,
    default_secs: u64,
) -> Result<Duration, ConfigError> {
    let duration = duration_field(field, value, Duration::from_secs(default_secs))?;
    if duration.is_zero() || duration > Duration::from_secs(3600) {
        return Err(field_error(field, "must be between 1ms and 1h"));
    }
    Ok(duration)
}

fn table_size(field: &str, value: Option<u64>, default: u64) -> Result<usize, ConfigError> {
    let size = value.unwrap_or(default);
    if size == 0 || size > MAX_TABLE {
        return Err(field_error(
            field,
            format!("must be between 1 and {MAX_TABLE}"),
        ));
    }
    Ok(size as usize)
}

#[cfg(test)]
mod tests {
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
        assert_eq!(config.limits.headers, LimitHeaders::All);
        let ip = config.ip_blocking.unwrap();
        assert_eq!(
            (ip.max_failures, ip.window_ms, ip.block_ms),
            (20, 60_000, 300_000)
        );
        assert_eq!(config.client_ip, ClientIpSource::Downstream);
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
        assert_eq!(config.key_sources[1].header(), "x-key");
        assert_eq!(config.cache.negative_ttl, Duration::from_secs(60));
        assert_eq!(config.cache.max_invalid_keys, 4);
        assert_eq!(config.failure_mode, FailureMode::Open);
        assert!(!config.hide_key);
    }
}
