//! One usage record per request that carried a known key (passed, or denied for that key).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageStatus {
    Completed,
    RateLimited,
    Failed,
}

impl UsageStatus {
    /// `rate_limited` = 429 or a quota denial (which answers 401 by default).
    pub fn classify(response_code: u32, quota_denial: bool) -> UsageStatus {
        if quota_denial || response_code == 429 {
            UsageStatus::RateLimited
        } else if (100..400).contains(&response_code) {
            UsageStatus::Completed
        } else {
            UsageStatus::Failed
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UsageStatus::Completed => "completed",
            UsageStatus::RateLimited => "rate_limited",
            UsageStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRecord {
    pub request_id: String,
    pub timestamp: u64,
    pub key_id: String,
    pub workspace_id: String,
    pub method: String,
    pub endpoint: String,
    pub resource_id: Option<String>,
    pub response_code: u32,
    pub status: UsageStatus,
    /// Time to the first byte of the response, milliseconds with microsecond precision.
    pub duration_ms: f64,
    pub client_ip: String,
    pub credits: u32,
    /// Tollgate let it through to the upstream (only these count toward quotas).
    pub admitted: bool,
    /// The Envoy instance that saw it (docs/protocol.md).
    pub instance: String,
}

impl UsageRecord {
    /// One line of JSON (no newline inside: serde_json escapes control characters).
    pub fn to_json_line(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(self).ok()
    }
}

/// The client address `trusted_hops` entries from the right of `x-forwarded-for`
/// (1 = the address the nearest trusted proxy saw), if the header has that many.
pub fn forwarded_client(xff: &str, trusted_hops: usize) -> Option<&str> {
    let entries: Vec<&str> = xff
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let index = entries.len().checked_sub(trusted_hops)?;
    entries.get(index).map(|e| ip_of(e))
}

/// `127.0.0.1:58642` → `127.0.0.1`, `[::1]:443` → `::1`.
pub fn ip_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_response_code() {
        assert_eq!(UsageStatus::classify(200, false), UsageStatus::Completed);
        assert_eq!(UsageStatus::classify(302, false), UsageStatus::Completed);
        assert_eq!(UsageStatus::classify(429, false), UsageStatus::RateLimited);
        assert_eq!(UsageStatus::classify(401, true), UsageStatus::RateLimited);
        assert_eq!(UsageStatus::classify(401, false), UsageStatus::Failed);
        assert_eq!(UsageStatus::classify(503, false), UsageStatus::Failed);
        assert_eq!(UsageStatus::classify(0, false), UsageStatus::Failed);
    }

    #[test]
    fn record_is_one_json_line() {
        let record = UsageRecord {
            request_id: "r\n1".into(),
            timestamp: 1,
            key_id: "key_1".into(),
            workspace_id: "ws_1".into(),
            method: "GET".into(),
            endpoint: "/v1/x/{id}".into(),
            resource_id: Some("7".into()),
            response_code: 200,
            status: UsageStatus::Completed,
            duration_ms: 0.25,
            client_ip: "127.0.0.1".into(),
            credits: 2,
            admitted: true,
            instance: "i_1".into(),
        };
        let line = record.to_json_line().unwrap();
        assert!(!line.contains(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["status"], "completed");
        assert_eq!(value["resource_id"], "7");
        assert_eq!(value["duration_ms"], 0.25);
    }

    #[test]
    fn forwarded_for_counts_trusted_hops_from_the_right() {
        let xff = "198.51.100.7, 10.0.0.2 , 10.0.0.1";
        assert_eq!(forwarded_client(xff, 1), Some("10.0.0.1"));
        assert_eq!(forwarded_client(xff, 3), Some("198.51.100.7"));
        assert_eq!(forwarded_client(xff, 4), None);
        assert_eq!(forwarded_client("", 1), None);
    }

    #[test]
    fn ip_without_port() {
        assert_eq!(ip_of("127.0.0.1:58642"), "127.0.0.1");
        assert_eq!(ip_of("[::1]:443"), "::1");
        assert_eq!(ip_of("10.0.0.1"), "10.0.0.1");
        assert_eq!(ip_of("::1"), "::1");
    }
}
