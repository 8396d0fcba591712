//! What the control plane says about a key (`GET /v1/filter/keys/{hash}`), validated before
//! the filter trusts it.

use crate::allowed::EndpointPattern;
use crate::rate_limit::Rates;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windows {
    pub total: Option<u64>,
    pub daily: Option<u64>,
    pub weekly: Option<u64>,
    pub monthly: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanLimits {
    #[serde(default)]
    pub name: String,
    pub rate_limit_per_second: Option<u64>,
    pub rate_limit_per_minute: Option<u64>,
}

/// How many admitted records of this key from this Envoy instance the control plane has stored
/// since `since_ms`, and their credits since the credit split point (docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recent {
    pub since_ms: u64,
    pub count: u64,
    #[serde(default)]
    pub credits: u64,
}

/// The calendar period (UTC) of a credit budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditPeriod {
    Day,
    Month,
    Total,
}

impl CreditPeriod {
    /// As the protocol spells it.
    pub fn name(self) -> &'static str {
        match self {
            CreditPeriod::Day => "day",
            CreditPeriod::Month => "month",
            CreditPeriod::Total => "total",
        }
    }

    /// As the denial names it ("credits monthly").
    pub fn adjective(self) -> &'static str {
        match self {
            CreditPeriod::Day => "daily",
            CreditPeriod::Month => "monthly",
            CreditPeriod::Total => "total",
        }
    }
}

/// A key's credit budget and what the control plane has counted of its current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditBudget {
    pub limit: u64,
    pub period: CreditPeriod,
    #[serde(default)]
    pub used: u64,
    #[serde(default)]
    pub period_start_ms: u64,
    #[serde(default)]
    pub resets_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedEndpoint {
    pub method: String,
    pub path: String,
}

/// The lookup answer as sent on the wire; unknown fields are ignored so the control plane can
/// grow the answer without breaking older filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStateWire {
    pub key_id: String,
    pub workspace_id: String,
    pub active: bool,
    #[serde(default)]
    pub expires_at_ms: Option<u64>,
    #[serde(default)]
    pub secret_valid_until_ms: Option<u64>,
    #[serde(default)]
    pub allowed: Vec<AllowedEndpoint>,
    #[serde(default)]
    pub quotas: Windows,
    #[serde(default)]
    pub usage: Windows,
    #[serde(default)]
    pub plan: PlanLimits,
    #[serde(default)]
    pub cache_ttl_ms: Option<u64>,
    #[serde(default)]
    pub recent: Option<Recent>,
    /// The key's own rate limits, on top of the plan's.
    #[serde(default)]
    pub rate_limits: Rates,
    #[serde(default)]
    pub credits: Option<CreditBudget>,
    /// The API owner's id for whom the key is (forwarded to the upstream).
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// A key's state, ready for decisions.
#[derive(Debug, Clone)]
pub struct KeyState {
    pub wire: KeyStateWire,
    pub allowed: Vec<EndpointPattern>,
}

