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
    /// A parameter of the query string (`?api_key=...`).
    Query(String),
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
    /// Shared-data slots for the counters of keys with their own rate limits.
    pub key_rate_slots: usize,
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
    /// `meta` entries forwarded to the upstream: (name, `x-tollgate-meta-<name>`).
    pub forward_meta: Vec<(String, String)>,
}

mod compile;
mod raw;
#[cfg(test)]
mod tests;

use compile::*;
use raw::*;
/// A configuration error, always naming the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(super) fn field_error(field: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{field}: {message}"))
}

pub(super) fn section<T: serde::de::DeserializeOwned>(
    field: &str,
    value: Value,
) -> Result<T, ConfigError> {
    serde_json::from_value(value).map_err(|e| field_error(field, e))
}

pub(super) const MAX_TABLE: u64 = 1_000_000;

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
        let forward_meta = compile_forward_meta(match raw.forward_meta {
            None => Vec::new(),
            Some(value) => section("forward_meta", value)?,
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
            forward_meta,
        })
    }
}
