//! SQLite: usage ingest, analytics from rollups and the request log.
//!
//! Ingest is one `BEGIN IMMEDIATE` transaction per batch: multi-row `INSERT ... ON CONFLICT
//! (request_id) DO NOTHING RETURNING request_id` for the raw records (so duplicates are known
//! without a second pass), then every count table is upserted from aggregates computed here, a
//! few hundred rows per statement.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use sqlx::{FromRow, QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::sqlite::{LookupCache, SqliteStore};
use super::usage::{
    floor_to, EndpointCount, IngestOutcome, IngestRejection, MethodCount, RequestCursor,
    RequestFilter, RequestPage, RequestRecord, ResponseCodeCount, SeriesBucket, StatusTotals,
    UsageQuery, UsageRecord, UsageReport, UsageScope, UsageStatus, DAY_MS, HOUR_MS, MINUTE_MS,
    RECENT_BUCKET_MS, TOP_ENDPOINTS,
};
use super::{StoreError, StoreResult};
use crate::clock;
use crate::validate::ValidationError;

/// SQLite allows 32766 bound parameters per statement; stay well below.
const MAX_PARAMS: usize = 30_000;

/// Splits `items` into statements of a few fixed sizes (powers of 8 below the parameter limit),
/// so every statement text repeats and stays prepared in the connection's statement cache
/// instead of being parsed again for each batch.
fn fixed_chunks<T>(items: &[T], columns: usize) -> Vec<&[T]> {
    let limit = (MAX_PARAMS / columns).min(1024);
    let mut size = 1;
    while size * 8 <= limit {
        size *= 8;
    }
    let mut out = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        while size > rest.len() {
            size /= 8;
        }
        let (chunk, tail) = rest.split_at(size.max(1));
        out.push(chunk);
        rest = tail;
    }
    out
}

/// Per-minute (or per-hour) rollup row: key x bucket x endpoint x method x code x status.
type RollupKey<'a> = (&'a str, i64, &'a str, &'a str, u16, UsageStatus);

#[derive(Default)]
struct RollupValue<'a> {
    workspace_id: &'a str,
    count: i64,
    credits: i64,
    duration_ms: f64,
}

