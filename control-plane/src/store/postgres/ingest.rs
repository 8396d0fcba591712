//! PostgreSQL usage ingest, append-only: one transaction per batch
//!   1. takes a `FOR KEY SHARE` lock on the batch's keys (they exist, are in the workspace the
//!      records name, and cannot be deleted until this commits; batches do not block each
//!      other on these locks);
//!   2. `COPY`s the candidate records (binary) into the connection's staging table and inserts
//!      them into `usage_records` in one statement, `ON CONFLICT (timestamp, request_hash) DO
//!      NOTHING RETURNING` which are new (a concurrent transaction storing the same record
//!      makes this one wait for it, then skip it);
//!   3. appends the new records' per-minute aggregates to `usage_tail` (rolled into the
//!      analytics rollups later, by `rollup.rs`) and adds them to the per-key counts of one
//!      slot (`calls_this_month`, quota windows, credits, `recent`);
//!   4. sets `last_used_at` of keys whose value is older than [`LAST_USED_RESOLUTION_MS`].
//!
//! Locks that batches can wait for: the count rows of a slot (a batch picks one slot at random
//! of [`COUNT_SLOTS`], and writes its rows in table then key order, so two batches on one slot
//! never wait in a cycle) and, once a minute per key, the key row for `last_used_at` (taken
//! last, in key order). A deadlock anyway is retried by the caller.
//!
//! Idempotency is on `(timestamp, SHA-256(request_id)[..8])`: two different request ids with the
//! same millisecond would have to share 64 hash bits to be taken for one another.

use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::clock;
use crate::domain::{
    floor_to, IngestOutcome, IngestRejection, UsageRecord, UsageStatus, ValidationError, DAY_MS,
    HOUR_MS, LAST_USED_RESOLUTION_MS, MINUTE_MS, RECENT_BUCKET_MS,
};
use crate::store::postgres::copy_in::BinaryCopy;
use crate::store::postgres::PostgresStore;
use crate::store::StoreResult;

/// Slots of the per-key counts (see the module header); readers sum at most this many rows per
/// key and bucket.
pub(super) const COUNT_SLOTS: i16 = 16;

/// The connection's staging table for `COPY` (created when the pool opens the connection;
/// emptied by every commit).
pub(super) const CREATE_STAGING: &str = "CREATE TEMP TABLE usage_staging (\
    \"timestamp\" BIGINT, request_hash BIGINT, credits BIGINT, duration_ms DOUBLE PRECISION, \
    key_ref INTEGER, workspace_ref INTEGER, method INTEGER, endpoint INTEGER, instance INTEGER, \
    response_code SMALLINT, status SMALLINT, admitted BOOLEAN, request_id TEXT, \
    resource_id TEXT, client_ip TEXT, ord INTEGER) ON COMMIT DELETE ROWS";

const STAGING_FIELDS: i16 = 16;

/// The status as stored in `usage_records.status`.
pub(super) fn status_code(status: UsageStatus) -> i16 {
    match status {
        UsageStatus::Completed => 0,
        UsageStatus::RateLimited => 1,
        UsageStatus::Failed => 2,
    }
}

pub(super) fn status_from_code(code: i16) -> Option<UsageStatus> {
    match code {
        0 => Some(UsageStatus::Completed),
        1 => Some(UsageStatus::RateLimited),
        2 => Some(UsageStatus::Failed),
        _ => None,
    }
}

