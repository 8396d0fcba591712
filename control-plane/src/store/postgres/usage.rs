//! PostgreSQL: analytics from rollups and the request log (ingest: `postgres_ingest.rs`).

use sqlx::{FromRow, Postgres, QueryBuilder};

use crate::domain::{
    RequestFilter, RequestPage, RequestRecord, UsageQuery, UsageReport, UsageStatus,
};
use crate::store::postgres::PostgresStore;
use crate::store::rows::page_of;
use crate::store::sql::report::{self, ReportSource};
use crate::store::{StoreError, StoreResult};

#[derive(FromRow)]
struct RecordRow {
    id: i64,
    request_id: String,
    timestamp: i64,
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
            timestamp: r.timestamp,
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
        report::usage_report(self, query, rollup_rows).await
    }

    /// One page of the request log, newest first (then by storage order), through the index of
    /// the most selective scope the filter has (resource, key, workspace, else time).
    pub(super) async fn request_page(&self, filter: &RequestFilter) -> StoreResult<RequestPage> {
        let limit = filter.limit.max(1);
        let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "SELECT id, request_id, timestamp, key_id, workspace_id, method, endpoint, resource_id, \
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
            qb.push(" AND timestamp >= ").push_bind(v);
        }
        if let Some(v) = filter.to_ms {
            qb.push(" AND timestamp < ").push_bind(v);
        }
        if let Some(v) = filter.status {
            qb.push(" AND status = ").push_bind(v.as_str());
        }
        if let Some(v) = filter.response_code {
            qb.push(" AND response_code = ").push_bind(i64::from(v));
        }
        if let Some(c) = filter.cursor {
            qb.push(" AND (timestamp, id) < (")
                .push_bind(c.timestamp)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        qb.push(" ORDER BY timestamp DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows: Vec<RecordRow> = qb.build_query_as().fetch_all(&self.pool).await?;
        let records = rows
            .into_iter()
            .map(RequestRecord::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page_of(records, limit))
    }
}

/// A report's rollup rows (see [`report::RollupRows`]): the table the report reads, as it is.
fn rollup_rows(source: &ReportSource) -> String {
    let ReportSource { table, column, .. } = source;
    let scope = source.scope_condition("SELECT json_array_elements_text(CAST($1 AS json))");
    format!(
        "(SELECT {column} AS bucket, endpoint, method, response_code, status, count, credits \
         FROM {table} WHERE {scope} AND {column} >= $2 AND {column} < $3)"
    )
}
