//! PostgreSQL usage ingest: one transaction per batch stores the raw records (new ones only),
//! every rollup and count table (credits spent: of admitted records only), `calls_this_month`
//! and `last_used_at`.
//!
//! Idempotency: a record is a duplicate when a stored record has the same `request_id` and the
//! same `timestamp` (the filter re-delivers a batch byte for byte): the unique index
//! `usage_records_request` and `ON CONFLICT DO NOTHING … RETURNING` say which records are new,
//! and only those are counted. A concurrent transaction inserting the same record waits for the
//! first one to commit, then skips it.
//!
//! Locks: the rows of the batch's keys first (`FOR NO KEY UPDATE`, in id order), which orders
//! ingest against `delete_key` (a key gets its first record or is deleted, never both) and
//! against other batches of the same keys; then the count tables, always in the same table order
//! and, within a table, in key order, so two batches never wait for each other in a cycle. A
//! deadlock or serialization failure anyway is retried by the caller.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::PgConnection;

use crate::clock;
use crate::domain::ValidationError;
use crate::domain::{
    floor_to, IngestOutcome, IngestRejection, UsageRecord, DAY_MS, HOUR_MS, MINUTE_MS,
    RECENT_BUCKET_MS,
};
use crate::store::postgres::PostgresStore;
use crate::store::StoreResult;

/// Records per INSERT statement.
const INSERT_CHUNK: usize = 1_000;

/// (scope id, bucket start, endpoint, method, response code, status).
type RollupKey<'a> = (&'a str, i64, &'a str, &'a str, i64, &'static str);

#[derive(Default)]
struct RollupValue<'a> {
    workspace_id: &'a str,
    count: i64,
    credits: i64,
    duration_ms: f64,
}

