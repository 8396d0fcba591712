//! PostgreSQL: analytics from the rollups and their tail, and the request log (ingest:
//! `ingest.rs`, roll-up: `rollup.rs`).

use sqlx::{FromRow, Postgres, QueryBuilder};

use crate::domain::{
    RequestFilter, RequestPage, RequestRecord, UsageQuery, UsageReport, DAY_MS, HOUR_MS, MINUTE_MS,
};
use crate::store::postgres::ingest::{status_code, status_from_code};
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
    response_code: i16,
    status: i16,
    duration_ms: f64,
    client_ip: String,
    credits: i64,
    admitted: bool,
    instance: String,
}

impl TryFrom<RecordRow> for RequestRecord {
    type Error = StoreError;

    fn try_from(r: RecordRow) -> StoreResult<Self> {
        let status = status_from_code(r.status).ok_or_else(|| {
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

/// The request log's conditions on a name, as the number the narrow records carry (no such
/// name: no number, no rows).
const NAME_CONDITIONS: [&str; 4] = [
    " AND r.workspace_ref = (SELECT ref FROM workspaces WHERE id = ",
    " AND r.key_ref = (SELECT ref FROM api_keys WHERE id = ",
    " AND r.method = (SELECT id FROM usage_names WHERE name = ",
    " AND r.endpoint = (SELECT id FROM usage_names WHERE name = ",
];

impl PostgresStore {
    pub(super) async fn report(&self, query: &UsageQuery) -> StoreResult<UsageReport> {
        report::usage_report(self, query, rollup_rows).await
    }

    /// One page of the request log, newest first (then by storage order), through the index of
    /// the most selective scope the filter has (resource, key, workspace, else time). The page
    /// is chosen on the narrow records; only its rows get their names back.
    pub(super) async fn request_page(&self, filter: &RequestFilter) -> StoreResult<RequestPage> {
        let limit = filter.limit.max(1);
        let mut qb: QueryBuilder<'_, Postgres> = QueryBuilder::new(
            "SELECT r.id, r.request_id, r.timestamp, k.id AS key_id, w.id AS workspace_id, \
             m.name AS method, e.name AS endpoint, r.resource_id, r.response_code, r.status, \
             r.duration_ms, r.client_ip, r.credits, r.admitted, i.name AS instance \
             FROM (SELECT * FROM usage_records r WHERE TRUE",
        );
        let names = [
            &filter.workspace_id,
            &filter.key_id,
            &filter.method,
            &filter.endpoint,
        ];
        for (condition, value) in NAME_CONDITIONS.into_iter().zip(names) {
            if let Some(v) = value {
                qb.push(condition).push_bind(v.as_str()).push(")");
            }
        }
        if let Some(v) = &filter.resource_id {
            qb.push(" AND r.resource_id = ").push_bind(v.as_str());
        }
        if let Some(v) = filter.from_ms {
            qb.push(" AND r.timestamp >= ").push_bind(v);
        }
        if let Some(v) = filter.to_ms {
            qb.push(" AND r.timestamp < ").push_bind(v);
        }
        if let Some(v) = filter.status {
            qb.push(" AND r.status = ").push_bind(status_code(v));
        }
        if let Some(v) = filter.response_code {
            qb.push(" AND r.response_code = ").push_bind(i64::from(v));
        }
        if let Some(c) = filter.cursor {
            // The first condition bounds the index range; the second breaks ties.
            qb.push(" AND r.timestamp <= ")
                .push_bind(c.timestamp)
                .push(" AND (r.timestamp, r.id) < (")
                .push_bind(c.timestamp)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        qb.push(" ORDER BY r.timestamp DESC, r.id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1)
            .push(
                ") r JOIN api_keys k ON k.ref = r.key_ref \
                 JOIN workspaces w ON w.ref = r.workspace_ref \
                 JOIN usage_names m ON m.id = r.method \
                 JOIN usage_names e ON e.id = r.endpoint \
                 JOIN usage_names i ON i.id = r.instance \
                 ORDER BY r.timestamp DESC, r.id DESC",
            );
        let rows: Vec<RecordRow> = qb.build_query_as().fetch_all(&self.pool).await?;
        let records = rows
            .into_iter()
            .map(RequestRecord::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(page_of(records, limit))
    }
}

/// A report's rollup rows (see [`report::RollupRows`]): the table the report reads, plus the
/// tail not rolled into it yet, summed to the table's bucket.
fn rollup_rows(source: &ReportSource) -> String {
    let ReportSource { table, column, .. } = source;
    let scope = source.scope_condition("SELECT json_array_elements_text(CAST($1 AS json))");
    let step = match *column {
        "minute" => MINUTE_MS,
        "hour" => HOUR_MS,
        _ => DAY_MS,
    };
    format!(
        "(SELECT {column} AS bucket, endpoint, method, response_code, status, count, credits \
         FROM {table} WHERE {scope} AND {column} >= $2 AND {column} < $3 \
         UNION ALL \
         SELECT minute - minute % {step} AS bucket, endpoint, method, response_code, status, \
                count, credits \
         FROM usage_tail WHERE {scope} AND minute - minute % {step} >= $2 \
           AND minute - minute % {step} < $3)"
    )
}