/// Header-safe identifier (it is forwarded to the upstream as a header value).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A value the filter may put in a request header: no control characters (CR, LF, NUL...).
fn header_safe(value: &str) -> bool {
    value.len() <= 1024
        && value
            .bytes()
            .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

impl KeyState {
    pub fn from_wire(wire: KeyStateWire) -> Result<KeyState, String> {
        if !valid_id(&wire.key_id) {
            return Err(format!(
                "key_id '{}' is not a valid identifier",
                wire.key_id
            ));
        }
        if !valid_id(&wire.workspace_id) {
            return Err(format!(
                "workspace_id '{}' is not a valid identifier",
                wire.workspace_id
            ));
        }
        if let Some(id) = &wire.external_id {
            if id.is_empty() || id.len() > 128 || !header_safe(id) {
                return Err("external_id is not a valid header value".into());
            }
        }
        for (name, value) in &wire.meta {
            if !header_safe(value) {
                return Err(format!("meta.{name} is not a valid header value"));
            }
        }
        let allowed = wire
            .allowed
            .iter()
            .enumerate()
            .map(|(i, a)| {
                EndpointPattern::compile(&a.method, &a.path)
                    .map_err(|e| format!("allowed[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyState { wire, allowed })
    }

    pub fn parse(body: &[u8]) -> Result<KeyState, String> {
        let wire: KeyStateWire = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        KeyState::from_wire(wire)
    }

    pub fn allows(&self, method: &str, path: &str) -> bool {
        self.allowed.is_empty() || self.allowed.iter().any(|p| p.matches(method, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SAMPLE: &str = r#"{
      "key_id": "key_3fA9kQ2mZx8LbT1w", "workspace_id": "ws_8sK2nB4vX1qP7mRt", "active": true,
      "expires_at": "2027-01-01T00:00:00Z", "expires_at_ms": 1798761600000,
      "secret_valid_until_ms": null,
      "allowed": [{"method": "GET", "path": "/v1/things/*"}],
      "quotas": {"total": null, "daily": 1000, "weekly": null, "monthly": null},
      "usage": {"total": 0, "daily": 0, "weekly": 0, "monthly": 0},
      "plan": {"name": "free", "rate_limit_per_second": 5, "rate_limit_per_minute": 100},
      "cache_ttl_ms": 5000, "now_ms": 1795000000000, "future_field": {"ignored": true}
    }"#;

    #[test]
    fn parses_the_protocol_example() {
        let state = KeyState::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(state.wire.key_id, "key_3fA9kQ2mZx8LbT1w");
        assert_eq!(state.wire.expires_at_ms, Some(1_798_761_600_000));
        assert_eq!(state.wire.quotas.daily, Some(1000));
        assert_eq!(state.wire.plan.rate_limit_per_second, Some(5));
        assert_eq!(state.wire.cache_ttl_ms, Some(5000));
        assert!(state.allows("GET", "/v1/things/1"));
        assert!(!state.allows("POST", "/v1/things/1"));
        assert_eq!(state.wire.rate_limits, Rates::default(), "absent: none");
        assert_eq!(state.wire.credits, None);
    }

    #[test]
    fn parses_the_owner_and_the_key_limits() {
        let body = SAMPLE.replace(
            r#""cache_ttl_ms""#,
            r#""rate_limits": {"per_second": 10, "per_minute": null, "per_hour": 5000},
               "credits": {"limit": 100000, "period": "month", "used": 4200,
                           "period_start_ms": 1793491200000, "resets_at_ms": 1796083200000},
               "external_id": "cus_4f2a", "meta": {"tier": "gold", "region": "eu"},
               "cache_ttl_ms""#,
        );
        let state = KeyState::parse(body.as_bytes()).unwrap();
        let wire = &state.wire;
        assert_eq!(
            (wire.rate_limits.per_second, wire.rate_limits.per_hour),
            (Some(10), Some(5000))
        );
        let credits = wire.credits.unwrap();
        assert_eq!(
            (credits.limit, credits.period, credits.used),
            (100_000, CreditPeriod::Month, 4200)
        );
        assert_eq!(credits.resets_at_ms, Some(1_796_083_200_000));
        assert_eq!(wire.external_id.as_deref(), Some("cus_4f2a"));
        assert_eq!(wire.meta["tier"], "gold");
    }

    #[test]
    fn rejects_answers_it_cannot_trust() {
        assert!(KeyState::parse(b"{}").is_err());
        assert!(KeyState::parse(b"<html>").is_err());
        let injected = SAMPLE.replace("key_3fA9kQ2mZx8LbT1w", r"key\r\nx-admin: 1");
        assert!(KeyState::parse(injected.as_bytes())
            .unwrap_err()
            .contains("key_id"));
        let injected_owner = SAMPLE.replace(
            r#""cache_ttl_ms""#,
            r#""external_id": "cus\r\nx-admin: 1", "cache_ttl_ms""#,
        );
        assert!(KeyState::parse(injected_owner.as_bytes())
            .unwrap_err()
            .contains("external_id"));
        let injected_meta = SAMPLE.replace(
            r#""cache_ttl_ms""#,
            r#""meta": {"tier": "gold\n"}, "cache_ttl_ms""#,
        );
        assert!(KeyState::parse(injected_meta.as_bytes())
            .unwrap_err()
            .contains("meta.tier"));
        let bad_pattern = SAMPLE.replace("/v1/things/*", "v1");
        assert!(KeyState::parse(bad_pattern.as_bytes())
            .unwrap_err()
            .contains("allowed[0]"));
    }
}
