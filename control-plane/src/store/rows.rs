//! How both backends store the columns that are not plain values: quotas (NULL = none),
//! allowed endpoints (a JSON array) and counts.

use super::sql::Row;
use super::{StoreError, StoreResult};
use crate::domain::{AllowRule, Quotas, RequestCursor, RequestPage, RequestRecord};

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
