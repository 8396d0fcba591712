//! The tail: records above `through_id`, not yet in the request-log and idempotency lookup
//! tables. Their idempotency keys stay in memory ([`TailKeys`]) until the writer indexes them, in
//! sorted steps of their own transactions (docs/architecture.md, "Vocabulary").

use super::*;

/// The tail's idempotency keys in memory: every committed record above `through_id`, by
/// `(timestamp, rid_hash)`, with its request id (which decides) and id.
#[derive(Default)]
pub(super) struct TailKeys {
    pub(super) entries: HashMap<(i64, i64), TailEntry>,
    pub(super) len: usize,
}

/// Records of one `(timestamp, rid_hash)`: one, or several whose hashes collide.
pub(super) enum TailEntry {
    One(i64, String),
    Many(Vec<(i64, String)>),
}

impl TailKeys {
    /// The id of the tail record with this timestamp and request id.
    pub(super) fn get(&self, timestamp: i64, hash: i64, request_id: &str) -> Option<i64> {
        match self.entries.get(&(timestamp, hash))? {
            TailEntry::One(id, text) => (text == request_id).then_some(*id),
            TailEntry::Many(all) => all.iter().find(|(_, t)| t == request_id).map(|(id, _)| *id),
        }
    }

    /// Adds a stored record. One with the same text is replaced: it was stored again, so the
    /// earlier one is gone (retention).
    pub(super) fn insert(&mut self, timestamp: i64, hash: i64, request_id: String, id: i64) {
        match self.entries.entry((timestamp, hash)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(TailEntry::One(id, request_id));
                self.len += 1;
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let e = o.get_mut();
                match e {
                    TailEntry::One(first_id, first) if *first == request_id => *first_id = id,
                    TailEntry::One(first_id, first) => {
                        *e = TailEntry::Many(vec![
                            (*first_id, std::mem::take(first)),
                            (id, request_id),
                        ]);
                        self.len += 1;
                    }
                    TailEntry::Many(all) => match all.iter_mut().find(|(_, t)| *t == request_id) {
                        Some(same) => same.0 = id,
                        None => {
                            all.push((id, request_id));
                            self.len += 1;
                        }
                    },
                }
            }
        }
    }

    /// Forgets what indexing has covered (ids up to `through_id`) with a timestamp up to
    /// `older_than_or_at`.
    pub(super) fn covered_through(&mut self, through_id: i64, older_than_or_at: i64) {
        self.entries.retain(|(timestamp, _), e| {
            if *timestamp > older_than_or_at {
                return true;
            }
            match e {
                TailEntry::One(id, _) => *id > through_id,
                TailEntry::Many(all) => {
                    all.retain(|(id, _)| *id > through_id);
                    !all.is_empty()
                }
            }
        });
        self.len = self
            .entries
            .values()
            .map(|e| match e {
                TailEntry::One(..) => 1,
                TailEntry::Many(all) => all.len(),
            })
            .sum();
    }
}

impl Writer {
    /// Whether at least `behind` records are above `through_id` (as far as this writer knows)
    /// and no failure asks to wait.
    pub(super) fn tail_due(&self, behind: i64) -> bool {
        self.newest_id - self.through_id >= behind
            && self.tail_retry_at.is_none_or(|t| Instant::now() >= t)
    }

    pub(super) fn load_tail_logged(&mut self) {
        if let Err(e) = self.load_tail() {
            tracing::error!(error = %e, "cannot load the ingest tail; ingest fails until it can");
        }
    }

