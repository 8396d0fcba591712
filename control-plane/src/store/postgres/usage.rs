//! PostgreSQL: analytics from rollups and the request log (ingest: `postgres_ingest.rs`).

use sqlx::{FromRow, Postgres, QueryBuilder};

use crate::domain::{
    RequestCursor, RequestFilter, RequestPage, RequestRecord, UsageQuery, UsageReport, UsageStatus,
};
use crate::store::postgres::PostgresStore;
use crate::store::rows::{report_from_rows, report_source, BreakdownRow, ReportSource};
use crate::store::{StoreError, StoreResult};

#[derive(FromRow)]
struct RecordRow {
    id: i64,
    request_id: String,
    ts: i64,
    key_id: String,
    workspace_id: String,
    method: String,
    endpoint: String,
    resource_id: Option<String>,
    response_code: i64,
    status: String,
    duration_ms: f64,
    client_ip: String,
    credits: i64,
    admitted: bool,
    instance: String,
}

impl TryFrom<RecordRow> for RequestRecord {
    type Error = StoreError;

    fn try_from(r: RecordRow) -> StoreResult<Self> {
        let status = UsageStatus::parse(&r.status).ok_or_else(|| {
            StoreError::Backend(format!("unknown status {} in usage_records", r.status).into())
        })?;
        Ok(RequestRecord {
            id: r.id,
            request_id: r.request_id,
            timestamp: r.ts,
            key_id: r.key_id,
            workspace_id: r.workspace_id,
            method: r.method,
            endpoint: r.endpoint,
            resource_id: r.resource_id,
            response_code: u16::try_from(r.response_code).unwrap_or(0),
            status,
            duration_ms: r.duration_ms,
            client_ip: r.client_ip,
            credits: u32::try_from(r.credits).unwrap_or(0),
            admitted: r.admitted,
            instance: r.instance,
        })
    }
}

impl PostgresStore {
    pub(super) async fn report(&self, query: &UsageQuery) -> StoreResult<UsageReport> {
        // One snapshot for the existence check, the series and the breakdowns.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let ReportSource {
            scope_table,
            missing,
            scope_column,
            scope_id,
            table,
            column,
        } = report_source(query);
        let exists: Option<(i32,)> =
            sqlx::query_as(&format!("SELECT 1 FROM {scope_table} WHERE id = $1"))
                .bind(scope_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(missing);
        }
        let range = format!("{scope_column} = $1 AND {column} >= $2 AND {column} < $3");
        let series_rows: Vec<(i64, String, i64)> = sqlx::query_as(&format!(
            "SELECT {column} - (({column} - $2) % $4) AS bucket, status, sum(count)::int8 \
             FROM {table} WHERE {range} GROUP BY 1, 2"
        ))
        .bind(scope_id)
        .bind(query.from_ms)
        .bind(query.to_ms)
        .bind(query.interval_ms)
        .fetch_all(&mut *tx)
        .await?;
        let rows: Vec<BreakdownRow> = sqlx::query_as(&format!(
            "SELECT endpoint, method, response_code, status, sum(count)::int8 AS count \
             FROM {table} WHERE {range} GROUP BY 1, 2, 3, 4"
        ))
        .bind(scope_id)
        .bind(query.from_ms)
        .bind(query.to_ms)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;

        Ok(report_from_rows(query, series_rows, rows))
    }

    /// One page of the request log, newest first (then by storage order), through the index of
    /// the most selective scope the filter has (resource, key, workspace, else time).
    pub(super) async fn request_page(&self, filter: &RequestFilter) -> StoreResult<RequestPage> {
        let limit = filter.limit.max(1);
        let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "SELECT id, request_id, ts, key_id, workspace_id, method, endpoint, resource_id, \
             response_code, status, duration_ms, client_ip, credits, admitted, instance \
             FROM usage_records WHERE TRUE",
        );
        for (column, value) in [
            ("workspace_id", &filter.workspace_id),
            ("key_id", &filter.key_id),
            ("resource_id", &filter.resource_id),
            ("method", &filter.method),
            ("endpoint", &filter.endpoint),
        ] {
            if let Some(v) = value {
                qb.push(format!(" AND {column} = ")).push_bind(v.as_str());
            }
        }
        if let Some(v) = filter.from_ms {
            qb.push(" AND ts >= ").push_bind(v);
        }
        if let Some(v) = filter.to_ms {
            qb.push(" AND ts < ").push_bind(v);
        }
        if let Some(v) = filter.status {
            qb.push(" AND status = ").push_bind(v.as_str());
        }
        if let Some(v) = filter.response_code {
            qb.push(" AND response_code = ").push_bind(i64::from(v));
        }
        if let Some(c) = filter.cursor {
            qb.push(" AND (ts, id) < (")
                .push_bind(c.timestamp)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        qb.push(" ORDER BY ts DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows: Vec<RecordRow> = qb.build_query_as().fetch_all(&self.pool).await?;
        let mut records = rows
            .into_iter()
            .map(RequestRecord::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
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
        Ok(RequestPage {
            records,
            next_cursor,
        })
    }
}
