//! How both backends store the columns that are not plain values: quotas and rate limits
//! (NULL = none), the credit budget (limit and period, both NULL = none), allowed endpoints and
//! meta (JSON) and counts.

use super::sql::Row;
use super::{StoreError, StoreResult};
use crate::domain::{
    AllowRule, CreditBudget, CreditPeriod, Meta, Quotas, RateLimits, RequestCursor, RequestPage,
    RequestRecord,
};

pub(super) fn quotas_from_columns(
    total: Option<i64>,
    daily: Option<i64>,
    weekly: Option<i64>,
    monthly: Option<i64>,
) -> Quotas {
    // Validation only lets positive values in, so the conversion cannot fail for stored data.
    let q = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    Quotas {
        total: q(total),
        daily: q(daily),
        weekly: q(weekly),
        monthly: q(monthly),
    }
}

pub(super) fn quota_column(v: Option<u64>) -> Option<i64> {
    v.and_then(|v| i64::try_from(v).ok())
}

pub(super) fn allowed_from_column(json: &str) -> StoreResult<Vec<AllowRule>> {
    serde_json::from_str(json).map_err(|e| StoreError::Backend(Box::new(e)))
}

pub(super) fn allowed_column(rules: &[AllowRule]) -> StoreResult<String> {
    serde_json::to_string(rules).map_err(|e| StoreError::Backend(Box::new(e)))
}

pub(super) fn count(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

/// A key's quotas from its `quota_*` columns in `r`.
pub(super) fn quotas_from_row(r: &Row) -> StoreResult<Quotas> {
    Ok(quotas_from_columns(
        r.get("quota_total")?,
        r.get("quota_daily")?,
        r.get("quota_weekly")?,
        r.get("quota_monthly")?,
    ))
}

/// A key's rate limits from its `rate_limit_*` columns in `r`.
pub(super) fn rate_limits_from_row(r: &Row) -> StoreResult<RateLimits> {
    let q = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    Ok(RateLimits {
        per_second: q(r.get("rate_limit_per_second")?),
        per_minute: q(r.get("rate_limit_per_minute")?),
        per_hour: q(r.get("rate_limit_per_hour")?),
    })
}

/// A key's budget from its `credits_limit` and `credits_period` columns in `r`.
pub(super) fn credits_from_row(r: &Row) -> StoreResult<Option<CreditBudget>> {
    let limit: Option<i64> = r.get("credits_limit")?;
    let period: Option<String> = r.get("credits_period")?;
    Ok(match (limit.and_then(|l| u64::try_from(l).ok()), period) {
        (Some(limit), Some(period)) => {
            let period = CreditPeriod::parse(&period).ok_or_else(|| {
                StoreError::Backend(format!("unknown credits_period {period:?}").into())
            })?;
            Some(CreditBudget { limit, period })
        }
        _ => None,
    })
}

pub(super) fn period_column(budget: Option<CreditBudget>) -> Option<&'static str> {
    budget.map(|b| b.period.as_str())
}

pub(super) fn meta_from_column(json: &str) -> StoreResult<Meta> {
    serde_json::from_str(json).map_err(|e| StoreError::Backend(Box::new(e)))
}

pub(super) fn meta_column(meta: &Meta) -> StoreResult<String> {
    serde_json::to_string(meta).map_err(|e| StoreError::Backend(Box::new(e)))
}

/// A request-log page from up to `limit + 1` records newest first: the extra one only says
/// that more follow.
pub(super) fn page_of(mut records: Vec<RequestRecord>, limit: u32) -> RequestPage {
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next_cursor = if more {
        records.last().map(|r| RequestCursor {
            timestamp: r.timestamp,
            id: r.id,
        })
    } else {
        None
    };
    RequestPage {
        records,
        next_cursor,
    }
}