/// Everything one batch adds to the count tables.
#[derive(Default)]
struct Aggregates<'a> {
    minutes: HashMap<RollupKey<'a>, RollupValue<'a>>,
    hours: HashMap<RollupKey<'a>, RollupValue<'a>>,
    days: HashMap<RollupKey<'a>, RollupValue<'a>>,
    admitted_totals: HashMap<&'a str, i64>,
    admitted_minutes: HashMap<(&'a str, i64), i64>,
    admitted_hours: HashMap<(&'a str, i64), i64>,
    instance_buckets: HashMap<(&'a str, &'a str, i64), i64>,
    month_calls: HashMap<(&'a str, i64), i64>,
    last_used: HashMap<&'a str, i64>,
}

impl<'a> Aggregates<'a> {
    fn add(&mut self, r: &'a UsageRecord) {
        let minute = floor_to(r.timestamp, MINUTE_MS);
        let hour = floor_to(r.timestamp, HOUR_MS);
        for (map, bucket) in [
            (&mut self.minutes, minute),
            (&mut self.hours, hour),
            (&mut self.days, floor_to(r.timestamp, DAY_MS)),
        ] {
            let v = map
                .entry((
                    r.key_id.as_str(),
                    bucket,
                    r.endpoint.as_str(),
                    r.method.as_str(),
                    r.response_code,
                    r.status,
                ))
                .or_default();
            v.workspace_id = &r.workspace_id;
            v.count += 1;
            v.credits += i64::from(r.credits);
            v.duration_ms += r.duration_ms;
        }
        if r.admitted {
            *self.admitted_totals.entry(&r.key_id).or_default() += 1;
            *self
                .admitted_minutes
                .entry((&r.key_id, minute))
                .or_default() += 1;
            *self.admitted_hours.entry((&r.key_id, hour)).or_default() += 1;
            *self
                .instance_buckets
                .entry((
                    &r.key_id,
                    &r.instance,
                    floor_to(r.timestamp, RECENT_BUCKET_MS),
                ))
                .or_default() += 1;
        }
        *self
            .month_calls
            .entry((&r.key_id, clock::utc_month(r.timestamp)))
            .or_default() += 1;
        let last = self.last_used.entry(&r.key_id).or_insert(r.timestamp);
        *last = (*last).max(r.timestamp);
    }
}

async fn upsert_rollups(
    conn: &mut SqliteConnection,
    table: &str,
    bucket_column: &str,
    rows: &HashMap<RollupKey<'_>, RollupValue<'_>>,
) -> StoreResult<()> {
    let rows: Vec<_> = rows.iter().collect();
    for chunk in fixed_chunks(&rows, 10) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
            "INSERT INTO {table} (key_id, {bucket_column}, endpoint, method, response_code, \
             status, workspace_id, count, credits, duration_ms) "
        ));
        qb.push_values(chunk, |mut b, (k, v)| {
            b.push_bind(k.0)
                .push_bind(k.1)
                .push_bind(k.2)
                .push_bind(k.3)
                .push_bind(k.4)
                .push_bind(k.5.as_str())
                .push_bind(v.workspace_id)
                .push_bind(v.count)
                .push_bind(v.credits)
                .push_bind(v.duration_ms);
        });
        qb.push(format!(
            " ON CONFLICT (key_id, {bucket_column}, endpoint, method, response_code, status) \
             DO UPDATE SET count = count + excluded.count, \
             credits = credits + excluded.credits, \
             duration_ms = duration_ms + excluded.duration_ms"
        ));
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Upserts `(key columns..., value)` rows adding `value` to `value_column`.
async fn upsert_counts<'a, K: Copy + Send + Sync + 'a>(
    conn: &mut SqliteConnection,
    table: &str,
    key_columns: &[&str],
    value_column: &str,
    rows: &HashMap<K, i64>,
    bind_key: impl Fn(&mut sqlx::query_builder::Separated<'_, 'a, Sqlite, &'static str>, K),
) -> StoreResult<()> {
    let rows: Vec<(K, i64)> = rows.iter().map(|(k, v)| (*k, *v)).collect();
    let keys = key_columns.join(", ");
    for chunk in fixed_chunks(&rows, key_columns.len() + 1) {
        let mut qb: QueryBuilder<'a, Sqlite> =
            QueryBuilder::new(format!("INSERT INTO {table} ({keys}, {value_column}) "));
        qb.push_values(chunk, |mut b, (k, v)| {
            bind_key(&mut b, *k);
            b.push_bind(*v);
        });
        qb.push(format!(
            " ON CONFLICT ({keys}) DO UPDATE SET {value_column} = {value_column} + excluded.{value_column}"
        ));
        qb.build().execute(&mut *conn).await?;
    }
    Ok(())
}

fn rejection(position: usize, r: &UsageRecord, field: &str, message: &str) -> IngestRejection {
    IngestRejection {
        position,
        request_id: Some(r.request_id.clone()),
        error: ValidationError {
            field: field.to_owned(),
            message: message.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::fixed_chunks;

    #[test]
    fn chunks_have_few_distinct_sizes_and_cover_everything() {
        let items: Vec<u32> = (0..1000).collect();
        let chunks = fixed_chunks(&items, 14);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 1000);
        assert!(
            sizes.iter().all(|s| [512, 64, 8, 1].contains(s)),
            "{sizes:?}"
        );
        assert_eq!(chunks.concat(), items);
        assert!(fixed_chunks::<u32>(&[], 3).is_empty());
    }
}

#[derive(FromRow)]
struct BreakdownRow {
    endpoint: String,
    method: String,
    response_code: i64,
    status: String,
    count: i64,
}

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
            StoreError::Backend(format!("unknown status '{}' in usage_records", r.status).into())
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

fn sorted_counts<K: Ord + Clone>(map: HashMap<K, u64>) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = map.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// One `ingest_usage` call waiting for the writer.
pub(super) struct IngestJob {
    pub records: Vec<UsageRecord>,
    pub reply: oneshot::Sender<StoreResult<IngestOutcome>>,
}

/// Records one transaction may take from queued batches (group commit).
const GROUP_MAX_RECORDS: usize = 20_000;

/// The ingest writer: takes every batch queued while the previous transaction ran and stores
/// them in one transaction, so concurrent senders share the commit and the rollup upserts.
pub(super) async fn ingest_writer(
    writer: SqlitePool,
    lookups: Arc<LookupCache>,
    mut jobs: mpsc::Receiver<IngestJob>,
) {
    while let Some(first) = jobs.recv().await {
        let mut group = vec![first];
        let mut queued = group[0].records.len();
        while queued < GROUP_MAX_RECORDS {
            match jobs.try_recv() {
                Ok(job) => {
                    queued += job.records.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        let batches: Vec<&[UsageRecord]> = group.iter().map(|j| j.records.as_slice()).collect();
        let result = ingest_group(&writer, &lookups, &batches).await;
        match result {
            Ok(outcomes) => {
                for (job, outcome) in group.into_iter().zip(outcomes) {
                    // The caller may have gone (client disconnected): nothing to tell.
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for job in group {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Backend(message.clone().into())));
                }
            }
        }
    }
}

/// Stores several batches in one transaction; one outcome per batch.
async fn ingest_group(
    writer: &SqlitePool,
    lookups: &LookupCache,
    batches: &[&[UsageRecord]],
) -> StoreResult<Vec<IngestOutcome>> {
    let mut outcomes = vec![IngestOutcome::default(); batches.len()];
    if batches.iter().all(|b| b.is_empty()) {
        return Ok(outcomes);
    }
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;

    // Keys and their workspaces, checked inside the transaction: a key with no history can
    // be deleted, and this batch is about to give it one.
    let key_ids: Vec<&str> = batches
        .iter()
        .flat_map(|b| b.iter().map(|r| r.key_id.as_str()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut owners: HashMap<String, String> = HashMap::new();
    for chunk in fixed_chunks(&key_ids, 1) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT id, workspace_id FROM api_keys WHERE id IN (");
        let mut list = qb.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        qb.push(")");
        let rows: Vec<(String, String)> = qb.build_query_as().fetch_all(&mut *tx).await?;
        owners.extend(rows);
    }
    let mut good: Vec<(usize, &UsageRecord)> = Vec::new();
    for (batch, records) in batches.iter().enumerate() {
        for (position, r) in records.iter().enumerate() {
            let error = match owners.get(&r.key_id) {
                None => rejection(position, r, "key_id", "unknown API key"),
                Some(ws) if *ws != r.workspace_id => rejection(
                    position,
                    r,
                    "workspace_id",
                    "is not the workspace of key_id",
                ),
                Some(_) => {
                    good.push((batch, r));
                    continue;
                }
            };
            if let Some(o) = outcomes.get_mut(batch) {
                o.rejected.push(error);
            }
        }
    }

    // Raw records; RETURNING says which ones were new.
    let mut inserted: HashSet<String> = HashSet::with_capacity(good.len());
    for chunk in fixed_chunks(&good, 14) {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "INSERT INTO usage_records (request_id, timestamp, key_id, workspace_id, method, \
             endpoint, resource_id, response_code, status, duration_ms, client_ip, credits, \
             admitted, instance) ",
        );
        qb.push_values(chunk, |mut b, (_, r)| {
            b.push_bind(r.request_id.as_str())
                .push_bind(r.timestamp)
                .push_bind(r.key_id.as_str())
                .push_bind(r.workspace_id.as_str())
                .push_bind(r.method.as_str())
                .push_bind(r.endpoint.as_str())
                .push_bind(r.resource_id.as_deref())
                .push_bind(r.response_code)
                .push_bind(r.status.as_str())
                .push_bind(r.duration_ms)
                .push_bind(r.client_ip.as_str())
                .push_bind(r.credits)
                .push_bind(r.admitted)
                .push_bind(r.instance.as_str());
        });
        qb.push(" ON CONFLICT (request_id) DO NOTHING RETURNING request_id");
        let rows: Vec<(String,)> = qb.build_query_as().fetch_all(&mut *tx).await?;
        inserted.extend(rows.into_iter().map(|(id,)| id));
    }

    // A request_id is new at its first occurrence only.
    let mut aggregates = Aggregates::default();
    let mut accepted = 0;
    for (batch, r) in good {
        let Some(o) = outcomes.get_mut(batch) else {
            continue;
        };
        if inserted.remove(&r.request_id) {
            o.accepted += 1;
            accepted += 1;
            aggregates.add(r);
        } else {
            o.duplicates += 1;
        }
    }
    if accepted == 0 {
        tx.rollback().await?;
        return Ok(outcomes);
    }

    let a = &aggregates;
    upsert_rollups(&mut tx, "usage_minutes", "minute", &a.minutes).await?;
    upsert_rollups(&mut tx, "usage_hours", "hour", &a.hours).await?;
    upsert_rollups(&mut tx, "usage_days", "day", &a.days).await?;
    upsert_counts(
        &mut tx,
        "key_admitted_totals",
        &["key_id"],
        "admitted",
        &a.admitted_totals,
        |b, k| {
            b.push_bind(k);
        },
    )
    .await?;
    upsert_counts(
        &mut tx,
        "key_admitted_minutes",
        &["key_id", "minute"],
        "admitted",
        &a.admitted_minutes,
        |b, (k, t)| {
            b.push_bind(k).push_bind(t);
        },
    )
    .await?;
    upsert_counts(
        &mut tx,
        "key_admitted_hours",
        &["key_id", "hour"],
        "admitted",
        &a.admitted_hours,
        |b, (k, t)| {
            b.push_bind(k).push_bind(t);
        },
    )
    .await?;
    upsert_counts(
        &mut tx,
        "key_instance_buckets",
        &["key_id", "instance", "bucket"],
        "admitted",
        &a.instance_buckets,
        |b, (k, i, t)| {
            b.push_bind(k).push_bind(i).push_bind(t);
        },
    )
    .await?;
    upsert_counts(
        &mut tx,
        "key_month_calls",
        &["key_id", "month"],
        "calls",
        &a.month_calls,
        |b, (k, m)| {
            b.push_bind(k).push_bind(m);
        },
    )
    .await?;
    // last_used_at = max(existing, newest record), every key in one statement.
    let last_used: Vec<(&str, i64)> = a.last_used.iter().map(|(k, t)| (*k, *t)).collect();
    for chunk in fixed_chunks(&last_used, 2) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new("UPDATE api_keys SET last_used_at = v.column2 FROM (");
        qb.push_values(chunk, |mut b, (k, t)| {
            b.push_bind(*k).push_bind(*t);
        });
        qb.push(
            ") AS v WHERE api_keys.id = v.column1 \
                 AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < v.column2)",
        );
        qb.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    lookups.invalidate_keys(a.admitted_totals.keys().copied());
    Ok(outcomes)
}

impl SqliteStore {
    pub(super) async fn report(&self, query: &UsageQuery) -> StoreResult<UsageReport> {
        let mut conn = self.readers.acquire().await?;
        let (scope_column, scope_id) = match &query.scope {
            UsageScope::Key(id) => ("key_id", id.as_str()),
            UsageScope::Workspace(id) => ("workspace_id", id.as_str()),
        };
        let (exists_sql, missing) = match &query.scope {
            UsageScope::Key(_) => (
                "SELECT 1 FROM api_keys WHERE id = ?",
                StoreError::KeyNotFound,
            ),
            UsageScope::Workspace(_) => (
                "SELECT 1 FROM workspaces WHERE id = ?",
                StoreError::WorkspaceNotFound,
            ),
        };
        let exists: Option<(i64,)> = sqlx::query_as(exists_sql)
            .bind(scope_id)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(missing);
        }

        // The coarsest rollup that tiles the series: days for 1d, hours for 1h, else minutes.
        let (table, column) = match query.interval_ms {
            i if i >= DAY_MS => ("usage_days", "day"),
            i if i >= HOUR_MS => ("usage_hours", "hour"),
            _ => ("usage_minutes", "minute"),
        };
        let range = format!("{scope_column} = ?1 AND {column} >= ?2 AND {column} < ?3");
        // Two narrow aggregates instead of one wide one: the series per bucket and status, and
        // the breakdowns over the whole range.
        let series_rows: Vec<(i64, String, i64)> = sqlx::query_as(&format!(
            "SELECT {column} - (({column} - ?2) % ?4) AS bucket, status, sum(count) \
             FROM {table} WHERE {range} GROUP BY 1, 2"
        ))
        .bind(scope_id)
        .bind(query.from_ms)
        .bind(query.to_ms)
        .bind(query.interval_ms)
        .fetch_all(&mut *conn)
        .await?;
        let rows: Vec<BreakdownRow> = sqlx::query_as(&format!(
            "SELECT endpoint, method, response_code, status, sum(count) AS count \
             FROM {table} WHERE {range} GROUP BY 1, 2, 3, 4"
        ))
        .bind(scope_id)
        .bind(query.from_ms)
        .bind(query.to_ms)
        .fetch_all(&mut *conn)
        .await?;

        let mut totals = StatusTotals::default();
        let mut by_method: HashMap<String, u64> = HashMap::new();
        let mut by_code: HashMap<u16, u64> = HashMap::new();
        let mut by_endpoint: HashMap<(String, String), u64> = HashMap::new();
        let points =
            usize::try_from((query.to_ms - query.from_ms) / query.interval_ms).unwrap_or(0);
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

        Ok(UsageReport {
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
        })
    }

    pub(super) async fn request_page(&self, filter: &RequestFilter) -> StoreResult<RequestPage> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, request_id, timestamp, key_id, workspace_id, method, endpoint, \
             resource_id, response_code, status, duration_ms, client_ip, credits, admitted, \
             instance FROM usage_records WHERE 1 = 1",
        );
        if let Some(v) = &filter.workspace_id {
            qb.push(" AND workspace_id = ").push_bind(v.as_str());
        }
        if let Some(v) = &filter.key_id {
            qb.push(" AND key_id = ").push_bind(v.as_str());
        }
        if let Some(v) = &filter.resource_id {
            qb.push(" AND resource_id = ").push_bind(v.as_str());
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
        if let Some(v) = &filter.method {
            qb.push(" AND method = ").push_bind(v.as_str());
        }
        if let Some(v) = &filter.endpoint {
            qb.push(" AND endpoint = ").push_bind(v.as_str());
        }
        if let Some(v) = filter.response_code {
            qb.push(" AND response_code = ").push_bind(v);
        }
        if let Some(c) = filter.cursor {
            qb.push(" AND (timestamp, id) < (")
                .push_bind(c.timestamp)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        let limit = filter.limit.max(1);
        qb.push(" ORDER BY timestamp DESC, id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1);
        let rows: Vec<RecordRow> = qb.build_query_as().fetch_all(&self.readers).await?;
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