    /// Reads where indexing stands and the tail's keys (a tail longer than [`TAIL_BATCH`] is
    /// indexed first).
    pub(super) fn load_tail(&mut self) -> rusqlite::Result<()> {
        self.tail_loaded = false;
        self.tail = TailKeys::default();
        self.read_progress()?;
        while self.newest_id - self.through_id > TAIL_BATCH {
            self.index_tail()?;
        }
        let mut stmt = self.conn.prepare(
            "SELECT timestamp, request_id, id FROM usage_records WHERE id > ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([self.through_id], |row| {
            Ok(((row.get(0)?, row.get(1)?), row.get(2)?))
        })?;
        for row in rows {
            let ((timestamp, request_id), id): ((i64, String), i64) = row?;
            let hash = (self.hash)(&request_id);
            self.newest_timestamp = self.newest_timestamp.max(timestamp);
            self.tail.insert(timestamp, hash, request_id, id);
        }
        self.tail_loaded = true;
        Ok(())
    }

    pub(super) fn read_progress(&mut self) -> rusqlite::Result<()> {
        let (newest, through, keyed_newest) = self.conn.query_row(
            "SELECT coalesce((SELECT max(id) FROM usage_records), 0), \
             coalesce((SELECT through_id FROM usage_tail_state), 0), \
             coalesce((SELECT max(timestamp) FROM usage_request_keys), 0)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        self.newest_id = newest;
        self.through_id = through;
        self.keyed_newest = keyed_newest;
        self.newest_timestamp = keyed_newest;
        self.rolled_through = Some(self.conn.query_row(
            "SELECT through_minute FROM usage_rollup_state",
            [],
            |row| row.get(0),
        )?);
        Ok(())
    }

    pub(super) fn index_tail_logged(&mut self, max: i64) {
        match self.index_tail_step(max) {
            Ok(_) => self.tail_retry_at = None,
            Err(e) => {
                tracing::error!(error = %e, "cannot index the ingest tail; retrying");
                self.tail_retry_at = Some(Instant::now() + TAIL_RETRY_AFTER);
            }
        }
    }

    /// [`index_tail_step`](Self::index_tail_step) of up to [`TAIL_STEP_MAX`] records.
    pub(super) fn index_tail(&mut self) -> rusqlite::Result<i64> {
        self.index_tail_step(TAIL_STEP_MAX)
    }

    /// One transaction: the idempotency keys, resource, key and workspace references of the
    /// records above `through_id` (at most `max` of them), each inserted in key order, and the
    /// new `through_id`. Returns how many records it covered.
    pub(super) fn index_tail_step(&mut self, max: i64) -> rusqlite::Result<i64> {
        let (newest, through, upto, keyed_newest) = self.in_transaction(|w| {
            let (newest, through): (i64, i64) = w.conn.query_row(
                "SELECT coalesce((SELECT max(id) FROM usage_records), 0), \
                 coalesce((SELECT through_id FROM usage_tail_state), 0)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            let upto = newest.min(through.saturating_add(max));
            if upto > through {
                // Rows without a hash (0004's, not yet backfilled) get theirs first.
                let unhashed: Vec<(i64, String)> = w
                    .conn
                    .prepare_cached(
                        "SELECT id, request_id FROM usage_records \
                         INDEXED BY usage_records_unhashed \
                         WHERE rid_hash IS NULL AND id > ?1 AND id <= ?2",
                    )?
                    .query_map(params![through, upto], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut set_hash = w
                    .conn
                    .prepare_cached("UPDATE usage_records SET rid_hash = ?1 WHERE id = ?2")?;
                for (id, request_id) in &unhashed {
                    set_hash.execute(params![(w.hash)(request_id), id])?;
                }
                // OR IGNORE: an entry that exists already is the same entry.
                w.conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO usage_request_keys (timestamp, rid_hash, id) \
                         SELECT timestamp, rid_hash, id FROM usage_records \
                         WHERE id > ?1 AND id <= ?2 ORDER BY timestamp, rid_hash, id",
                    )?
                    .execute(params![through, upto])?;
                // By generation (0011): the step's references go into the newest one or two.
                w.conn
                    .prepare_cached(&format!(
                        "INSERT OR IGNORE INTO usage_resource_refs \
                         (gen, resource_id, timestamp, id) \
                         SELECT id >> {RESOURCE_GEN_SHIFT}, resource_id, timestamp, id \
                         FROM usage_records \
                         WHERE id > ?1 AND id <= ?2 AND resource_id IS NOT NULL \
                         ORDER BY 1, resource_id, timestamp, id"
                    ))?
                    .execute(params![through, upto])?;
                w.conn
                    .prepare_cached(&format!(
                        "INSERT INTO usage_resource_gens (gen, min_ts, max_ts) \
                         SELECT id >> {RESOURCE_GEN_SHIFT}, min(timestamp), max(timestamp) \
                         FROM usage_records \
                         WHERE id > ?1 AND id <= ?2 AND resource_id IS NOT NULL GROUP BY 1 \
                         ON CONFLICT (gen) DO UPDATE SET \
                         min_ts = min(min_ts, excluded.min_ts), \
                         max_ts = max(max_ts, excluded.max_ts)"
                    ))?
                    .execute(params![through, upto])?;
                for (table, scope) in [
                    ("usage_key_refs", "key_ref"),
                    ("usage_workspace_refs", "workspace_ref"),
                ] {
                    w.conn
                        .prepare_cached(&format!(
                            "INSERT OR IGNORE INTO {table} ({scope}, timestamp, id) \
                             SELECT {scope}, timestamp, id FROM usage_records \
                             WHERE id > ?1 AND id <= ?2 ORDER BY {scope}, timestamp, id"
                        ))?
                        .execute(params![through, upto])?;
                }
                w.conn
                    .prepare_cached(
                        "INSERT INTO usage_tail_state (singleton, through_id) VALUES (1, ?1) \
                         ON CONFLICT (singleton) DO UPDATE SET through_id = excluded.through_id",
                    )?
                    .execute([upto])?;
            }
            let keyed_newest: i64 = w.conn.query_row(
                "SELECT coalesce(max(timestamp), 0) FROM usage_request_keys",
                [],
                |row| row.get(0),
            )?;
            Ok::<_, rusqlite::Error>((newest, through, upto.max(through), keyed_newest))
        })?;
        self.newest_id = newest;
        self.through_id = upto;
        // Indexed records of the last KEYS_RETAIN_MS stay in memory (the older ones are
        // found in usage_request_keys), unless they are too many. Never below the last
        // bound: the indexed records older than that are no longer in memory.
        let retain_from = self.keyed_newest.max(
            self.newest_timestamp
                .saturating_sub(KEYS_RETAIN_MS)
                .min(keyed_newest),
        );
        self.tail.covered_through(upto, retain_from);
        let retained = self.tail.len.saturating_sub(self.tail_len());
        if retained > KEYS_RETAIN_MAX {
            self.tail.covered_through(upto, i64::MAX);
            self.keyed_newest = keyed_newest;
        } else {
            self.keyed_newest = retain_from;
        }
        Ok(upto - through)
    }

    /// Records above `through_id` (as far as this writer knows).
    pub(super) fn tail_len(&self) -> usize {
        usize::try_from(self.newest_id - self.through_id).unwrap_or(0)
    }
}
