//! From the written configuration (`raw.rs`) to the validated one: defaults, bounds, and an
//! error naming the field for every bad value.

use super::*;

pub(super) fn compile_limits(raw: RawLimits) -> Result<LimitsConfig, ConfigError> {
    let quota_status = raw.quota_status.unwrap_or(401);
    if quota_status != 401 && quota_status != 429 {
        return Err(field_error("limits.quota_status", "must be 401 or 429"));
    }
    Ok(LimitsConfig {
        quota_status,
        headers: raw.headers.unwrap_or(LimitHeaders::Ietf),
        rate_slots: table_size("limits.rate_slots", raw.rate_slots, 4096)?,
        key_rate_slots: table_size("limits.key_rate_slots", raw.key_rate_slots, 16_384)?,
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

pub(super) fn compile_ip_blocking(raw: RawIpBlocking) -> Result<Option<IpPolicy>, ConfigError> {
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

pub(super) fn compile_client_ip(raw: RawClientIp) -> Result<ClientIpSource, ConfigError> {
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

pub(super) fn compile_usage(raw: RawUsage) -> Result<UsageConfig, ConfigError> {
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

pub(super) fn compile_source(index: usize, source: RawKeySource) -> Result<KeySource, ConfigError> {
    let field = format!("key_sources[{index}]");
    let (name, make): (String, fn(String) -> KeySource) = match source {
        RawKeySource::Header(name) => (name, KeySource::Header),
        RawKeySource::Bearer(name) => (name, KeySource::Bearer),
        RawKeySource::Query(name) => {
            if !query_name(&name) {
                return Err(field_error(
                    &field,
                    format!("'{name}' is not a query parameter name ([A-Za-z0-9_-], 1 to 64)"),
                ));
            }
            return Ok(KeySource::Query(name));
        }
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

/// A query parameter's name: letters, digits, `_` and `-`, 1 to 64 of them.
fn query_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `forward_meta`: the `meta` names forwarded to the upstream, each with its header.
pub(super) fn compile_forward_meta(
    names: Vec<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    if names.len() > 16 {
        return Err(field_error("forward_meta", "lists at most 16 names"));
    }
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let valid = (1..=32).contains(&name.len())
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if valid {
                let header = format!("x-tollgate-meta-{name}");
                Ok((name, header))
            } else {
                Err(field_error(
                    &format!("forward_meta[{i}]"),
                    format!("'{name}' is not a meta name ([a-z0-9_-], 1 to 32)"),
                ))
            }
        })
        .collect()
}

pub(super) fn duration_field(
    field: &str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => parse_duration(&text).map_err(|e| field_error(field, e)),
    }
}

pub(super) fn bounded_duration(
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

pub(super) fn table_size(
    field: &str,
    value: Option<u64>,
    default: u64,
) -> Result<usize, ConfigError> {
    let size = value.unwrap_or(default);
    if size == 0 || size > MAX_TABLE {
        return Err(field_error(
            field,
            format!("must be between 1 and {MAX_TABLE}"),
        ));
    }
    Ok(size as usize)
}
