//! PostgreSQL usage ingest, append-only: one transaction stores a group of batches (the writer,
//! `writer.rs`, gathers them) and
//!   1. takes a `FOR KEY SHARE` lock on the group's keys (they exist, are in the workspace the
//!      records name, and cannot be deleted until this commits; groups do not block each other
//!      on these locks);
//!   2. `COPY`s the candidate records (binary) straight into `usage_records`, in time order
//!      ([`Insert::Copy`]). A record stored already makes the unique index refuse the `COPY`;
//!      the writer then runs the group again with [`Insert::SkipStored`]: the records go through
//!      the connection's staging table and one `INSERT … ON CONFLICT (timestamp, request_hash)
//!      DO NOTHING RETURNING`, which says which are new (a concurrent transaction storing the
//!      same record makes this one wait for it, then skip it). Redeliveries are rare, so
//!      nearly every group takes the `COPY`, which costs half as much per record;
//!   3. appends the new records' per-minute aggregates to `usage_tail`, adds them to the
//!      per-key month counts of one slot and sets `last_used_at` where it is stale (`counts.rs`).
//!
//! Idempotency is on `(timestamp, SHA-256(request_id)[..8])`: two different request ids with the
//! same millisecond would have to share 64 hash bits to be taken for one another.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::domain::{floor_to, DAY_MS};
use crate::domain::{IngestOutcome, IngestRejection, UsageRecord, UsageStatus, ValidationError};
use crate::store::postgres::copy_in::BinaryCopy;
use crate::store::postgres::counts::{write_last_used, write_sums, BatchCounts};
use crate::store::postgres::names::Known;
use crate::store::StoreResult;

/// Slots of the per-key counts (see `counts.rs`; charges take slot 0); readers sum at most this
/// many rows per key and bucket.
pub(super) const COUNT_SLOTS: i16 = 16;

/// The connection's staging table for [`Insert::SkipStored`] (created when the pool opens the
/// connection; emptied by the commit of a transaction that used it).
pub(super) const CREATE_STAGING: &str = "CREATE TEMP TABLE usage_staging (\
    \"timestamp\" BIGINT, request_hash BIGINT, credits BIGINT, duration_ms DOUBLE PRECISION, \
    key_ref INTEGER, workspace_ref INTEGER, method INTEGER, endpoint INTEGER, instance INTEGER, \
    response_code SMALLINT, status SMALLINT, admitted BOOLEAN, request_id TEXT, \
    resource_id TEXT, client_ip TEXT, ord INTEGER) ON COMMIT DELETE ROWS";

/// The columns a record is copied into, in `COPY`'s field order (the staging table's too).
const RECORD_COLUMNS: &str = "\"timestamp\", request_hash, credits, duration_ms, key_ref, \
    workspace_ref, method, endpoint, instance, response_code, status, admitted, request_id, \
    resource_id, client_ip";
const RECORD_FIELDS: i16 = 15;

/// How a transaction puts its records into `usage_records`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Insert {
    /// `COPY` into the table: fails (unique violation) if any record is stored already.
    Copy,
    /// Through the staging table, skipping the records stored already.
    SkipStored,
}

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

/// A key of the group, as locked.
struct KeyRow {
    workspace_id: String,
    key_ref: i32,
    workspace_ref: i32,
    last_used_at: Option<i64>,
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

/// A record to insert: which batch of the group it came from, and its idempotency hash.
struct Candidate<'a> {
    record: &'a UsageRecord,
    batch: usize,
    hash: i64,
}

