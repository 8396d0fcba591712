//! The roll-up of `usage_tail` into the analytics rollups, and retention by partition (and of
//! the rollups, with [`retention_alone_sql`]). Each is done by one control plane at a time:
//! whoever gets the transaction-level advisory lock ([`ROLLUP_LOCK`], [`RETENTION_LOCK`]) does
//! it, the others skip that pass.
//!
//! A roll-up is one statement: `DELETE FROM usage_tail RETURNING *` feeds upserts of the six
//! rollup tables, so tail rows move into the rollups in one commit (a report's snapshot sees
//! each aggregate once, in the tail or in a rollup). Rows committed by batches after the
//! statement's snapshot stay for the next pass.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::{DAY_MS, HOUR_MS, MINUTE_MS};
use crate::store::StoreResult;

/// How often a control plane tries to roll the tail. The tail holds what batches stored since
/// the last roll-up: at 100,000 records/s, about one aggregate per record in the worst case, so
/// this bounds it to ~200,000 rows while a roll-up keeps up (~0.4 per record on `make bench`'s
/// workload). Each roll-up upserts every combination of the tail again: half a second cost
/// 5.3 µs per record there, two 1.7 µs.
pub(super) const ROLLUP_EVERY: Duration = Duration::from_millis(2000);

/// Advisory lock keys (arbitrary, fixed: every control plane of a database uses the same).
const ROLLUP_LOCK: i64 = 7_301_700_402;
const RETENTION_LOCK: i64 = 7_301_700_403;

/// Whether this transaction is the only retention pass (the lock is held until it ends).
pub(super) fn retention_alone_sql() -> String {
    format!("SELECT pg_try_advisory_xact_lock({RETENTION_LOCK}) AS alone")
}

/// A transaction holding the advisory lock `lock` until it ends; `None` when another control
/// plane holds it.
async fn begin_alone(
    pool: &PgPool,
    lock: i64,
) -> StoreResult<Option<Transaction<'static, Postgres>>> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(lock)
        .fetch_one(&mut *tx)
        .await?;
    Ok(locked.then_some(tx))
}

/// A retention pass waits at most this long for the table lock a partition drop needs (behind
/// long reports); it tries again at its next pass.
const DROP_LOCK_TIMEOUT: &str = "5s";

/// Rolls the tail if no other control plane is; how many tail rows it moved. Then vacuums the
/// tail: the moved rows are dead, every report scans the tail, and autovacuum (a minute apart
/// at best) would let it grow to a minute of rows.
pub(super) async fn roll_tail(pool: &PgPool) -> StoreResult<u64> {
    let Some(mut tx) = begin_alone(pool, ROLLUP_LOCK).await? else {
        return Ok(0);
    };
    let moved: i64 = sqlx::query_scalar(&roll_sql()).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    if moved > 0 {
        sqlx::raw_sql("VACUUM usage_tail").execute(pool).await?;
    }
    Ok(u64::try_from(moved).unwrap_or(0))
}

/// One upsert per rollup table from `moved` (the deleted tail rows): per key (which also keep
/// the key's workspace) and per workspace, per minute, hour and day.
fn roll_sql() -> String {
    let mut ctes = vec!["moved AS (DELETE FROM usage_tail RETURNING *)".to_owned()];
    let scopes = [
        ("key_id", "usage_", ", workspace_id", ", min(workspace_id)"),
        ("workspace_id", "usage_ws_", "", ""),
    ];
    let buckets = [
        ("minutes", "minute", MINUTE_MS),
        ("hours", "hour", HOUR_MS),
        ("days", "day", DAY_MS),
    ];
    for (s, (scope, prefix, ws_column, ws_value)) in scopes.into_iter().enumerate() {
        for (b, (suffix, column, step)) in buckets.into_iter().enumerate() {
            let table = format!("{prefix}{suffix}");
            ctes.push(format!(
                "r{s}{b} AS (INSERT INTO {table} ({scope}, {column}, endpoint, method, \
                 response_code, status{ws_column}, count, credits, duration_ms) \
                 SELECT {scope}, minute - minute % {step}, endpoint, method, response_code, \
                        status{ws_value}, sum(count), sum(credits), sum(duration_ms) \
                 FROM moved GROUP BY 1, 2, 3, 4, 5, 6 \
                 ON CONFLICT ({scope}, {column}, endpoint, method, response_code, status) \
                 DO UPDATE SET count = {table}.count + excluded.count, \
                     credits = {table}.credits + excluded.credits, \
                     duration_ms = {table}.duration_ms + excluded.duration_ms)"
            ));
        }
    }
    format!("WITH {} SELECT count(*) FROM moved", ctes.join(", "))
}

/// Statistics of the raw records (the partitioned table and, recursively, each partition),
/// unless another control plane is taking them: autovacuum never analyzes a partitioned table,
/// and may be off. The request log's plans need them: over 10M records without statistics, a
/// workspace's log filtered by endpoint and code took 0.9 s, with them 11 ms. With retention,
/// so at startup and hourly.
pub(super) async fn analyze_records(pool: &PgPool) -> StoreResult<()> {
    if let Some(mut tx) = begin_alone(pool, RETENTION_LOCK).await? {
        sqlx::query("ANALYZE usage_records")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The partitions of `usage_records`, as (name, first day's start in Unix ms), oldest first.
/// Names not made by `tollgate_usage_partition` (`usage_records_YYYYMMDD`) are left out.
async fn partitions(pool: &PgPool) -> StoreResult<Vec<(String, i64)>> {
    let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT c.relname::text, \
                CAST(extract(epoch FROM to_date(substr(c.relname, 15), 'YYYYMMDD')) AS BIGINT) \
                  * 1000 \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = CAST('usage_records' AS regclass) \
           AND c.relname ~ '^usage_records_[0-9]{8}$' \
         ORDER BY c.relname",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(name, day)| day.map(|d| (name, d)))
        .collect())
}

/// Drops the partitions whose whole day is before `before_ms`, unless another control plane is
/// doing so; how many records they held. A record therefore goes with its day: up to a day
/// after `before_ms` passes it.
pub(super) async fn drop_partitions_before(pool: &PgPool, before_ms: i64) -> StoreResult<u64> {
    let expired: Vec<String> = partitions(pool)
        .await?
        .into_iter()
        .filter(|(_, day)| day + DAY_MS <= before_ms)
        .map(|(name, _)| name)
        .collect();
    let mut dropped = 0u64;
    for name in expired {
        let Some(mut tx) = begin_alone(pool, RETENTION_LOCK).await? else {
            break;
        };
        sqlx::query(&format!("SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await?;
        // The name is one `partitions` matched against ^usage_records_[0-9]{8}$.
        let exists: Option<String> = sqlx::query_scalar("SELECT CAST(to_regclass($1) AS TEXT)")
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?;
        if exists.is_none() {
            continue;
        }
        let held: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{name}\""))
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(&format!("DROP TABLE \"{name}\""))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        dropped += u64::try_from(held).unwrap_or(0);
    }
    Ok(dropped)
}
