//! Rows as both SQL backends read them (sqlx's `FromRow` is generic over the database), and
//! the conversions between stored columns and the store's types.

use std::collections::HashMap;

use sqlx::FromRow;

use super::{StoreError, StoreResult};
use crate::domain::{AllowRule, ApiKey, ConsoleToken, Plan, Quotas, Workspace};
use crate::domain::{
    EndpointCount, MethodCount, ResponseCodeCount, SeriesBucket, StatusTotals, UsageQuery,
    UsageReport, UsageScope, UsageStatus, DAY_MS, HOUR_MS, TOP_ENDPOINTS,
};

#[derive(FromRow)]
pub(super) struct PlanRow {
    name: String,
    max_keys: Option<i64>,
    rate_limit_per_second: Option<i64>,
    rate_limit_per_minute: Option<i64>,
}

impl From<PlanRow> for Plan {
    fn from(r: PlanRow) -> Self {
        Plan {
            name: r.name,
            max_keys: r.max_keys,
            rate_limit_per_second: r.rate_limit_per_second,
            rate_limit_per_minute: r.rate_limit_per_minute,
        }
    }
}

#[derive(FromRow)]
pub(super) struct WorkspaceRow {
    id: String,
    name: String,
    plan: String,
    created_at: i64,
}

impl From<WorkspaceRow> for Workspace {
    fn from(r: WorkspaceRow) -> Self {
        Workspace {
            id: r.id,
            name: r.name,
            plan: r.plan,
            created_at: r.created_at,
        }
    }
}

#[derive(FromRow)]
pub(super) struct KeyRow {
    id: String,
    workspace_id: String,
    alias: String,
    description: Option<String>,
    category: String,
    active: bool,
    expires_at: Option<i64>,
    quota_total: Option<i64>,
    quota_daily: Option<i64>,
    quota_weekly: Option<i64>,
    quota_monthly: Option<i64>,
    allowed: String,
    created_at: i64,
    last_used_at: Option<i64>,
    hash: String,
    prefix: String,
    calls_this_month: i64,
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(r: KeyRow) -> StoreResult<Self> {
        Ok(ApiKey {
            quotas: quotas_from_columns(
                r.quota_total,
                r.quota_daily,
                r.quota_weekly,
                r.quota_monthly,
            ),
            allowed: allowed_from_column(&r.allowed)?,
            id: r.id,
            workspace_id: r.workspace_id,
            alias: r.alias,
            description: r.description,
            category: r.category,
            active: r.active,
            expires_at: r.expires_at,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            hash: r.hash,
            prefix: r.prefix,
            calls_this_month: u64::try_from(r.calls_this_month).unwrap_or(0),
        })
    }
}

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

#[derive(FromRow)]
pub(super) struct ConsoleTokenRow {
    id: String,
    workspace_id: String,
    name: String,
    created_at: i64,
}

impl From<ConsoleTokenRow> for ConsoleToken {
    fn from(r: ConsoleTokenRow) -> Self {
        ConsoleToken {
            id: r.id,
            workspace_id: r.workspace_id,
            name: r.name,
            created_at: r.created_at,
        }
    }
}

/// A usage report's breakdown: sums over the whole range per combination.
#[derive(FromRow)]
pub(super) struct BreakdownRow {
    endpoint: String,
    method: String,
    response_code: i64,
    status: String,
    count: i64,
}