/// One attempt at storing a group of batches in one transaction; an outcome per batch, in
/// order. The writer retries deadlocks, a dropped partition and (with [`Insert::SkipStored`]) a
/// record stored already.
pub(super) async fn store_group(
    pool: &sqlx::PgPool,
    known: &Known,
    batches: &[&[UsageRecord]],
    insert: Insert,
    slot: i16,
) -> StoreResult<Vec<IngestOutcome>> {
    let mut outcomes: Vec<IngestOutcome> = vec![IngestOutcome::default(); batches.len()];
    let records = || batches.iter().flat_map(|b| b.iter());
    if records().next().is_none() {
        return Ok(outcomes);
    }
    // Names and partitions first, each in its own short transaction: they only ever grow.
    let mut names: Vec<&str> = Vec::new();
    let mut days: Vec<i64> = Vec::new();
    for r in records() {
        names.extend([r.method.as_str(), r.endpoint.as_str(), r.instance.as_str()]);
        days.push(floor_to(r.timestamp, DAY_MS));
    }
    names.sort_unstable();
    names.dedup();
    days.sort_unstable();
    days.dedup();
    let name_ids = known.name_ids(pool, &names).await?;
    known.ensure_partitions(pool, &days).await?;

    let mut tx = pool.begin().await?;
    let mut key_ids: Vec<&str> = records().map(|r| r.key_id.as_str()).collect();
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

    // Valid records, first delivery within this group; repeats within it are duplicates.
    let total: usize = batches.iter().map(|b| b.len()).sum();
    let mut seen: HashSet<(i64, i64)> = HashSet::with_capacity(total);
    let mut candidates: Vec<Candidate<'_>> = Vec::with_capacity(total);
    for (batch, records) in batches.iter().enumerate() {
        let outcome = &mut outcomes[batch];
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
                candidates.push(Candidate {
                    record: r,
                    batch,
                    hash,
                });
            } else {
                outcome.duplicates += 1;
            }
        }
    }
    if candidates.is_empty() {
        tx.commit().await?;
        return Ok(outcomes);
    }
    // In time order (stable: a batch's order within a millisecond stays, and with it the ids,
    // the cursor's tie-breaker): each index takes its entries near the ones before, and two
    // transactions storing the same records meet them in the same order.
    candidates.sort_by_key(|c| c.record.timestamp);

    let stored = insert_records(&mut tx, &candidates, &keys, &name_ids, insert).await?;
    let mut counts = BatchCounts::default();
    for c in &candidates {
        let outcome = &mut outcomes[c.batch];
        if stored
            .as_ref()
            .is_none_or(|s| s.contains(&(c.record.timestamp, c.hash)))
        {
            outcome.accepted += 1;
            counts.add(c.record);
        } else {
            outcome.duplicates += 1;
        }
    }
    if outcomes.iter().any(|o| o.accepted > 0) {
        write_sums(&mut tx, &counts, slot).await?;
        write_last_used(&mut tx, &counts, |id| keys.get(id).map(|k| k.last_used_at)).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Inserts the candidates as `insert` says; `None` when all of them were inserted (a `COPY`),
/// else `(timestamp, request_hash)` of those inserted.
async fn insert_records(
    conn: &mut PgConnection,
    candidates: &[Candidate<'_>],
    keys: &HashMap<String, KeyRow>,
    name_ids: &HashMap<String, i32>,
    insert: Insert,
) -> StoreResult<Option<HashSet<(i64, i64)>>> {
    let name = |n: &str| name_ids.get(n).copied().unwrap_or(0);
    let mut copy = BinaryCopy::with_capacity(candidates.len() * 160);
    let fields = match insert {
        Insert::Copy => RECORD_FIELDS,
        Insert::SkipStored => RECORD_FIELDS + 1, // and `ord`
    };
    for (
        ord,
        Candidate {
            record: r, hash, ..
        },
    ) in candidates.iter().enumerate()
    {
        let (key_ref, workspace_ref) = keys
            .get(&r.key_id)
            .map_or((0, 0), |k| (k.key_ref, k.workspace_ref));
        let row = copy
            .row(fields)
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
            .text(&r.client_ip);
        if insert == Insert::SkipStored {
            row.int4(i32::try_from(ord).unwrap_or(i32::MAX));
        }
    }
    let (table, ord) = match insert {
        Insert::Copy => ("usage_records", ""),
        Insert::SkipStored => ("usage_staging", ", ord"),
    };
    let mut sink = conn
        .copy_in_raw(&format!(
            "COPY {table} ({RECORD_COLUMNS}{ord}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    sink.send(copy.finish()).await?;
    sink.finish().await?;
    if insert == Insert::Copy {
        return Ok(None);
    }
    // In the candidates' order, so ids follow it.
    let inserted: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "INSERT INTO usage_records ({RECORD_COLUMNS}) \
         SELECT {RECORD_COLUMNS} FROM usage_staging ORDER BY ord \
         ON CONFLICT (\"timestamp\", request_hash) DO NOTHING \
         RETURNING \"timestamp\", request_hash"
    ))
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(inserted.into_iter().collect()))
}
