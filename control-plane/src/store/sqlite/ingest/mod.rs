//! SQLite usage ingest: one writer thread with its own connection (rusqlite, prepared statements
//! kept across batches), taking every batch queued while the previous transaction ran and
//! storing them in one `BEGIN IMMEDIATE` transaction (group commit): raw records, every rollup,
//! the per-key month counts, `last_used_at`. Usage records are analytics: they charge no budget
//! (the leases do, `store/sql/leases.rs`).
//!
//! Raw records are narrow (migration 0004): names (key, workspace, method, endpoint, instance)
//! are integer references into `usage_names`, cached here.
//!
//! Idempotency: a record is a duplicate when a stored record has the same `request_id` and
//! the same `timestamp` (the filter re-delivers a batch byte for byte).
//!
//! The tail (migrations 0006, 0007): the writer keeps two lookup tables in key order instead of
//! indexes on `usage_records` whose keys are random within the last second or so of traffic —
//! `usage_request_keys` `(timestamp, rid_hash, id)` for idempotency, `usage_resource_refs`
//! `(gen, resource_id, timestamp, id)` (by generation since 0011: [`RESOURCE_GEN_SHIFT`]),
//! `usage_key_refs` and `usage_workspace_refs` (0008)
//! `(scope, timestamp, id)` for the request log — and fills them for the records above
//! `through_id` (the tail) in transactions of their own, every [`TAIL_BATCH`] records or once
//! ingest has been quiet for [`TAIL_IDLE_AFTER`] ([`TAIL_STEP`] records between two ingest
//! transactions, so ingest never waits for more), sorted, so each page takes many entries per
//! write instead of one. Records get explicit ids above `through_id`, so the tail is exactly the
//! id range above it. A record is checked against the tail in memory ([`TailKeys`], bounded by
//! [`TAIL_MAX`]; indexed records of the last [`KEYS_RETAIN_MS`] stay there too, since Envoys'
//! batches reach about a second back) and against the older records through
//! `usage_request_keys`; `rid_hash`, a 64-bit
//! hash of `request_id`, only finds candidates, whose text decides. Rows migrated by 0004 without
//! a hash are checked by their text (partial index `usage_records_unhashed`) until the writer
//! has hashed them.
//!
//! The database is used by the other connections of [`SqliteStore`](crate::store::SqliteStore)
//! too (key management, retention, reads); SQLite's write lock orders the writers, and the busy
//! timeout makes each wait for the others.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::mpsc;

use crate::clock;
use crate::domain::ValidationError;
use crate::domain::{
    floor_to, IngestOutcome, IngestRejection, UsageRecord, UsageStatus, DAY_MS, HOUR_MS, MINUTE_MS,
};
use crate::store::group_commit::{self, IngestJob};
use crate::store::sqlite::checkpoint::Checkpointer;
use crate::store::sqlite::lookup_cache::LookupCache;
pub(super) use crate::store::sqlite::migrate::RESOURCE_GEN_SHIFT;
use crate::store::sqlite::statement::no_room;
use crate::store::{StoreError, StoreResult};

mod backfill;
mod codecs;
mod counts;
mod names;
mod rollup;
mod tail;
#[cfg(test)]
mod tests;
mod transaction;

// The writer's parts share its state and each other's helpers.
use backfill::*;
use codecs::*;
pub(super) use codecs::{request_id_hash, status_code, status_from_code};
use counts::*;
use tail::*;
use transaction::*;