/// The idempotency hash of a request id: SHA-256's first 8 bytes as a signed integer (the
/// migration computes the same in SQL for records it copies).
pub(super) fn request_hash(request_id: &str) -> i64 {
    let digest = Sha256::digest(request_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A key of the batch, as locked.
struct KeyRow {
    workspace_id: String,
    key_ref: i32,
    workspace_ref: i32,
    last_used_at: Option<i64>,
}

/// (key, workspace, minute, endpoint, method, response code, status) of a tail row.
type TailKey<'a> = (&'a str, &'a str, i64, &'a str, &'a str, i64, &'static str);

/// What one batch adds to the tail and to one slot of the per-key counts, each map in the order
/// its rows are written.
#[derive(Default)]
struct BatchCounts<'a> {
    tail: BTreeMap<TailKey<'a>, (i64, i64, f64)>,
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

impl<'a> BatchCounts<'a> {
    fn add(&mut self, r: &'a UsageRecord) {
        let key = r.key_id.as_str();
        // Only admitted requests spend credits: the rollups' credits are those spent.
        let credits = if r.admitted { i64::from(r.credits) } else { 0 };
        let tail = self
            .tail
            .entry((
                key,
                &r.workspace_id,
                floor_to(r.timestamp, MINUTE_MS),
                &r.endpoint,
                &r.method,
                i64::from(r.response_code),
                r.status.as_str(),
            ))
            .or_default();
        tail.0 += 1;
        tail.1 += credits;
        tail.2 += r.duration_ms;
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
        // Names and partitions first, each in its own short transaction: they only ever grow.
        let mut names: Vec<&str> = Vec::new();
        let mut days: Vec<i64> = Vec::new();
        for r in records {
            names.extend([r.method.as_str(), r.endpoint.as_str(), r.instance.as_str()]);
            days.push(floor_to(r.timestamp, DAY_MS));
        }
        names.sort_unstable();
        names.dedup();
        days.sort_unstable();
        days.dedup();
        let name_ids = self.known.name_ids(&self.pool, &names).await?;
        self.known.ensure_partitions(&self.pool, &days).await?;

        let mut tx = self.pool.begin().await?;
        let mut key_ids: Vec<&str> = records.iter().map(|r| r.key_id.as_str()).collect();
        key_ids.sort_unstable();
        key_ids.dedup();
        let keys: HashMap<String, KeyRow> =
            sqlx::query_as::<_, (String, String, i32, i32, Option<i64>)>(
                "SELECT k.id, k.workspace_id, k.ref, w.ref, k.last_used_at \
                 FROM api_keys k JOIN workspaces w ON w.id = k.workspace_id \
                 WHERE k.id = ANY($1) ORDER BY k.id FOR KEY SHARE OF k",
            )
            .bind(&key_ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(id, workspace_id, key_ref, workspace_ref, last_used_at)| {
                let row = KeyRow {
                    workspace_id,
                    key_ref,
                    workspace_ref,
                    last_used_at,
                };
                (id, row)
            })
            .collect();

        // Valid records, first delivery within this batch; repeats within it are duplicates.
        let mut seen: HashSet<(i64, i64)> = HashSet::with_capacity(records.len());
        let mut candidates: Vec<(&UsageRecord, i64)> = Vec::with_capacity(records.len());
        for (position, r) in records.iter().enumerate() {
            match keys.get(&r.key_id) {
                Some(k) if k.workspace_id == r.workspace_id => {}
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
            let hash = request_hash(&r.request_id);
            if seen.insert((r.timestamp, hash)) {
                candidates.push((r, hash));
            } else {
                outcome.duplicates += 1;
            }
        }
        if candidates.is_empty() {
            tx.commit().await?;
            return Ok(outcome);
        }

        let stored = insert_records(&mut tx, &candidates, &keys, &name_ids).await?;
        let mut counts = BatchCounts::default();
        for (r, hash) in &candidates {
            if stored.contains(&(r.timestamp, *hash)) {
                outcome.accepted += 1;
                counts.add(r);
            } else {
                outcome.duplicates += 1;
            }
        }
        if outcome.accepted > 0 {
            let slot = rand::random_range(0..COUNT_SLOTS);
            write_tail(&mut tx, &counts).await?;
            write_counts(&mut tx, &counts, slot).await?;
            write_last_used(&mut tx, &counts, &keys).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Stages `records` by `COPY` and inserts those not stored yet; returns `(timestamp,
/// request_hash)` of those it inserted.
async fn insert_records(
    conn: &mut PgConnection,
    records: &[(&UsageRecord, i64)],
    keys: &HashMap<String, KeyRow>,
    name_ids: &HashMap<String, i32>,
) -> StoreResult<HashSet<(i64, i64)>> {
    let name = |n: &str| name_ids.get(n).copied().unwrap_or(0);
    let mut copy = BinaryCopy::with_capacity(records.len() * 160);
    for (ord, (r, hash)) in records.iter().enumerate() {
        let (key_ref, workspace_ref) = keys
            .get(&r.key_id)
            .map_or((0, 0), |k| (k.key_ref, k.workspace_ref));
        copy.row(STAGING_FIELDS)
            .int8(r.timestamp)
            .int8(*hash)
            .int8(i64::from(r.credits))
            .float8(r.duration_ms)
            .int4(key_ref)
            .int4(workspace_ref)
            .int4(name(&r.method))
            .int4(name(&r.endpoint))
            .int4(name(&r.instance))
            .int2(i16::try_from(r.response_code).unwrap_or(i16::MAX))
            .int2(status_code(r.status))
            .bool(r.admitted)
            .text(&r.request_id)
            .text_or_null(r.resource_id.as_deref())
            .text(&r.client_ip)
            .int4(i32::try_from(ord).unwrap_or(i32::MAX));
    }
    let mut sink = conn
        .copy_in_raw("COPY usage_staging FROM STDIN (FORMAT binary)")
        .await?;
    sink.send(copy.finish()).await?;
    sink.finish().await?;
    // In batch order, so ids (the cursor's tie-breaker) follow it.
    let inserted: Vec<(i64, i64)> = sqlx::query_as(
        "INSERT INTO usage_records (\"timestamp\", request_hash, credits, duration_ms, key_ref, \
         workspace_ref, method, endpoint, instance, response_code, status, admitted, request_id, \
         resource_id, client_ip) \
         SELECT \"timestamp\", request_hash, credits, duration_ms, key_ref, workspace_ref, \
                method, endpoint, instance, response_code, status, admitted, request_id, \
                resource_id, client_ip \
         FROM usage_staging ORDER BY ord \
         ON CONFLICT (\"timestamp\", request_hash) DO NOTHING \
         RETURNING \"timestamp\", request_hash",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

async fn write_tail(conn: &mut PgConnection, counts: &BatchCounts<'_>) -> StoreResult<()> {
    let n = counts.tail.len();
    let (mut keys, mut workspaces, mut endpoints, mut methods, mut statuses) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut minutes, mut codes, mut sums, mut credits, mut durations) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::<f64>::with_capacity(n),
    );
    for ((key, ws, minute, endpoint, method, code, status), (count, credit, duration)) in
        &counts.tail
    {
        keys.push(*key);
        workspaces.push(*ws);
        minutes.push(*minute);
        endpoints.push(*endpoint);
        methods.push(*method);
        codes.push(*code);
        statuses.push(*status);
        sums.push(*count);
        credits.push(*credit);
        durations.push(*duration);
    }
    sqlx::query(
        "INSERT INTO usage_tail (key_id, workspace_id, minute, endpoint, method, response_code, \
         status, count, credits, duration_ms) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], \
                              $6::int8[], $7::text[], $8::int8[], $9::int8[], $10::float8[])",
    )
    .bind(&keys)
    .bind(&workspaces)
    .bind(&minutes)
    .bind(&endpoints)
    .bind(&methods)
    .bind(&codes)
    .bind(&statuses)
    .bind(&sums)
    .bind(&credits)
    .bind(&durations)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Adds the batch to `slot`'s rows of the per-key count tables, in table then key order.
async fn write_counts(
    conn: &mut PgConnection,
    counts: &BatchCounts<'_>,
    slot: i16,
) -> StoreResult<()> {
    if !counts.admitted_totals.is_empty() {
        let map = &counts.admitted_totals;
        let (keys, sums): (Vec<&str>, Vec<(i64, i64)>) = map.iter().map(|(k, v)| (*k, *v)).unzip();
        let (admitted, credits): (Vec<i64>, Vec<i64>) = sums.into_iter().unzip();
        sqlx::query(
            "INSERT INTO key_admitted_totals (key_id, admitted, credits, slot) \
             SELECT k, a, c, $4 FROM unnest($1::text[], $2::int8[], $3::int8[]) AS u(k, a, c) \
             ON CONFLICT (key_id, slot) DO UPDATE \
             SET admitted = key_admitted_totals.admitted + excluded.admitted, \
             credits = key_admitted_totals.credits + excluded.credits",
        )
        .bind(&keys)
        .bind(&admitted)
        .bind(&credits)
        .bind(slot)
        .execute(&mut *conn)
        .await?;
    }
    for (table, column, value, map) in [
        (
            "key_admitted_minutes",
            "minute",
            "admitted",
            &counts.admitted_minutes,
        ),
        (
            "key_admitted_hours",
            "hour",
            "admitted",
            &counts.admitted_hours,
        ),
        ("key_credit_days", "day", "credits", &counts.credit_days),
        ("key_month_calls", "month", "calls", &counts.month_calls),
    ] {
        if map.is_empty() {
            continue;
        }
        let mut keys = Vec::with_capacity(map.len());
        let mut times = Vec::with_capacity(map.len());
        let mut sums = Vec::with_capacity(map.len());
        for ((k, t), n) in map {
            keys.push(*k);
            times.push(*t);
            sums.push(*n);
        }
        sqlx::query(&format!(
            "INSERT INTO {table} (key_id, {column}, {value}, slot) \
             SELECT k, t, n, $4 FROM unnest($1::text[], $2::int8[], $3::int8[]) AS u(k, t, n) \
             ON CONFLICT (key_id, {column}, slot) DO UPDATE \
             SET {value} = {table}.{value} + excluded.{value}"
        ))
        .bind(&keys)
        .bind(&times)
        .bind(&sums)
        .bind(slot)
        .execute(&mut *conn)
        .await?;
    }
    if !counts.instance_buckets.is_empty() {
        let map = &counts.instance_buckets;
        let mut keys = Vec::with_capacity(map.len());
        let mut instances = Vec::with_capacity(map.len());
        let mut buckets = Vec::with_capacity(map.len());
        let mut admitted = Vec::with_capacity(map.len());
        let mut credits = Vec::with_capacity(map.len());
        for ((k, i, b), (n, c)) in map {
            keys.push(*k);
            instances.push(*i);
            buckets.push(*b);
            admitted.push(*n);
            credits.push(*c);
        }
        sqlx::query(
            "INSERT INTO key_instance_buckets (key_id, instance, bucket, admitted, credits, slot) \
             SELECT k, i, b, a, c, $6 \
             FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) \
               AS u(k, i, b, a, c) \
             ON CONFLICT (key_id, instance, bucket, slot) DO UPDATE \
             SET admitted = key_instance_buckets.admitted + excluded.admitted, \
             credits = key_instance_buckets.credits + excluded.credits",
        )
        .bind(&keys)
        .bind(&instances)
        .bind(&buckets)
        .bind(&admitted)
        .bind(&credits)
        .bind(slot)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// `last_used_at` of the keys whose stored value (as locked at the start) is missing or older
/// than [`LAST_USED_RESOLUTION_MS`] before their newest record: rarely any, so batches rarely
/// wait for each other here. The first record of a key always sets it, before `delete_key` can
/// see the key without it.
async fn write_last_used(
    conn: &mut PgConnection,
    counts: &BatchCounts<'_>,
    keys: &HashMap<String, KeyRow>,
) -> StoreResult<()> {
    let (ids, times): (Vec<&str>, Vec<i64>) = counts
        .last_used
        .iter()
        .filter(|(id, t)| {
            keys.get(**id).is_some_and(|k| {
                k.last_used_at
                    .is_none_or(|at| at <= **t - LAST_USED_RESOLUTION_MS)
            })
        })
        .map(|(id, t)| (*id, *t))
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    // Row locks in key order first (an UPDATE … FROM takes them in plan order).
    sqlx::query("SELECT 1 FROM api_keys WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE api_keys k SET last_used_at = u.t \
         FROM unnest($1::text[], $2::int8[]) AS u(id, t) \
         WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.t)",
    )
    .bind(&ids)
    .bind(&times)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
