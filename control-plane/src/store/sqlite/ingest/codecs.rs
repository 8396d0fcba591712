//! How records and names are written in SQLite columns: the request id's hash, the status
//! codes, the record's row and the multi-row insert.

use super::*;

/// Stable 64-bit hash of a request id (FNV-1a, then a SplitMix64 finaliser to spread the bits).
/// Stored in the database: it must never change.
pub fn request_id_hash(request_id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in request_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    h as i64
}

/// `status` column of `usage_records`.
pub(crate) fn status_code(s: UsageStatus) -> i64 {
    match s {
        UsageStatus::Completed => 1,
        UsageStatus::RateLimited => 2,
        UsageStatus::Failed => 3,
    }
}

pub(crate) fn status_from_code(code: i64) -> Option<UsageStatus> {
    match code {
        1 => Some(UsageStatus::Completed),
        2 => Some(UsageStatus::RateLimited),
        3 => Some(UsageStatus::Failed),
        _ => None,
    }
}

pub(super) const INSERT_RECORD: &str =
    "INSERT INTO usage_records (id, rid_hash, request_id, timestamp, \
     key_ref, workspace_ref, method_ref, endpoint_ref, resource_id, response_code, status, \
     duration_ms, client_ip, credits, admitted, instance_ref) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

/// The next record id: above every stored record and `through_id` (an id at or below it would
/// never be indexed).
pub(super) const NEXT_RECORD_ID: &str =
    "SELECT max(coalesce((SELECT max(id) FROM usage_records), 0), \
     coalesce((SELECT through_id FROM usage_tail_state), 0)) + 1";

/// Parameters of [`INSERT_RECORD`] per record.
pub(super) const RECORD_PARAMS: usize = 16;
/// Records per multi-row INSERT (one statement step instead of one per record).
pub(super) const INSERT_CHUNK: usize = 50;

/// [`INSERT_RECORD`] for [`INSERT_CHUNK`] records.
pub(super) fn insert_chunk_sql() -> String {
    let rows: Vec<String> = (0..INSERT_CHUNK)
        .map(|i| {
            let params: Vec<String> = (1..=RECORD_PARAMS)
                .map(|k| format!("?{}", i * RECORD_PARAMS + k))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO usage_records (id, rid_hash, request_id, timestamp, key_ref, \
         workspace_ref, method_ref, endpoint_ref, resource_id, response_code, status, \
         duration_ms, client_ip, credits, admitted, instance_ref) VALUES {}",
        rows.join(", ")
    )
}

/// Binds one record's [`INSERT_RECORD`] parameters after the first `offset`.
pub(super) fn bind_record(
    stmt: &mut rusqlite::CachedStatement<'_>,
    offset: usize,
    id: i64,
    hash: i64,
    r: &UsageRecord,
    refs: &Refs,
) -> rusqlite::Result<()> {
    let values: [&dyn rusqlite::ToSql; RECORD_PARAMS] = [
        &id,
        &hash,
        &r.request_id,
        &r.timestamp,
        &refs.key,
        &refs.workspace,
        &refs.method,
        &refs.endpoint,
        &r.resource_id,
        &r.response_code,
        &status_code(r.status),
        &r.duration_ms,
        &r.client_ip,
        &r.credits,
        &r.admitted,
        &refs.instance,
    ];
    for (i, v) in values.into_iter().enumerate() {
        stmt.raw_bind_parameter(offset + i + 1, v)?;
    }
    Ok(())
}
