//! `GET /v1/filter/keys/{hash}`: the lookup the Envoy filter makes (`docs/protocol.md`), with
//! the first leases of the key when it asks (`lease`, `want`). Other query parameters are
//! ignored (filters before budget leases sent `instance` and `since_ms`).

use axum::extract::{RawQuery, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AppState, PathParam};
use crate::app::edge;
use crate::app::leases::LookupLeases;
use crate::clock;
use crate::domain::{
    AllowRule, CreditPeriod, CreditsLookup, Grant, KeyLookup, Meta, Quotas, RateLimits, Usage,
};
use crate::error::ApiError;
use crate::secret::SecretHash;

#[derive(Debug, Serialize)]
pub struct LookupView {
    key_id: String,
    workspace_id: String,
    active: bool,
    expires_at: Option<String>,
    expires_at_ms: Option<i64>,
    secret_valid_until_ms: Option<i64>,
    allowed: Vec<AllowRule>,
    quotas: Quotas,
    usage: Usage,
    plan: PlanLimits,
    rate_limits: RateLimits,
    credits: Option<CreditsView>,
    external_id: Option<String>,
    meta: Meta,
    cache_ttl_ms: u64,
    now_ms: i64,
    /// The first leases, granted with the lookup; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    leases: Vec<Grant>,
}

/// The query parameters the lookup reads.
#[derive(Debug, Default, Deserialize)]
struct LookupParams {
    lease: Option<String>,
    want: Option<String>,
}

/// `credits` of the answer (`docs/protocol.md`).
#[derive(Debug, Serialize)]
struct CreditsView {
    limit: u64,
    period: CreditPeriod,
    used: u64,
    period_start_ms: i64,
    resets_at_ms: Option<i64>,
}

impl From<CreditsLookup> for CreditsView {
    fn from(c: CreditsLookup) -> Self {
        Self {
            limit: c.budget.limit,
            period: c.budget.period,
            used: c.used,
            period_start_ms: c.period.start_ms,
            resets_at_ms: c.period.resets_at_ms,
        }
    }
}

#[derive(Debug, Serialize)]
struct PlanLimits {
    name: String,
    rate_limit_per_second: Option<i64>,
    rate_limit_per_minute: Option<i64>,
}

/// The configured TTL, shortened so a cached answer never outlives a deadline that is still
/// ahead (expiry, end of a rotation grace, the start of the next credit period). Deadlines already passed do not shorten it: the
/// answer then already says "expired" and stays true.
pub fn cache_ttl_ms(configured: u64, now_ms: i64, deadlines: &[Option<i64>]) -> u64 {
    deadlines
        .iter()
        .flatten()
        .filter(|&&t| t > now_ms)
        .map(|&t| u64::try_from(t - now_ms).unwrap_or(0))
        .fold(configured, u64::min)
}

impl LookupView {
    fn new(k: KeyLookup, leases: Vec<Grant>, configured_ttl_ms: u64, now_ms: i64) -> Self {
        Self {
            cache_ttl_ms: cache_ttl_ms(
                configured_ttl_ms,
                now_ms,
                &[
                    k.expires_at,
                    k.secret_valid_until,
                    k.credits.and_then(|c| c.period.resets_at_ms),
                ],
            ),
            expires_at: k.expires_at.map(clock::format_rfc3339),
            expires_at_ms: k.expires_at,
            secret_valid_until_ms: k.secret_valid_until,
            key_id: k.key_id,
            workspace_id: k.workspace_id,
            active: k.active,
            allowed: k.allowed,
            quotas: k.quotas,
            usage: k.usage,
            plan: PlanLimits {
                name: k.plan.name,
                rate_limit_per_second: k.plan.rate_limit_per_second,
                rate_limit_per_minute: k.plan.rate_limit_per_minute,
            },
            rate_limits: k.rate_limits,
            credits: k.credits.map(CreditsView::from),
            external_id: k.external_id,
            meta: k.meta,
            now_ms,
            leases,
        }
    }
}

/// The leases a lookup's query string asks for (`lease`, `want`).
pub(super) fn lookup_leases(raw: Option<&str>) -> Result<Option<LookupLeases>, ApiError> {
    let params: LookupParams = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|e| ApiError::malformed(format!("invalid query string: {e}")))?;
    Ok(LookupLeases::parse(
        params.lease.as_deref(),
        params.want.as_deref(),
    )?)
}

pub async fn lookup(
    State(state): State<AppState>,
    PathParam(hash): PathParam,
    RawQuery(raw): RawQuery,
) -> Result<Json<LookupView>, ApiError> {
    let hash = SecretHash::parse(&hash)
        .ok_or_else(|| ApiError::invalid("hash", "must be 64 lowercase hex characters"))?;
    let asked = lookup_leases(raw.as_deref())?;
    let now = clock::now_ms();
    let (found, leases) = edge::lookup(&state, &hash, asked.as_ref(), now)
        .await?
        .ok_or_else(|| ApiError::NotFound("API key not found".to_owned()))?;
    Ok(Json(LookupView::new(
        found,
        leases,
        state.key_cache_ttl_ms,
        now,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_capped_by_future_deadlines_only() {
        let now = 1_000_000;
        assert_eq!(cache_ttl_ms(5000, now, &[None, None]), 5000);
        assert_eq!(cache_ttl_ms(5000, now, &[Some(now + 1200), None]), 1200);
        assert_eq!(
            cache_ttl_ms(5000, now, &[Some(now + 9000), Some(now + 300)]),
            300
        );
        assert_eq!(cache_ttl_ms(5000, now, &[Some(now - 10), None]), 5000);
        assert_eq!(cache_ttl_ms(5000, now, &[Some(now), None]), 5000);
        assert_eq!(cache_ttl_ms(5000, now, &[Some(now + 1), None]), 1);
    }
}
