//! The one-off backfill of migration 0004: `rid_hash` for rows migrated without one, in chunks
//! at start-up, so a large database does not hold ingest up.

use super::*;

/// Where the `rid_hash` backfill stands.
#[derive(Default)]
pub(super) struct Backfill {
    /// Last `request_id` done (rows are taken in its order).
    pub(super) after: String,
    pub(super) rows: usize,
}

impl Writer {
    /// Fills in `rid_hash` of every row that has none (rows migrated by 0004).
    #[cfg(test)]
    pub(super) fn backfill_hashes(&mut self) -> rusqlite::Result<()> {
        let mut progress = Backfill::default();
        while self.backfill_chunk(&mut progress)? {}
        Ok(())
    }

    /// One transaction of the backfill: the next rows without a hash, in `request_id` order,
    /// get theirs, and their idempotency key if indexing has passed them (the others get it with
    /// the tail). `false` once no row is left.
    pub(super) fn backfill_chunk(&mut self, progress: &mut Backfill) -> rusqlite::Result<bool> {
        let rows = self.in_transaction(|w| {
            let rows: Vec<(i64, i64, String)> = w
                .conn
                .prepare_cached(
                    "SELECT id, timestamp, request_id FROM usage_records \
                     INDEXED BY usage_records_unhashed WHERE rid_hash IS NULL AND request_id > ?1 \
                     ORDER BY request_id LIMIT ?2",
                )?
                .query_map(params![progress.after, BACKFILL_CHUNK as i64], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let through: i64 = w.conn.query_row(
                "SELECT coalesce((SELECT through_id FROM usage_tail_state), 0)",
                [],
                |row| row.get(0),
            )?;
            let mut update = w
                .conn
                .prepare_cached("UPDATE usage_records SET rid_hash = ?1 WHERE id = ?2")?;
            let mut key = w.conn.prepare_cached(
                "INSERT OR IGNORE INTO usage_request_keys (timestamp, rid_hash, id) \
                 VALUES (?1, ?2, ?3)",
            )?;
            for (id, timestamp, request_id) in &rows {
                let hash = (w.hash)(request_id);
                update.execute(params![hash, id])?;
                if *id <= through {
                    key.execute(params![timestamp, hash, id])?;
                    w.keyed_newest = w.keyed_newest.max(*timestamp);
                }
            }
            Ok::<_, rusqlite::Error>(rows.into_iter().map(|(_, _, r)| r).collect::<Vec<_>>())
        })?;
        progress.rows += rows.len();
        match rows.into_iter().last() {
            Some(last) => {
                progress.after = last;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
