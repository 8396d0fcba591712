//! One ingest transaction (group commit): every batch queued while the previous one ran, checked
//! for duplicates against the tail in memory and the indexed records, stored with their counts.

use super::*;

/// What one ingest transaction did.
pub(super) struct Stored<'a> {
    pub(super) outcomes: Vec<IngestOutcome>,
    /// Keys whose records it stored.
    pub(super) touched: Vec<String>,
    /// The records it stored: `(timestamp, request_id)` -> (hash, id).
    pub(super) fresh: HashMap<(i64, &'a str), (i64, i64)>,
}

pub(super) fn rejection(
    position: usize,
    r: &UsageRecord,
    field: &str,
    message: &str,
) -> IngestRejection {
    IngestRejection {
        position,
        request_id: Some(r.request_id.clone()),
        error: ValidationError {
            field: field.to_owned(),
            message: message.to_owned(),
        },
    }
}

/// A new record on its way into `usage_records`, with its id.
pub(super) struct Pending<'a> {
    pub(super) record: &'a UsageRecord,
    pub(super) id: i64,
    pub(super) hash: i64,
    pub(super) refs: Refs,
}

/// Name references of one record.
pub(super) struct Refs {
    pub(super) key: i64,
    pub(super) workspace: i64,
    pub(super) method: i64,
    pub(super) endpoint: i64,
    pub(super) instance: i64,
}

impl Writer {
    /// [`ingest_group`](Self::ingest_group) once the tail is in memory and has room: without it
    /// a duplicate could pass, so the group fails instead (the filter retries).
    pub(super) fn store_group(
        &mut self,
        batches: &[&[UsageRecord]],
    ) -> StoreResult<Vec<IngestOutcome>> {
        if !self.tail_loaded {
            self.load_tail_logged();
        }
        if self.newest_id - self.through_id >= TAIL_MAX {
            self.index_tail_logged(TAIL_STEP_MAX);
        }
        if !self.tail_loaded {
            return Err(StoreError::Backend(
                "the ingest tail is not loaded; retry later".into(),
            ));
        }
        if self.newest_id - self.through_id >= TAIL_MAX {
            return Err(StoreError::Backend(
                "the ingest tail is full (indexing fails); retry later".into(),
            ));
        }
        self.ingest_group(batches)
            .map_err(|e| no_room(&self.conn, backend(e)))
    }

    /// Stores several batches in one transaction; one outcome per batch.
    pub(super) fn ingest_group(
        &mut self,
        batches: &[&[UsageRecord]],
    ) -> rusqlite::Result<Vec<IngestOutcome>> {
        if batches.iter().all(|b| b.is_empty()) {
            return Ok(vec![IngestOutcome::default(); batches.len()]);
        }
        let mut new_names = HashMap::new();
        let Stored {
            outcomes,
            touched,
            fresh,
        } = self.in_transaction(|w| w.ingest_in_transaction(batches, &mut new_names))?;
        for ((timestamp, request_id), (hash, id)) in fresh {
            self.newest_id = self.newest_id.max(id);
            self.newest_timestamp = self.newest_timestamp.max(timestamp);
            self.tail.insert(timestamp, hash, request_id.to_owned(), id);
        }
        if self.names.len() + new_names.len() > NAMES_CACHE_MAX {
            self.names.clear();
        }
        self.names.extend(new_names);
        if !touched.is_empty() {
            self.lookups
                .invalidate_keys(touched.iter().map(String::as_str));
        }
        Ok(outcomes)
    }

    /// The body of [`ingest_group`](Self::ingest_group). Names first stored here go to
    /// `new_names` (kept only if the transaction commits).
    pub(super) fn ingest_in_transaction<'a>(
        &self,
        batches: &[&'a [UsageRecord]],
        new_names: &mut HashMap<String, i64>,
    ) -> rusqlite::Result<Stored<'a>> {
        let conn = &self.conn;
        let mut outcomes = vec![IngestOutcome::default(); batches.len()];

        // Keys and their workspaces, checked inside the transaction: a key with no history can
        // be deleted, and this batch is about to give it one.
        let mut owners: HashMap<&str, Option<String>> = HashMap::new();
        {
            let mut stmt =
                conn.prepare_cached("SELECT workspace_id FROM api_keys WHERE id = ?1")?;
            for r in batches.iter().flat_map(|b| b.iter()) {
                if !owners.contains_key(r.key_id.as_str()) {
                    let ws: Option<String> = stmt
                        .query_row([r.key_id.as_str()], |row| row.get(0))
                        .optional()?;
                    owners.insert(r.key_id.as_str(), ws);
                }
            }
        }