/// Records one transaction may take from queued batches (group commit).
const GROUP_MAX_RECORDS: usize = 20_000;
/// Names kept in memory; beyond this the cache starts over (endpoints could be many).
const NAMES_CACHE_MAX: usize = 100_000;
/// Rows per transaction of the startup backfill of `rid_hash`.
const BACKFILL_CHUNK: usize = 20_000;
/// Tail records (above `through_id`) after which the writer indexes the tail. With
/// [`GROUP_MAX_RECORDS`] this bounds the ids the request log scans (70,000 rows).
const TAIL_BATCH: i64 = 50_000;
/// Quiet time after which the writer indexes the tail anyway.
const TAIL_IDLE_AFTER: Duration = Duration::from_millis(250);
/// Records indexed per transaction (a backlog, e.g. after an error, goes in steps).
const TAIL_STEP_MAX: i64 = 100_000;
/// Records indexed per transaction while ingest runs: one step between two ingest
/// transactions, so ingest pauses for a step at a time, not for the whole [`TAIL_BATCH`].
const TAIL_STEP: i64 = 10_000;
/// Wait after a failed indexing before the next try.
const TAIL_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Tail records kept in memory (about 100 bytes each). Normally the tail stays under
/// `TAIL_BATCH + GROUP_MAX_RECORDS`; past this (indexing keeps failing) ingest fails (the filter
/// retries) rather than grow.
const TAIL_MAX: i64 = 300_000;
/// Indexed records whose timestamps are at most this much older than the newest stored one stay
/// in memory too, so that a record of an Envoy's batch (which reaches about a second back, and
/// overlaps other Envoys' batches) is checked in memory instead of in `usage_request_keys`.
const KEYS_RETAIN_MS: i64 = 2_000;
/// At most this many indexed records stay in memory (a burst gives up the retention).
const KEYS_RETAIN_MAX: usize = 250_000;
/// A minute is rolled into the hour and day rollups once it ended this long ago: Envoys'
/// batches reach a second or two back, so its records are in by then (a later one is written to
/// the hours and days directly).
const ROLL_LAG_MS: i64 = 60_000;
/// Minutes rolled per transaction (a backlog, e.g. after downtime, goes in steps). One step
/// follows every ingest transaction while the roll-up is behind, so it keeps up with a backlog
/// delivered at up to an hour of records per transaction.
const ROLL_STEP_MS: i64 = 60 * MINUTE_MS;
/// Wait after a failed roll-up before the next try.
const ROLL_RETRY_AFTER: Duration = Duration::from_secs(1);

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Opens the writer's connection (the migrations have already run). It never checkpoints
/// the WAL: a [`Checkpointer`] thread does, off the ingest path.
pub(super) fn open_writer(path: &Path, busy_timeout: Duration) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend)?;
    conn.busy_timeout(busy_timeout).map_err(backend)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA temp_store = memory; \
         PRAGMA cache_size = -131072; PRAGMA mmap_size = 268435456; \
         PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 134217728;",
    )
    .map_err(backend)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Starts the writer thread and its checkpointer (its connection checkpoints nothing itself,
/// see [`open_writer`]); both end when every sender is gone.
pub(super) fn spawn_writer(
    path: &Path,
    conn: Connection,
    lookups: Arc<LookupCache>,
    jobs: mpsc::Receiver<IngestJob>,
) -> StoreResult<()> {
    let checkpointer = Checkpointer::start(path).map_err(backend)?;
    std::thread::Builder::new()
        .name("tollgate-ingest".to_owned())
        .spawn(move || {
            let mut writer = Writer::new(conn, lookups);
            writer.checkpointer = Some(checkpointer);
            writer.run(jobs);
        })
        .map(|_| ())
        .map_err(|e| StoreError::Backend(Box::new(e)))
}

struct Writer {
    conn: Connection,
    /// [`request_id_hash`]; tests force collisions with another.
    hash: fn(&str) -> i64,
    /// `usage_names` ids of committed names.
    names: HashMap<String, i64>,
    lookups: Arc<LookupCache>,
    /// Committed records above `through_id`; ingest waits until they are loaded.
    tail: TailKeys,
    tail_loaded: bool,
    /// Highest record id and `through_id` as last seen (they only decide when to index the
    /// tail; indexing reads both again in its transaction).
    newest_id: i64,
    through_id: i64,
    /// Every stored record with a newer timestamp than this is in `tail` (in memory): newer
    /// records need no look-up in `usage_request_keys` (at most its newest timestamp).
    keyed_newest: i64,
    /// Newest timestamp stored (as far as this writer knows).
    newest_timestamp: i64,
    /// No indexing before this (after a failed one).
    tail_retry_at: Option<Instant>,
    /// Minutes before this are in the hour and day rollups (`usage_rollup_state`, migration
    /// 0009); `None` until read.
    rolled_through: Option<i64>,
    /// No roll-up before this (after a failed one).
    roll_retry_at: Option<Instant>,
    /// Copies the WAL into the database beside the writer (none in unit tests).
    checkpointer: Option<Checkpointer>,
    /// [`insert_chunk_sql`], built once.
    insert_chunk_sql: String,
}

impl Writer {
    fn new(conn: Connection, lookups: Arc<LookupCache>) -> Self {
        Self {
            conn,
            hash: request_id_hash,
            names: HashMap::new(),
            lookups,
            tail: TailKeys::default(),
            tail_loaded: false,
            newest_id: 0,
            through_id: 0,
            keyed_newest: i64::MAX,
            newest_timestamp: 0,
            tail_retry_at: None,
            rolled_through: None,
            roll_retry_at: None,
            checkpointer: None,
            insert_chunk_sql: insert_chunk_sql(),
        }
    }

    /// Serves ingest jobs; between them, while no job waits, backfills `rid_hash` a chunk at a
    /// time (so a large migrated database does not hold ingest up), and indexes the tail every
    /// [`TAIL_BATCH`] records or once ingest has been quiet a moment.
    fn run(&mut self, mut jobs: mpsc::Receiver<IngestJob>) {
        // Only to wait for a job with a timeout; without it, the tail waits for TAIL_BATCH.
        let idle_timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| tracing::warn!(error = %e, "no idle timer for the ingest writer"))
            .ok();
        self.load_tail_logged();
        let mut backfill = Some(Backfill::default());
        loop {
            let first = match jobs.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if let Some(progress) = backfill.as_mut() {
                        match self.backfill_chunk(progress) {
                            Ok(true) => {}
                            Ok(false) => {
                                if progress.rows > 0 {
                                    tracing::info!(
                                        rows = progress.rows,
                                        "request id hashes backfilled"
                                    );
                                }
                                backfill = None;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "cannot backfill request id hashes");
                                backfill = None;
                            }
                        }
                        continue;
                    }
                    // The tail first: the request log scans it until it is indexed.
                    let now = clock::now_ms();
                    if !self.tail_due(1) && self.roll_due(now) {
                        self.roll_up_logged(now);
                        continue;
                    }
                    let tail_wait = self.tail_due(1).then_some(TAIL_IDLE_AFTER);
                    let wait = tail_wait.into_iter().chain(self.roll_wait(now)).min();
                    let waiting = match (&idle_timer, wait) {
                        (Some(rt), Some(wait)) => {
                            rt.block_on(async { tokio::time::timeout(wait, jobs.recv()).await })
                        }
                        _ => Ok(jobs.blocking_recv()),
                    };
                    match waiting {
                        Ok(Some(job)) => job,
                        Ok(None) => return,
                        Err(_quiet) => {
                            if self.tail_due(1) {
                                self.index_tail_logged(TAIL_STEP_MAX);
                            }
                            continue;
                        }
                    }
                }
            };
            let group = group_commit::gather(first, &mut jobs, GROUP_MAX_RECORDS);
            let result = self.store_group(&group_commit::batches(&group));
            group_commit::answer(group, result);
            if self.tail_due(TAIL_BATCH) {
                self.index_tail_logged(TAIL_STEP);
            }
            let now = clock::now_ms();
            if self.roll_due(now) {
                self.roll_up_logged(now);
            }
            self.finish_checkpoint();
        }
    }

    /// Completes the checkpoint thread's work when the WAL is long (see [`Checkpointer`]).
    /// Runs `body` in one `BEGIN IMMEDIATE` transaction: committed when it succeeds, rolled back
    /// when it or the commit fails.
    fn in_transaction<T>(
        &mut self,
        body: impl FnOnce(&mut Self) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = body(self).and_then(|value| self.conn.execute_batch("COMMIT").map(|()| value));
        if result.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result
    }

    fn finish_checkpoint(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            if let Err(e) = checkpointer.finish(&self.conn) {
                tracing::warn!(error = %e, "cannot complete a WAL checkpoint");
            }
        }
    }
}