/// A usage report from the rollups' series rows `(bucket, status, count)` and breakdown rows.
pub(super) fn report_from_rows(
    query: &UsageQuery,
    series_rows: Vec<(i64, String, i64)>,
    rows: Vec<BreakdownRow>,
) -> UsageReport {
    let mut totals = StatusTotals::default();
    let mut by_method: HashMap<String, u64> = HashMap::new();
    let mut by_code: HashMap<u16, u64> = HashMap::new();
    let mut by_endpoint: HashMap<(String, String), u64> = HashMap::new();
    let points = usize::try_from((query.to_ms - query.from_ms) / query.interval_ms).unwrap_or(0);
    let mut series: Vec<SeriesBucket> = (0..points)
        .map(|i| SeriesBucket {
            start_ms: query.from_ms + i as i64 * query.interval_ms,
            ..SeriesBucket::default()
        })
        .collect();
    for (bucket, status, count) in series_rows {
        let (Some(status), Ok(n)) = (UsageStatus::parse(&status), u64::try_from(count)) else {
            continue;
        };
        let i = (bucket - query.from_ms).div_euclid(query.interval_ms);
        if let Some(b) = usize::try_from(i).ok().and_then(|i| series.get_mut(i)) {
            match status {
                UsageStatus::Completed => b.completed += n,
                UsageStatus::Failed => b.failed += n,
                UsageStatus::RateLimited => b.rate_limited += n,
            }
        }
    }
    for r in rows {
        let n = u64::try_from(r.count).unwrap_or(0);
        let Some(status) = UsageStatus::parse(&r.status) else {
            continue;
        };
        totals.add(status, n);
        *by_code
            .entry(u16::try_from(r.response_code).unwrap_or(0))
            .or_default() += n;
        *by_endpoint
            .entry((r.method.clone(), r.endpoint))
            .or_default() += n;
        *by_method.entry(r.method).or_default() += n;
    }

    UsageReport {
        from_ms: query.from_ms,
        to_ms: query.to_ms,
        interval_ms: query.interval_ms,
        totals,
        by_method: sorted_counts(by_method)
            .into_iter()
            .map(|(method, count)| MethodCount { method, count })
            .collect(),
        by_response_code: sorted_counts(by_code)
            .into_iter()
            .map(|(response_code, count)| ResponseCodeCount {
                response_code,
                count,
            })
            .collect(),
        top_endpoints: sorted_counts(by_endpoint)
            .into_iter()
            .take(TOP_ENDPOINTS)
            .map(|((method, endpoint), count)| EndpointCount {
                method,
                endpoint,
                count,
            })
            .collect(),
        series,
    }
}

/// Largest count first, then by key.
fn sorted_counts<K: Ord + Clone>(map: HashMap<K, u64>) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = map.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Where a usage report reads: the scope's own table (to answer 404), and the coarsest rollup
/// that tiles the series (days for 1d, hours for 1h, else minutes; workspace reports read the
/// workspace rollups, one row per combination and bucket, not one per key).
pub(super) struct ReportSource<'q> {
    pub scope_table: &'static str,
    pub missing: StoreError,
    pub scope_column: &'static str,
    pub scope_id: &'q str,
    pub table: &'static str,
    pub column: &'static str,
}

pub(super) fn report_source(query: &UsageQuery) -> ReportSource<'_> {
    let (scope_table, missing, scope_column, scope_id) = match &query.scope {
        UsageScope::Key(id) => ("api_keys", StoreError::KeyNotFound, "key_id", id.as_str()),
        UsageScope::Workspace(id) => (
            "workspaces",
            StoreError::WorkspaceNotFound,
            "workspace_id",
            id.as_str(),
        ),
    };
    let workspace = matches!(query.scope, UsageScope::Workspace(_));
    let (table, column) = match (query.interval_ms, workspace) {
        (i, false) if i >= DAY_MS => ("usage_days", "day"),
        (i, false) if i >= HOUR_MS => ("usage_hours", "hour"),
        (_, false) => ("usage_minutes", "minute"),
        (i, true) if i >= DAY_MS => ("usage_ws_days", "day"),
        (i, true) if i >= HOUR_MS => ("usage_ws_hours", "hour"),
        (_, true) => ("usage_ws_minutes", "minute"),
    };
    ReportSource {
        scope_table,
        missing,
        scope_column,
        scope_id,
        table,
        column,
    }
}