        // Rows without a hash (0004's, not yet backfilled) are checked by their text.
        let unhashed = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM usage_records INDEXED BY usage_records_unhashed \
                 WHERE rid_hash IS NULL)",
            )?
            .query_row([], |row| row.get::<_, bool>(0))?;
        let mut by_text = conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM usage_records INDEXED BY usage_records_unhashed \
             WHERE rid_hash IS NULL AND request_id = ?1 AND timestamp = ?2)",
        )?;
        let mut keyed = conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM usage_request_keys k \
             CROSS JOIN usage_records r ON r.id = k.id \
             WHERE k.timestamp = ?1 AND k.rid_hash = ?2 AND r.request_id = ?3)",
        )?;
        // By text too: the id of a deleted record can be taken again.
        let mut still_stored = conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM usage_records \
             WHERE id = ?1 AND timestamp = ?2 AND request_id = ?3)",
        )?;

        let mut next_id: i64 = conn
            .prepare_cached(NEXT_RECORD_ID)?
            .query_row([], |row| row.get(0))?;
        let mut fresh: HashMap<(i64, &'a str), (i64, i64)> = HashMap::new();
        let mut aggregates = Aggregates::default();
        let mut pending: Vec<Pending<'a>> = Vec::with_capacity(INSERT_CHUNK);
        for (batch, records) in batches.iter().enumerate() {
            for (position, r) in records.iter().enumerate() {
                let refused = match owners.get(r.key_id.as_str()) {
                    Some(Some(ws)) if *ws == r.workspace_id => None,
                    Some(Some(_)) => Some(rejection(
                        position,
                        r,
                        "workspace_id",
                        "is not the workspace of key_id",
                    )),
                    _ => Some(rejection(position, r, "key_id", "unknown API key")),
                };
                let hash = (self.hash)(&r.request_id);
                // This transaction, then the tail in memory (a record retention deleted since
                // is not stored any more), then the older records, then rows without a hash.
                let duplicate = refused.is_none()
                    && (fresh.contains_key(&(r.timestamp, r.request_id.as_str()))
                        || match self.tail.get(r.timestamp, hash, &r.request_id) {
                            Some(id) => still_stored
                                .query_row(params![id, r.timestamp, r.request_id], |row| {
                                    row.get(0)
                                })?,
                            None => false,
                        }
                        || (r.timestamp <= self.keyed_newest
                            && keyed
                                .query_row(params![r.timestamp, hash, r.request_id], |row| {
                                    row.get(0)
                                })?)
                        || (unhashed
                            && by_text.query_row(params![r.request_id, r.timestamp], |row| {
                                row.get(0)
                            })?));
                if let Some(o) = outcomes.get_mut(batch) {
                    if refused.is_some() || duplicate {
                        o.rejected.extend(refused);
                        o.duplicates += u64::from(duplicate);
                        continue;
                    }
                    o.accepted += 1;
                }
                fresh.insert((r.timestamp, r.request_id.as_str()), (hash, next_id));
                aggregates.add(r);
                pending.push(Pending {
                    record: r,
                    id: next_id,
                    hash,
                    refs: Refs {
                        key: self.name_id(&r.key_id, new_names)?,
                        workspace: self.name_id(&r.workspace_id, new_names)?,
                        method: self.name_id(&r.method, new_names)?,
                        endpoint: self.name_id(&r.endpoint, new_names)?,
                        instance: self.name_id(&r.instance, new_names)?,
                    },
                });
                next_id += 1;
                if pending.len() == INSERT_CHUNK {
                    self.insert_pending(&mut pending)?;
                }
            }
        }
        self.insert_pending(&mut pending)?;
        if fresh.is_empty() {
            return Ok(Stored {
                outcomes,
                touched: Vec::new(),
                fresh,
            });
        }

        // Loaded with the tail (no ingest before): without it, roll nothing away from ingest.
        let rows = aggregates.into_rows(self.rolled_through.unwrap_or(i64::MAX));
        let a = &rows;
        for (rows, (table, column)) in a.keys.iter().zip(KEY_TABLES) {
            upsert_rollups(conn, table, "key_id", column, true, rows)?;
        }
        for (rows, (table, column)) in a.workspaces.iter().zip(WORKSPACE_TABLES) {
            upsert_rollups(conn, table, "workspace_id", column, false, rows)?;
        }
        {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO key_month_calls (key_id, month, calls, credits) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key_id, month) \
                 DO UPDATE SET calls = calls + excluded.calls, credits = credits + excluded.credits",
            )?;
            for ((k, m), (n, credits)) in &a.month_calls {
                stmt.execute(params![k, m, n, credits])?;
            }
        }
        {
            // last_used_at = max(existing, newest record).
            let mut stmt = conn.prepare_cached(
                "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 \
                 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )?;
            for (k, t) in &a.last_used {
                stmt.execute(params![k, t])?;
            }
        }
        let touched = a.last_used.keys().map(|k| (*k).to_owned()).collect();
        Ok(Stored {
            outcomes,
            touched,
            fresh,
        })
    }

    /// Inserts `pending`: one multi-row INSERT for a full chunk, else one per record.
    pub(super) fn insert_pending(&self, pending: &mut Vec<Pending<'_>>) -> rusqlite::Result<()> {
        if pending.len() == INSERT_CHUNK {
            let mut stmt = self.conn.prepare_cached(&self.insert_chunk_sql)?;
            for (i, p) in pending.iter().enumerate() {
                bind_record(
                    &mut stmt,
                    i * RECORD_PARAMS,
                    p.id,
                    p.hash,
                    p.record,
                    &p.refs,
                )?;
            }
            stmt.raw_execute()?;
        } else {
            let mut stmt = self.conn.prepare_cached(INSERT_RECORD)?;
            for p in pending.iter() {
                bind_record(&mut stmt, 0, p.id, p.hash, p.record, &p.refs)?;
                stmt.raw_execute()?;
            }
        }
        pending.clear();
        Ok(())
    }
}
