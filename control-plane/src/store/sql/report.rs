//! A usage report, read the same way on both backends: the scope must exist (else 404), then
//! two narrow aggregates over the rollup rows of the range (the series per bucket and status,
//! and the breakdowns), in one snapshot. Which rows those are is the backend's: SQLite adds the
//! minutes not yet rolled into hours and days (migration 0009).

use std::collections::HashMap;

use crate::domain::{
    EndpointCount, MethodCount, ResponseCodeCount, SeriesBucket, StatusTotals, UsageQuery,
    UsageReport, UsageScope, UsageStatus, DAY_MS, HOUR_MS, TOP_ENDPOINTS,
};
use crate::store::sql::{args, in_read, Database, Row};
use crate::store::{StoreError, StoreResult};

/// The report's rows as a subquery with columns `bucket, endpoint, method, response_code,
/// status, count, credits`: scope `$1` ([`ReportSource::scope_condition`]), buckets in
/// `[$2, $3)`, from `source`'s table and column.
pub(crate) type RollupRows = fn(&ReportSource) -> String;

pub(crate) async fn usage_report<D: Database>(
    db: &D,
    query: &UsageQuery,
    rollup_rows: RollupRows,
) -> StoreResult<UsageReport> {
    let source = report_source(query);
    let rows_sql = rollup_rows(&source);
    in_read!(db, |tx| {
        if let Some(scope_table) = source.scope_table {
            let sql = format!("SELECT 1 FROM {scope_table} WHERE id = $1");
            if tx.row(&sql, args![&source.scope_id]).await?.is_none() {
                return Err((source.missing)());
            }
        }
        let sql = format!(
            "SELECT bucket - ((bucket - $2) % $4) AS bucket, status, \
             CAST(sum(count) AS BIGINT) AS count FROM {rows_sql} AS r GROUP BY 1, 2"
        );
        let values = args![
            &source.scope_id,
            query.from_ms,
            query.to_ms,
            query.interval_ms
        ];
        let series = tx
            .rows(&sql, values)
            .await?
            .iter()
            .map(|r| Ok((r.get("bucket")?, r.get("status")?, r.get("count")?)))
            .collect::<StoreResult<Vec<(i64, String, i64)>>>()?;
        let sql = format!(
            "SELECT endpoint, method, response_code, status, CAST(sum(count) AS BIGINT) AS count, \
             CAST(sum(credits) AS BIGINT) AS credits FROM {rows_sql} AS r GROUP BY 1, 2, 3, 4"
        );
        let values = args![&source.scope_id, query.from_ms, query.to_ms];
        let breakdown = tx
            .rows(&sql, values)
            .await?
            .iter()
            .map(BreakdownRow::from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(report_from_rows(query, series, breakdown))
    })
}

/// A usage report's breakdown: sums over the whole range per combination.
struct BreakdownRow {
    endpoint: String,
    method: String,
    response_code: i64,
    status: String,
    count: i64,
    credits: i64,
}

impl BreakdownRow {
    fn from_row(r: &Row) -> StoreResult<Self> {
        Ok(Self {
            endpoint: r.get("endpoint")?,
            method: r.get("method")?,
            response_code: r.get("response_code")?,
            status: r.get("status")?,
            count: r.get("count")?,
            credits: r.get("credits")?,
        })
    }
}

/// A usage report from the rollups' series rows `(bucket, status, count)` and breakdown rows.
fn report_from_rows(
    query: &UsageQuery,
    series_rows: Vec<(i64, String, i64)>,
    rows: Vec<BreakdownRow>,
) -> UsageReport {
    let mut totals = StatusTotals::default();
    let mut by_method: HashMap<String, u64> = HashMap::new();
    let mut by_code: HashMap<u16, u64> = HashMap::new();
    let mut by_endpoint: HashMap<(String, String), u64> = HashMap::new();
    let mut endpoint_credits: HashMap<(String, String), u64> = HashMap::new();
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
        let credits = u64::try_from(r.credits).unwrap_or(0);
        totals.add(status, n);
        totals.credits += credits;
        *endpoint_credits
            .entry((r.method.clone(), r.endpoint.clone()))
            .or_default() += credits;
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
                credits: endpoint_credits
                    .get(&(method.clone(), endpoint.clone()))
                    .copied()
                    .unwrap_or(0),
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

/// Where a usage report reads: the scope's own table (to answer 404; none for a set of keys the
/// caller has just read), and the coarsest rollup that tiles the series (days for 1d, hours for
/// 1h, else minutes; workspace reports read the workspace rollups, one row per combination and
/// bucket, not one per key).
pub(crate) struct ReportSource {
    scope_table: Option<&'static str>,
    missing: fn() -> StoreError,
    pub scope_column: &'static str,
    /// `$1`: the key or workspace id, or for a set of keys their ids as a JSON array.
    pub scope_id: String,
    /// `$1` is a JSON array of key ids ([`UsageScope::Keys`]).
    pub many_keys: bool,
    pub table: &'static str,
    pub column: &'static str,
}

impl ReportSource {
    /// The rows' condition on their scope column: `= $1`, or for a set of keys membership in
    /// the JSON array `$1`, written by the backend (`json_array`: a subquery of the array's
    /// elements, e.g. SQLite's `SELECT value FROM json_each($1)`).
    pub fn scope_condition(&self, json_array: &str) -> String {
        if self.many_keys {
            format!("{} IN ({json_array})", self.scope_column)
        } else {
            format!("{} = $1", self.scope_column)
        }
    }
}

fn key_not_found() -> StoreError {
    StoreError::KeyNotFound
}

fn workspace_not_found() -> StoreError {
    StoreError::WorkspaceNotFound
}

fn report_source(query: &UsageQuery) -> ReportSource {
    let (scope_table, missing, scope_column, scope_id): (_, fn() -> StoreError, _, _) =
        match &query.scope {
            UsageScope::Key(id) => (Some("api_keys"), key_not_found, "key_id", id.clone()),
            UsageScope::Workspace(id) => (
                Some("workspaces"),
                workspace_not_found,
                "workspace_id",
                id.clone(),
            ),
            UsageScope::Keys(ids) => (
                None,
                key_not_found,
                "key_id",
                serde_json::Value::from(ids.clone()).to_string(),
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
        many_keys: matches!(query.scope, UsageScope::Keys(_)),
        table,
        column,
    }
}