/// Everything one batch adds to the count tables, each map in the order rows are written.
#[derive(Default)]
struct CountRows<'a> {
    /// Per key: minutes, hours, days.
    keys: [BTreeMap<RollupKey<'a>, RollupValue<'a>>; 3],
    /// Per workspace: minutes, hours, days.
    workspaces: [BTreeMap<RollupKey<'a>, RollupValue<'a>>; 3],
    /// Per key, admitted records and their credits, all time.
    admitted_totals: BTreeMap<&'a str, (i64, i64)>,
    admitted_minutes: BTreeMap<(&'a str, i64), i64>,
    admitted_hours: BTreeMap<(&'a str, i64), i64>,
    /// Per key and UTC day, credits of admitted records (rows only for credits spent).
    credit_days: BTreeMap<(&'a str, i64), i64>,
    /// Per key, instance and 10-s bucket, admitted records and their credits.
    instance_buckets: BTreeMap<(&'a str, &'a str, i64), (i64, i64)>,
    month_calls: BTreeMap<(&'a str, i64), i64>,
    last_used: BTreeMap<&'a str, i64>,
}

const BUCKETS: [i64; 3] = [MINUTE_MS, HOUR_MS, DAY_MS];
const KEY_TABLES: [(&str, &str); 3] = [
    ("usage_minutes", "minute"),
    ("usage_hours", "hour"),
    ("usage_days", "day"),
];
const WORKSPACE_TABLES: [(&str, &str); 3] = [
    ("usage_ws_minutes", "minute"),
    ("usage_ws_hours", "hour"),
    ("usage_ws_days", "day"),
];

impl<'a> CountRows<'a> {
    fn add(&mut self, r: &'a UsageRecord) {
        let status = r.status.as_str();
        let code = i64::from(r.response_code);
        // Only admitted requests spend credits: the rollups' credits are those spent.
        let credits = if r.admitted { i64::from(r.credits) } else { 0 };
        for (i, step) in BUCKETS.iter().enumerate() {
            let bucket = floor_to(r.timestamp, *step);
            for (map, scope) in [
                (&mut self.keys[i], r.key_id.as_str()),
                (&mut self.workspaces[i], r.workspace_id.as_str()),
            ] {
                let v = map
                    .entry((scope, bucket, &r.endpoint, &r.method, code, status))
                    .or_default();
                v.workspace_id = &r.workspace_id;
                v.count += 1;
                v.credits += credits;
                v.duration_ms += r.duration_ms;
            }
        }
        let key = r.key_id.as_str();
        if r.admitted {
            let total = self.admitted_totals.entry(key).or_default();
            total.0 += 1;
            total.1 += credits;
            if credits > 0 {
                *self
                    .credit_days
                    .entry((key, floor_to(r.timestamp, DAY_MS)))
                    .or_default() += credits;
            }
            *self
                .admitted_minutes
                .entry((key, floor_to(r.timestamp, MINUTE_MS)))
                .or_default() += 1;
            *self
                .admitted_hours
                .entry((key, floor_to(r.timestamp, HOUR_MS)))
                .or_default() += 1;
            let bucket = self
                .instance_buckets
                .entry((key, &r.instance, floor_to(r.timestamp, RECENT_BUCKET_MS)))
                .or_default();
            bucket.0 += 1;
            bucket.1 += credits;
        }
        *self
            .month_calls
            .entry((key, clock::utc_month(r.timestamp)))
            .or_default() += 1;
        let last = self.last_used.entry(key).or_insert(r.timestamp);
        *last = (*last).max(r.timestamp);
    }
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

impl PostgresStore {
    /// One attempt at storing `records` (the caller retries deadlocks).
    pub(super) async fn ingest(&self, records: &[UsageRecord]) -> StoreResult<IngestOutcome> {
        let mut outcome = IngestOutcome::default();
        if records.is_empty() {
            return Ok(outcome);
        }
        let mut tx = self.pool.begin().await?;

        // Keys and their workspaces, checked (and locked) inside the transaction: a key with no
        // history can be deleted, and this batch is about to give it one.
        let mut key_ids: Vec<&str> = records.iter().map(|r| r.key_id.as_str()).collect();
        key_ids.sort_unstable();
        key_ids.dedup();
        let owners: HashMap<String, String> = sqlx::query_as::<_, (String, String)>(
            "SELECT id, workspace_id FROM api_keys WHERE id = ANY($1) ORDER BY id \
             FOR NO KEY UPDATE",
        )
        .bind(&key_ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();

        // Valid records, first delivery within this batch; repeats within it are duplicates.
        let mut seen: HashSet<(&str, i64)> = HashSet::new();
        let mut candidates: Vec<&UsageRecord> = Vec::with_capacity(records.len());
        for (position, r) in records.iter().enumerate() {
            match owners.get(&r.key_id) {
                Some(ws) if *ws == r.workspace_id => {}
                Some(_) => {
                    outcome.rejected.push(rejection(
                        position,
                        r,
                        "workspace_id",
                        "is not the workspace of key_id",
                    ));
                    continue;
                }
                None => {
                    outcome
                        .rejected
                        .push(rejection(position, r, "key_id", "unknown API key"));
                    continue;
                }
            }
            if seen.insert((&r.request_id, r.timestamp)) {
                candidates.push(r);
            } else {
                outcome.duplicates += 1;
            }
        }

        let mut rows = CountRows::default();
        for chunk in candidates.chunks(INSERT_CHUNK) {
            let stored = insert_records(&mut tx, chunk).await?;
            for r in chunk {
                if stored.contains(&(r.request_id.as_str(), r.timestamp)) {
                    outcome.accepted += 1;
                    rows.add(r);
                } else {
                    outcome.duplicates += 1;
                }
            }
        }
        if outcome.accepted > 0 {
            write_counts(&mut tx, &rows).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Inserts `records` (unless already stored); returns `(request_id, timestamp)` of those it
/// inserted, borrowed from `records`.
async fn insert_records<'a>(
    conn: &mut PgConnection,
    records: &[&'a UsageRecord],
) -> StoreResult<HashSet<(&'a str, i64)>> {
    let n = records.len();
    let mut request_ids = Vec::with_capacity(n);
    let mut timestamps = Vec::with_capacity(n);
    let mut key_ids = Vec::with_capacity(n);
    let mut workspace_ids = Vec::with_capacity(n);
    let mut methods = Vec::with_capacity(n);
    let mut endpoints = Vec::with_capacity(n);
    let mut resource_ids = Vec::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut client_ips = Vec::with_capacity(n);
    let mut credits = Vec::with_capacity(n);
    let mut admitted = Vec::with_capacity(n);
    let mut instances = Vec::with_capacity(n);
    for r in records {
        request_ids.push(r.request_id.as_str());
        timestamps.push(r.timestamp);
        key_ids.push(r.key_id.as_str());
        workspace_ids.push(r.workspace_id.as_str());
        methods.push(r.method.as_str());
        endpoints.push(r.endpoint.as_str());
        resource_ids.push(r.resource_id.as_deref());
        codes.push(i64::from(r.response_code));
        statuses.push(r.status.as_str());
        durations.push(r.duration_ms);
        client_ips.push(r.client_ip.as_str());
        credits.push(i64::from(r.credits));
        admitted.push(r.admitted);
        instances.push(r.instance.as_str());
    }
    // WITH ORDINALITY keeps the batch order, so ids (the cursor's tie-breaker) follow it.
    let inserted: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO usage_records (request_id, timestamp, key_id, workspace_id, method, endpoint, \
         resource_id, response_code, status, duration_ms, client_ip, credits, admitted, instance) \
         SELECT request_id, timestamp, key_id, workspace_id, method, endpoint, resource_id, \
                response_code, status, duration_ms, client_ip, credits, admitted, instance \
         FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::int8[], $9::text[], $10::float8[], $11::text[], \
                     $12::int8[], $13::bool[], $14::text[]) WITH ORDINALITY \
              AS t(request_id, timestamp, key_id, workspace_id, method, endpoint, resource_id, \
                   response_code, status, duration_ms, client_ip, credits, admitted, instance, n) \
         ORDER BY n \
         ON CONFLICT (request_id, timestamp) DO NOTHING \
         RETURNING request_id, timestamp",
    )
    .bind(&request_ids)
    .bind(&timestamps)
    .bind(&key_ids)
    .bind(&workspace_ids)
    .bind(&methods)
    .bind(&endpoints)
    .bind(&resource_ids)
    .bind(&codes)
    .bind(&statuses)
    .bind(&durations)
    .bind(&client_ips)
    .bind(&credits)
    .bind(&admitted)
    .bind(&instances)
    .fetch_all(&mut *conn)
    .await?;
    let inserted: HashSet<(String, i64)> = inserted.into_iter().collect();
    Ok(records
        .iter()
        .map(|r| (r.request_id.as_str(), r.timestamp))
        .filter(|(id, t)| inserted.contains(&((*id).to_owned(), *t)))
        .collect())
}

async fn write_counts(conn: &mut PgConnection, rows: &CountRows<'_>) -> StoreResult<()> {
    for (map, (table, column)) in rows.keys.iter().zip(KEY_TABLES) {
        upsert_rollups(conn, table, "key_id", column, true, map).await?;
    }
    for (map, (table, column)) in rows.workspaces.iter().zip(WORKSPACE_TABLES) {
        upsert_rollups(conn, table, "workspace_id", column, false, map).await?;
    }
    {
        let map = &rows.admitted_totals;
        let mut keys = Vec::with_capacity(map.len());
        let mut counts = Vec::with_capacity(map.len());
        let mut credits = Vec::with_capacity(map.len());
        for (k, (n, c)) in map {
            keys.push(*k);
            counts.push(*n);
            credits.push(*c);
        }
        sqlx::query(
            "INSERT INTO key_admitted_totals (key_id, admitted, credits) \
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[]) \
             ON CONFLICT (key_id) DO UPDATE \
             SET admitted = key_admitted_totals.admitted + excluded.admitted, \
             credits = key_admitted_totals.credits + excluded.credits",
        )
        .bind(&keys)
        .bind(&counts)
        .bind(&credits)
        .execute(&mut *conn)
        .await?;
    }
    for (table, column, value, map) in [
        (
            "key_admitted_minutes",
            "minute",
            "admitted",
            &rows.admitted_minutes,
        ),
        (
            "key_admitted_hours",
            "hour",
            "admitted",
            &rows.admitted_hours,
        ),
        ("key_credit_days", "day", "credits", &rows.credit_days),
    ] {
        if map.is_empty() {
            continue;
        }
        let mut keys = Vec::with_capacity(map.len());
        let mut times = Vec::with_capacity(map.len());
        let mut counts = Vec::with_capacity(map.len());
        for ((k, t), n) in map {
            keys.push(*k);
            times.push(*t);
            counts.push(*n);
        }
        sqlx::query(&format!(
            "INSERT INTO {table} (key_id, {column}, {value}) \
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[]) \
             ON CONFLICT (key_id, {column}) DO UPDATE \
             SET {value} = {table}.{value} + excluded.{value}"
        ))
        .bind(&keys)
        .bind(&times)
        .bind(&counts)
        .execute(&mut *conn)
        .await?;
    }
    {
        let map = &rows.instance_buckets;
        let mut keys = Vec::with_capacity(map.len());
        let mut instances = Vec::with_capacity(map.len());
        let mut buckets = Vec::with_capacity(map.len());
        let mut counts = Vec::with_capacity(map.len());
        let mut credits = Vec::with_capacity(map.len());
        for ((k, i, b), (n, c)) in map {
            keys.push(*k);
            instances.push(*i);
            buckets.push(*b);
            counts.push(*n);
            credits.push(*c);
        }
        sqlx::query(
            "INSERT INTO key_instance_buckets (key_id, instance, bucket, admitted, credits) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) \
             ON CONFLICT (key_id, instance, bucket) DO UPDATE \
             SET admitted = key_instance_buckets.admitted + excluded.admitted, \
             credits = key_instance_buckets.credits + excluded.credits",
        )
        .bind(&keys)
        .bind(&instances)
        .bind(&buckets)
        .bind(&counts)
        .bind(&credits)
        .execute(&mut *conn)
        .await?;
    }
    {
        let map = &rows.month_calls;
        let mut keys = Vec::with_capacity(map.len());
        let mut months = Vec::with_capacity(map.len());
        let mut counts = Vec::with_capacity(map.len());
        for ((k, m), n) in map {
            keys.push(*k);
            months.push(*m);
            counts.push(*n);
        }
        sqlx::query(
            "INSERT INTO key_month_calls (key_id, month, calls) \
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[]) \
             ON CONFLICT (key_id, month) DO UPDATE \
             SET calls = key_month_calls.calls + excluded.calls",
        )
        .bind(&keys)
        .bind(&months)
        .bind(&counts)
        .execute(&mut *conn)
        .await?;
    }
    {
        // last_used_at = max(existing, newest record); the rows are locked already.
        let (keys, times): (Vec<&str>, Vec<i64>) = rows.last_used.iter().unzip();
        sqlx::query(
            "UPDATE api_keys k SET last_used_at = u.t \
             FROM unnest($1::text[], $2::int8[]) AS u(id, t) \
             WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.t)",
        )
        .bind(&keys)
        .bind(&times)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn upsert_rollups(
    conn: &mut PgConnection,
    table: &str,
    scope_column: &str,
    bucket_column: &str,
    with_workspace: bool,
    rows: &BTreeMap<RollupKey<'_>, RollupValue<'_>>,
) -> StoreResult<()> {
    let n = rows.len();
    let mut scopes = Vec::with_capacity(n);
    let mut buckets = Vec::with_capacity(n);
    let mut endpoints = Vec::with_capacity(n);
    let mut methods = Vec::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut counts = Vec::with_capacity(n);
    let mut credits = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut workspaces = Vec::with_capacity(n);
    for (k, v) in rows {
        scopes.push(k.0);
        buckets.push(k.1);
        endpoints.push(k.2);
        methods.push(k.3);
        codes.push(k.4);
        statuses.push(k.5);
        counts.push(v.count);
        credits.push(v.credits);
        durations.push(v.duration_ms);
        workspaces.push(v.workspace_id);
    }
    let (ws_column, ws_value) = if with_workspace {
        (", workspace_id", ", $10::text[]")
    } else {
        ("", "")
    };
    let sql = format!(
        "INSERT INTO {table} ({scope_column}, {bucket_column}, endpoint, method, response_code, \
         status, count, credits, duration_ms{ws_column}) \
         SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[], \
                              $6::text[], $7::int8[], $8::int8[], $9::float8[]{ws_value}) \
         ON CONFLICT ({scope_column}, {bucket_column}, endpoint, method, response_code, status) \
         DO UPDATE SET count = {table}.count + excluded.count, \
         credits = {table}.credits + excluded.credits, \
         duration_ms = {table}.duration_ms + excluded.duration_ms"
    );
    let mut query = sqlx::query(&sql)
        .bind(&scopes)
        .bind(&buckets)
        .bind(&endpoints)
        .bind(&methods)
        .bind(&codes)
        .bind(&statuses)
        .bind(&counts)
        .bind(&credits)
        .bind(&durations);
    if with_workspace {
        query = query.bind(&workspaces);
    }
    query.execute(&mut *conn).await?;
    Ok(())
}
