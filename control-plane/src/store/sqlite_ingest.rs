//! SQLite usage ingest: one writer thread with its own connection (rusqlite, prepared statements
//! kept across batches), taking every batch queued while the previous transaction ran and
//! storing them in one `BEGIN IMMEDIATE` transaction (group commit): raw records, every rollup
//! and count table, `last_used_at`.
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
//! The database is used by the sqlx pools of [`SqliteStore`](super::SqliteStore) too (key
//! management, retention, reads); SQLite's write lock orders the two writers, and the busy
//! timeout makes either wait for the other.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::sqlite_checkpoint::Checkpointer;
use super::sqlite_lookup_cache::LookupCache;
use super::{StoreError, StoreResult};
use crate::clock;
use crate::domain::ValidationError;
use crate::domain::{
    floor_to, IngestOutcome, IngestRejection, UsageRecord, UsageStatus, DAY_MS, HOUR_MS, MINUTE_MS,
    RECENT_BUCKET_MS,
};

/// One `ingest_usage` call waiting for the writer.
pub(super) struct IngestJob {
    pub records: Vec<UsageRecord>,
    pub reply: oneshot::Sender<StoreResult<IngestOutcome>>,
}

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
/// Resource references are kept by generation of `2^RESOURCE_GEN_SHIFT` record ids (migration
/// 0011, whose delete trigger has the same shift): a step's references then dirty a few hundred
/// pages of the newest generation instead of one page each across every resource's range.
pub(super) const RESOURCE_GEN_SHIFT: u32 = 17;
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
pub(super) fn status_code(s: UsageStatus) -> i64 {
    match s {
        UsageStatus::Completed => 1,
        UsageStatus::RateLimited => 2,
        UsageStatus::Failed => 3,
    }
}

pub(super) fn status_from_code(code: i64) -> Option<UsageStatus> {
    match code {
        1 => Some(UsageStatus::Completed),
        2 => Some(UsageStatus::RateLimited),
        3 => Some(UsageStatus::Failed),
        _ => None,
    }
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Opens the writer's connection (the sqlx migrations have already run). It never checkpoints
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

/// The tail's idempotency keys in memory: every committed record above `through_id`, by
/// `(timestamp, rid_hash)`, with its request id (which decides) and id.
#[derive(Default)]
struct TailKeys {
    entries: HashMap<(i64, i64), TailEntry>,
    len: usize,
}

/// Records of one `(timestamp, rid_hash)`: one, or several whose hashes collide.
enum TailEntry {
    One(i64, String),
    Many(Vec<(i64, String)>),
}

impl TailKeys {
    /// The id of the tail record with this timestamp and request id.
    fn get(&self, timestamp: i64, hash: i64, request_id: &str) -> Option<i64> {
        match self.entries.get(&(timestamp, hash))? {
            TailEntry::One(id, text) => (text == request_id).then_some(*id),
            TailEntry::Many(all) => all.iter().find(|(_, t)| t == request_id).map(|(id, _)| *id),
        }
    }

    /// Adds a stored record. One with the same text is replaced: it was stored again, so the
    /// earlier one is gone (retention).
    fn insert(&mut self, timestamp: i64, hash: i64, request_id: String, id: i64) {
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
    fn covered_through(&mut self, through_id: i64, older_than_or_at: i64) {
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

/// What one ingest transaction did.
struct Stored<'a> {
    outcomes: Vec<IngestOutcome>,
    /// Keys whose counts changed.
    touched: Vec<String>,
    /// The records it stored: `(timestamp, request_id)` -> (hash, id).
    fresh: HashMap<(i64, &'a str), (i64, i64)>,
}

/// Per-minute (hour, day) rollup row: key x bucket x endpoint x method x code x status.
type RollupKey<'a> = (&'a str, i64, &'a str, &'a str, u16, UsageStatus);

#[derive(Default)]
struct RollupValue<'a> {
    workspace_id: &'a str,
    count: i64,
    credits: i64,
    duration_ms: f64,
}

/// Records that count alike in every count table: a transaction sums its records per
/// combination first (one hash per record, none for a run of alike records), then derives the
/// rows of each table from these sums.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Combination<'a> {
    key_id: &'a str,
    workspace_id: &'a str,
    instance: &'a str,
    /// Start of the record's [`RECENT_BUCKET_MS`] bucket: its minute, hour, day and month too.
    bucket: i64,
    endpoint: &'a str,
    method: &'a str,
    response_code: u16,
    status: UsageStatus,
    admitted: bool,
}

#[derive(Clone, Copy, Default)]
struct Sums {
    count: i64,
    credits: i64,
    duration_ms: f64,
    newest: i64,
}

impl Sums {
    fn add(&mut self, r: &UsageRecord) {
        self.count += 1;
        self.credits += i64::from(r.credits);
        self.duration_ms += r.duration_ms;
        self.newest = self.newest.max(r.timestamp);
    }
}

/// The sums of one transaction's stored records.
#[derive(Default)]
struct Aggregates<'a> {
    combinations: HashMap<Combination<'a>, Sums>,
    /// The combination of the last record added and its sums, not yet in `combinations`.
    run: Option<(Combination<'a>, Sums)>,
}

impl<'a> Aggregates<'a> {
    fn add(&mut self, r: &'a UsageRecord) {
        let c = Combination {
            key_id: &r.key_id,
            workspace_id: &r.workspace_id,
            instance: &r.instance,
            bucket: floor_to(r.timestamp, RECENT_BUCKET_MS),
            endpoint: &r.endpoint,
            method: &r.method,
            response_code: r.response_code,
            status: r.status,
            admitted: r.admitted,
        };
        match &mut self.run {
            Some((run, sums)) if *run == c => sums.add(r),
            _ => {
                self.end_run();
                let mut sums = Sums::default();
                sums.add(r);
                self.run = Some((c, sums));
            }
        }
    }

    fn end_run(&mut self) {
        if let Some((c, s)) = self.run.take() {
            let e = self.combinations.entry(c).or_default();
            e.count += s.count;
            e.credits += s.credits;
            e.duration_ms += s.duration_ms;
            e.newest = e.newest.max(s.newest);
        }
    }

    /// The count rows; hour and day rollups only for minutes before `rolled_through` (the
    /// later ones are rolled from the minutes, see [`Writer::roll_up_step`]).
    fn into_rows(mut self, rolled_through: i64) -> CountRows<'a> {
        self.end_run();
        let mut rows = CountRows::default();
        for (c, s) in &self.combinations {
            rows.add(c, s, rolled_through);
        }
        rows
    }
}

/// Everything one transaction adds to the count tables, in key order: each table is written
/// in its primary key's order, so consecutive upserts land on the same or adjacent pages.
#[derive(Default)]
struct CountRows<'a> {
    /// Per key: minutes, hours, days.
    keys: [BTreeMap<RollupKey<'a>, RollupValue<'a>>; 3],
    /// Per workspace (the key slot holds the workspace id): minutes, hours, days.
    workspaces: [BTreeMap<RollupKey<'a>, RollupValue<'a>>; 3],
    admitted_totals: BTreeMap<&'a str, i64>,
    admitted_minutes: BTreeMap<(&'a str, i64), i64>,
    admitted_hours: BTreeMap<(&'a str, i64), i64>,
    instance_buckets: BTreeMap<(&'a str, &'a str, i64), i64>,
    month_calls: BTreeMap<(&'a str, i64), i64>,
    last_used: BTreeMap<&'a str, i64>,
}

const BUCKETS: [i64; 3] = [MINUTE_MS, HOUR_MS, DAY_MS];
const KEY_TABLES: [(&str, &str); 3] = [
    ("usage_minutes", "minute"),
    ("usage_hours", "hour"),
    ("usage_days", "day"),
];
/// The roll-ups from minutes: (minutes table, rollup table, scope column, bucket column, step).
const ROLL_UPS: [(&str, &str, &str, &str, i64); 4] = [
    ("usage_minutes", "usage_hours", "key_id", "hour", HOUR_MS),
    ("usage_minutes", "usage_days", "key_id", "day", DAY_MS),
    (
        "usage_ws_minutes",
        "usage_ws_hours",
        "workspace_id",
        "hour",
        HOUR_MS,
    ),
    (
        "usage_ws_minutes",
        "usage_ws_days",
        "workspace_id",
        "day",
        DAY_MS,
    ),
];

/// Minutes before this are due to be rolled into the hours and days at `now_ms`.
fn roll_target(now_ms: i64) -> i64 {
    floor_to(now_ms - ROLL_LAG_MS, MINUTE_MS)
}

const WORKSPACE_TABLES: [(&str, &str); 3] = [
    ("usage_ws_minutes", "minute"),
    ("usage_ws_hours", "hour"),
    ("usage_ws_days", "day"),
];

impl<'a> CountRows<'a> {
    fn add(&mut self, c: &Combination<'a>, s: &Sums, rolled_through: i64) {
        // Hours and days of a minute not rolled yet are left to the roll-up.
        let rollups = if floor_to(c.bucket, MINUTE_MS) < rolled_through {
            BUCKETS.len()
        } else {
            1
        };
        for (i, step) in BUCKETS.iter().enumerate().take(rollups) {
            let bucket = floor_to(c.bucket, *step);
            for (map, scope) in [
                (&mut self.keys[i], c.key_id),
                (&mut self.workspaces[i], c.workspace_id),
            ] {
                let v = map
                    .entry((
                        scope,
                        bucket,
                        c.endpoint,
                        c.method,
                        c.response_code,
                        c.status,
                    ))
                    .or_default();
                v.workspace_id = c.workspace_id;
                v.count += s.count;
                v.credits += s.credits;
                v.duration_ms += s.duration_ms;
            }
        }
        if c.admitted {
            *self.admitted_totals.entry(c.key_id).or_default() += s.count;
            *self
                .admitted_minutes
                .entry((c.key_id, floor_to(c.bucket, MINUTE_MS)))
                .or_default() += s.count;
            *self
                .admitted_hours
                .entry((c.key_id, floor_to(c.bucket, HOUR_MS)))
                .or_default() += s.count;
            *self
                .instance_buckets
                .entry((c.key_id, c.instance, c.bucket))
                .or_default() += s.count;
        }
        // Months start at a UTC midnight, so the bucket is in the record's month.
        *self
            .month_calls
            .entry((c.key_id, clock::utc_month(c.bucket)))
            .or_default() += s.count;
        let last = self.last_used.entry(c.key_id).or_insert(s.newest);
        *last = (*last).max(s.newest);
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

const INSERT_RECORD: &str = "INSERT INTO usage_records (id, rid_hash, request_id, timestamp, \
     key_ref, workspace_ref, method_ref, endpoint_ref, resource_id, response_code, status, \
     duration_ms, client_ip, credits, admitted, instance_ref) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

/// The next record id: above every stored record and `through_id` (an id at or below it would
/// never be indexed).
const NEXT_RECORD_ID: &str = "SELECT max(coalesce((SELECT max(id) FROM usage_records), 0), \
     coalesce((SELECT through_id FROM usage_tail_state), 0)) + 1";

/// Parameters of [`INSERT_RECORD`] per record.
const RECORD_PARAMS: usize = 16;
/// Records per multi-row INSERT (one statement step instead of one per record).
const INSERT_CHUNK: usize = 50;

/// [`INSERT_RECORD`] for [`INSERT_CHUNK`] records.
fn insert_chunk_sql() -> String {
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

/// A new record on its way into `usage_records`, with its id.
struct Pending<'a> {
    record: &'a UsageRecord,
    id: i64,
    hash: i64,
    refs: Refs,
}

/// Name references of one record.
struct Refs {
    key: i64,
    workspace: i64,
    method: i64,
    endpoint: i64,
    instance: i64,
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
            let result = self.store_group(&batches);
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
    fn finish_checkpoint(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            if let Err(e) = checkpointer.finish(&self.conn) {
                tracing::warn!(error = %e, "cannot complete a WAL checkpoint");
            }
        }
    }

    /// Whether at least `behind` records are above `through_id` (as far as this writer knows)
    /// and no failure asks to wait.
    fn tail_due(&self, behind: i64) -> bool {
        self.newest_id - self.through_id >= behind
            && self.tail_retry_at.is_none_or(|t| Instant::now() >= t)
    }

    fn load_tail_logged(&mut self) {
        if let Err(e) = self.load_tail() {
            tracing::error!(error = %e, "cannot load the ingest tail; ingest fails until it can");
        }
    }

    /// Reads where indexing stands and the tail's keys (a tail longer than [`TAIL_BATCH`] is
    /// indexed first).
    fn load_tail(&mut self) -> rusqlite::Result<()> {
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

    fn read_progress(&mut self) -> rusqlite::Result<()> {
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

    fn index_tail_logged(&mut self, max: i64) {
        match self.index_tail_step(max) {
            Ok(_) => self.tail_retry_at = None,
            Err(e) => {
                tracing::error!(error = %e, "cannot index the ingest tail; retrying");
                self.tail_retry_at = Some(Instant::now() + TAIL_RETRY_AFTER);
            }
        }
    }

    /// [`index_tail_step`](Self::index_tail_step) of up to [`TAIL_STEP_MAX`] records.
    fn index_tail(&mut self) -> rusqlite::Result<i64> {
        self.index_tail_step(TAIL_STEP_MAX)
    }

    /// One transaction: the idempotency keys, resource, key and workspace references of the
    /// records above `through_id` (at most `max` of them), each inserted in key order, and the
    /// new `through_id`. Returns how many records it covered.
    fn index_tail_step(&mut self, max: i64) -> rusqlite::Result<i64> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let step = (|| {
            let (newest, through): (i64, i64) = self.conn.query_row(
                "SELECT coalesce((SELECT max(id) FROM usage_records), 0), \
                 coalesce((SELECT through_id FROM usage_tail_state), 0)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            let upto = newest.min(through.saturating_add(max));
            if upto > through {
                // Rows without a hash (0004's, not yet backfilled) get theirs first.
                let unhashed: Vec<(i64, String)> = self
                    .conn
                    .prepare_cached(
                        "SELECT id, request_id FROM usage_records \
                         INDEXED BY usage_records_unhashed \
                         WHERE rid_hash IS NULL AND id > ?1 AND id <= ?2",
                    )?
                    .query_map(params![through, upto], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut set_hash = self
                    .conn
                    .prepare_cached("UPDATE usage_records SET rid_hash = ?1 WHERE id = ?2")?;
                for (id, request_id) in &unhashed {
                    set_hash.execute(params![(self.hash)(request_id), id])?;
                }
                // OR IGNORE: an entry that exists already is the same entry.
                self.conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO usage_request_keys (timestamp, rid_hash, id) \
                         SELECT timestamp, rid_hash, id FROM usage_records \
                         WHERE id > ?1 AND id <= ?2 ORDER BY timestamp, rid_hash, id",
                    )?
                    .execute(params![through, upto])?;
                // By generation (0011): the step's references go into the newest one or two.
                self.conn
                    .prepare_cached(&format!(
                        "INSERT OR IGNORE INTO usage_resource_refs \
                         (gen, resource_id, timestamp, id) \
                         SELECT id >> {RESOURCE_GEN_SHIFT}, resource_id, timestamp, id \
                         FROM usage_records \
                         WHERE id > ?1 AND id <= ?2 AND resource_id IS NOT NULL \
                         ORDER BY 1, resource_id, timestamp, id"
                    ))?
                    .execute(params![through, upto])?;
                self.conn
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
                    self.conn
                        .prepare_cached(&format!(
                            "INSERT OR IGNORE INTO {table} ({scope}, timestamp, id) \
                             SELECT {scope}, timestamp, id FROM usage_records \
                             WHERE id > ?1 AND id <= ?2 ORDER BY {scope}, timestamp, id"
                        ))?
                        .execute(params![through, upto])?;
                }
                self.conn
                    .prepare_cached(
                        "INSERT INTO usage_tail_state (singleton, through_id) VALUES (1, ?1) \
                         ON CONFLICT (singleton) DO UPDATE SET through_id = excluded.through_id",
                    )?
                    .execute([upto])?;
            }
            let keyed_newest: i64 = self.conn.query_row(
                "SELECT coalesce(max(timestamp), 0) FROM usage_request_keys",
                [],
                |row| row.get(0),
            )?;
            Ok::<_, rusqlite::Error>((newest, through, upto.max(through), keyed_newest))
        })();
        match step {
            Ok((newest, through, upto, keyed_newest)) => {
                self.conn.execute_batch("COMMIT")?;
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
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Whether minutes are due to be rolled into the hours and days: some minute before
    /// [`roll_target`] is not rolled yet, and no failure asks to wait.
    fn roll_due(&self, now_ms: i64) -> bool {
        self.rolled_through.is_some_and(|through| {
            roll_target(now_ms) > through && self.newest_timestamp >= through
        }) && self.roll_retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// How long the writer may wait for a job before a roll-up is due, if one will be.
    fn roll_wait(&self, now_ms: i64) -> Option<Duration> {
        let through = self.rolled_through?;
        if self.newest_timestamp < through {
            return None;
        }
        let due_at = through + MINUTE_MS + ROLL_LAG_MS;
        let until_due = Duration::from_millis(u64::try_from(due_at - now_ms).unwrap_or(0));
        let until_retry = self.roll_retry_at.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        });
        Some(until_due.max(until_retry))
    }

    fn roll_up_logged(&mut self, now_ms: i64) {
        match self.roll_up_step(now_ms) {
            Ok(()) => self.roll_retry_at = None,
            Err(e) => {
                tracing::error!(error = %e, "cannot roll minutes into hours and days; retrying");
                self.roll_retry_at = Some(Instant::now() + ROLL_RETRY_AFTER);
            }
        }
    }

    /// One transaction: the minute rows of up to [`ROLL_STEP_MS`] of minutes from
    /// `through_minute` (skipping minutes without rows) on to [`roll_target`], summed into the
    /// hour and day rollups of keys and workspaces, and the new `through_minute`.
    fn roll_up_step(&mut self, now_ms: i64) -> rusqlite::Result<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let step = (|| {
            let through: i64 = self.conn.query_row(
                "SELECT through_minute FROM usage_rollup_state",
                [],
                |row| row.get(0),
            )?;
            let target = roll_target(now_ms);
            if target <= through {
                return Ok(through);
            }
            let first: Option<i64> = self.conn.query_row(
                "SELECT min(coalesce((SELECT min(minute) FROM usage_minutes WHERE minute >= ?1),                  ?2), coalesce((SELECT min(minute) FROM usage_ws_minutes WHERE minute >= ?1), ?2))",
                params![through, target],
                |row| row.get(0),
            )?;
            let upto = target.min(first.unwrap_or(target).saturating_add(ROLL_STEP_MS));
            for (minutes, table, scope, column, step) in ROLL_UPS {
                let (ws_column, ws_value) = if scope == "key_id" {
                    (", workspace_id", ", workspace_id")
                } else {
                    ("", "")
                };
                self.conn
                    .prepare_cached(&format!(
                        "INSERT INTO {table} ({scope}, {column}, endpoint, method, response_code,                          status, count, credits, duration_ms{ws_column})                          SELECT {scope}, minute - minute % {step}, endpoint, method,                          response_code, status, sum(count), sum(credits), sum(duration_ms)                         {ws_value} FROM {minutes} WHERE minute >= ?1 AND minute < ?2                          GROUP BY {scope}, minute - minute % {step}, endpoint, method,                          response_code, status                          ON CONFLICT ({scope}, {column}, endpoint, method, response_code, status)                          DO UPDATE SET count = count + excluded.count,                          credits = credits + excluded.credits,                          duration_ms = duration_ms + excluded.duration_ms"
                    ))?
                    .execute(params![through, upto])?;
            }
            self.conn
                .prepare_cached("UPDATE usage_rollup_state SET through_minute = ?1")?
                .execute([upto])?;
            Ok::<_, rusqlite::Error>(upto)
        })();
        match step {
            Ok(upto) => {
                self.conn.execute_batch("COMMIT")?;
                self.rolled_through = Some(upto);
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Records above `through_id` (as far as this writer knows).
    fn tail_len(&self) -> usize {
        usize::try_from(self.newest_id - self.through_id).unwrap_or(0)
    }

    /// [`ingest_group`](Self::ingest_group) once the tail is in memory and has room: without it
    /// a duplicate could pass, so the group fails instead (the filter retries).
    fn store_group(&mut self, batches: &[&[UsageRecord]]) -> StoreResult<Vec<IngestOutcome>> {
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
        self.ingest_group(batches).map_err(backend)
    }

    /// Stores several batches in one transaction; one outcome per batch.
    fn ingest_group(&mut self, batches: &[&[UsageRecord]]) -> rusqlite::Result<Vec<IngestOutcome>> {
        if batches.iter().all(|b| b.is_empty()) {
            return Ok(vec![IngestOutcome::default(); batches.len()]);
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut new_names = HashMap::new();
        let result = self.ingest_in_transaction(batches, &mut new_names);
        match result {
            Ok(Stored {
                outcomes,
                touched,
                fresh,
            }) => {
                if let Err(e) = self.conn.execute_batch("COMMIT") {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
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
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The body of [`ingest_group`](Self::ingest_group). Names first stored here go to
    /// `new_names` (kept only if the transaction commits).
    fn ingest_in_transaction<'a>(
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
                "INSERT INTO key_admitted_totals (key_id, admitted) VALUES (?1, ?2) \
                 ON CONFLICT (key_id) DO UPDATE SET admitted = admitted + excluded.admitted",
            )?;
            for (k, n) in &a.admitted_totals {
                stmt.execute(params![k, n])?;
            }
        }
        for (table, column, rows) in [
            ("key_admitted_minutes", "minute", &a.admitted_minutes),
            ("key_admitted_hours", "hour", &a.admitted_hours),
        ] {
            let mut stmt = conn.prepare_cached(&format!(
                "INSERT INTO {table} (key_id, {column}, admitted) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key_id, {column}) DO UPDATE SET admitted = admitted + excluded.admitted"
            ))?;
            for ((k, t), n) in rows {
                stmt.execute(params![k, t, n])?;
            }
        }
        {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO key_instance_buckets (key_id, instance, bucket, admitted) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key_id, instance, bucket) \
                 DO UPDATE SET admitted = admitted + excluded.admitted",
            )?;
            for ((k, i, b), n) in &a.instance_buckets {
                stmt.execute(params![k, i, b, n])?;
            }
        }
        {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO key_month_calls (key_id, month, calls) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key_id, month) DO UPDATE SET calls = calls + excluded.calls",
            )?;
            for ((k, m), n) in &a.month_calls {
                stmt.execute(params![k, m, n])?;
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
    fn insert_pending(&self, pending: &mut Vec<Pending<'_>>) -> rusqlite::Result<()> {
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

    /// The `usage_names` id of `name`, storing it if new.
    fn name_id(&self, name: &str, new_names: &mut HashMap<String, i64>) -> rusqlite::Result<i64> {
        if let Some(id) = self.names.get(name).or_else(|| new_names.get(name)) {
            return Ok(*id);
        }
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM usage_names WHERE name = ?1")?
            .query_row([name], |row| row.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                self.conn
                    .prepare_cached("INSERT INTO usage_names (name) VALUES (?1)")?
                    .execute([name])?;
                self.conn.last_insert_rowid()
            }
        };
        new_names.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Fills in `rid_hash` of every row that has none (rows migrated by 0004).
    #[cfg(test)]
    fn backfill_hashes(&mut self) -> rusqlite::Result<()> {
        let mut progress = Backfill::default();
        while self.backfill_chunk(&mut progress)? {}
        Ok(())
    }

    /// One transaction of the backfill: the next rows without a hash, in `request_id` order,
    /// get theirs, and their idempotency key if indexing has passed them (the others get it with
    /// the tail). `false` once no row is left.
    fn backfill_chunk(&mut self, progress: &mut Backfill) -> rusqlite::Result<bool> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let step = (|| {
            let rows: Vec<(i64, i64, String)> = self
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
            let through: i64 = self.conn.query_row(
                "SELECT coalesce((SELECT through_id FROM usage_tail_state), 0)",
                [],
                |row| row.get(0),
            )?;
            let mut update = self
                .conn
                .prepare_cached("UPDATE usage_records SET rid_hash = ?1 WHERE id = ?2")?;
            let mut key = self.conn.prepare_cached(
                "INSERT OR IGNORE INTO usage_request_keys (timestamp, rid_hash, id) \
                 VALUES (?1, ?2, ?3)",
            )?;
            for (id, timestamp, request_id) in &rows {
                let hash = (self.hash)(request_id);
                update.execute(params![hash, id])?;
                if *id <= through {
                    key.execute(params![timestamp, hash, id])?;
                    self.keyed_newest = self.keyed_newest.max(*timestamp);
                }
            }
            Ok::<_, rusqlite::Error>(rows.into_iter().map(|(_, _, r)| r).collect::<Vec<_>>())
        })();
        match step {
            Ok(rows) => {
                self.conn.execute_batch("COMMIT")?;
                progress.rows += rows.len();
                match rows.into_iter().last() {
                    Some(last) => {
                        progress.after = last;
                        Ok(true)
                    }
                    None => Ok(false),
                }
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// Where the `rid_hash` backfill stands.
#[derive(Default)]
struct Backfill {
    /// Last `request_id` done (rows are taken in its order).
    after: String,
    rows: usize,
}

/// Binds one record's [`INSERT_RECORD`] parameters after the first `offset`.
fn bind_record(
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

fn upsert_rollups(
    conn: &Connection,
    table: &str,
    scope_column: &str,
    bucket_column: &str,
    with_workspace: bool,
    rows: &BTreeMap<RollupKey<'_>, RollupValue<'_>>,
) -> rusqlite::Result<()> {
    let (ws_column, ws_value) = if with_workspace {
        (", workspace_id", ", ?10")
    } else {
        ("", "")
    };
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO {table} ({scope_column}, {bucket_column}, endpoint, method, response_code, \
         status, count, credits, duration_ms{ws_column}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9{ws_value}) \
         ON CONFLICT ({scope_column}, {bucket_column}, endpoint, method, response_code, status) \
         DO UPDATE SET count = count + excluded.count, credits = credits + excluded.credits, \
         duration_ms = duration_ms + excluded.duration_ms"
    ))?;
    for (k, v) in rows {
        let base = params![
            k.0,
            k.1,
            k.2,
            k.3,
            k.4,
            k.5.as_str(),
            v.count,
            v.credits,
            v.duration_ms
        ];
        if with_workspace {
            let mut all: Vec<&dyn rusqlite::ToSql> = base.to_vec();
            all.push(&v.workspace_id);
            stmt.execute(all.as_slice())?;
        } else {
            stmt.execute(base)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Alias, Category, PlanName, WorkspaceName};
    use crate::domain::{NewKey, NewWorkspace, Quotas, RequestFilter};
    use crate::secret::ApiKeySecret;
    use crate::store::{SqliteStore, Store};

    #[test]
    fn request_id_hash_is_stable() {
        // Stored in databases: these values must never change.
        assert_eq!(request_id_hash(""), -780_787_492_076_525_413);
        assert_eq!(
            request_id_hash("8d189948-9b1a-4e3b-9a71-a4f242816ea6"),
            -1_249_828_607_231_379_034
        );
        assert_ne!(request_id_hash("a"), request_id_hash("b"));
    }

    #[test]
    fn status_codes_round_trip() {
        for s in UsageStatus::ALL {
            assert_eq!(status_from_code(status_code(s)), Some(s));
        }
        assert_eq!(status_from_code(0), None);
    }

    fn record(key: &str, ws: &str, request_id: &str, t: i64) -> UsageRecord {
        UsageRecord {
            request_id: request_id.to_owned(),
            timestamp: t,
            key_id: key.to_owned(),
            workspace_id: ws.to_owned(),
            method: "GET".to_owned(),
            endpoint: "/v1/things/{id}".to_owned(),
            resource_id: Some("r-1".to_owned()),
            response_code: 200,
            status: UsageStatus::Completed,
            duration_ms: 1.5,
            client_ip: "127.0.0.1".to_owned(),
            credits: 1,
            admitted: true,
            instance: "i_1".to_owned(),
        }
    }

    /// A store with workspace `ws_c`, key `key_c`, and an ingest writer on the same file.
    async fn store_and_writer(path: &Path) -> (SqliteStore, Writer, i64) {
        let store = SqliteStore::open(path).await.unwrap();
        let plans = store.plans().await.unwrap();
        let now = clock::now_ms();
        store
            .create_workspace(NewWorkspace {
                id: "ws_c".into(),
                name: WorkspaceName::parse("c").unwrap(),
                plan: PlanName::parse("enterprise", &plans).unwrap(),
                created_at: now,
            })
            .await
            .unwrap();
        let secret = ApiKeySecret::generate();
        store
            .create_key(NewKey {
                id: "key_c".into(),
                workspace_id: "ws_c".into(),
                alias: Alias::parse("c").unwrap(),
                description: None,
                category: Category::parse("production").unwrap(),
                expires_at: None,
                quotas: Quotas::default(),
                allowed: vec![],
                created_at: now,
                hash: secret.hash(),
                prefix: secret.display_prefix(),
            })
            .await
            .unwrap();

        let mut writer = Writer::new(open_writer(path, Duration::from_secs(5)).unwrap(), {
            Arc::default()
        });
        writer.load_tail().unwrap();
        (store, writer, now)
    }

    /// Totals and series of `records` of `scope` in `[from, to)` by `interval`, counted one by
    /// one: what a usage report must say.
    fn expected_report(
        records: &[UsageRecord],
        from: i64,
        to: i64,
        interval: i64,
    ) -> (
        crate::domain::StatusTotals,
        Vec<crate::domain::SeriesBucket>,
    ) {
        let mut totals = crate::domain::StatusTotals::default();
        let mut series: Vec<crate::domain::SeriesBucket> = (from..to)
            .step_by(interval as usize)
            .map(|start_ms| crate::domain::SeriesBucket {
                start_ms,
                ..Default::default()
            })
            .collect();
        for r in records
            .iter()
            .filter(|r| r.timestamp >= from && r.timestamp < to)
        {
            totals.add(r.status, 1);
            let b = &mut series[((r.timestamp - from) / interval) as usize];
            match r.status {
                UsageStatus::Completed => b.completed += 1,
                UsageStatus::Failed => b.failed += 1,
                UsageStatus::RateLimited => b.rate_limited += 1,
            }
        }
        (totals, series)
    }

    /// Key and workspace reports by minute, hour and day say what the stored records say.
    async fn assert_reports_exact(store: &SqliteStore, stored: &[UsageRecord], hour0: i64) {
        use crate::domain::{UsageQuery, UsageScope};
        let day0 = floor_to(hour0, DAY_MS);
        for scope in [
            UsageScope::Key("key_c".into()),
            UsageScope::Workspace("ws_c".into()),
        ] {
            for (from, to, interval) in [
                (hour0, hour0 + 3 * HOUR_MS, MINUTE_MS),
                (hour0, hour0 + 3 * HOUR_MS, HOUR_MS),
                (day0, day0 + 2 * DAY_MS, DAY_MS),
            ] {
                let query = UsageQuery {
                    scope: scope.clone(),
                    from_ms: from,
                    to_ms: to,
                    interval_ms: interval,
                };
                let report = store.usage_report(&query).await.unwrap();
                let (totals, series) = expected_report(stored, from, to, interval);
                assert_eq!(report.totals, totals, "{scope:?} by {interval} ms");
                assert_eq!(report.series, series, "{scope:?} by {interval} ms");
            }
        }
    }

    /// Hours and days are rolled from the minutes a minute after the minute ends (0009); a
    /// report is exact before, during and after, with late records of rolled minutes, and the
    /// roll-up skips minutes without rows instead of walking to them.
    #[tokio::test]
    async fn hour_and_day_reports_are_exact_across_the_roll_up() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
        let hour0 = floor_to(now, HOUR_MS) - 2 * HOUR_MS;
        let all: Vec<UsageRecord> = (0..1_000)
            .map(|k| {
                let mut r = record("key_c", "ws_c", &format!("r{k}"), hour0 + k * 7_300);
                (r.response_code, r.status) = match k % 10 {
                    0 => (500, UsageStatus::Failed),
                    1 => (429, UsageStatus::RateLimited),
                    _ => (200, UsageStatus::Completed),
                };
                if k % 4 == 0 {
                    r.endpoint = "/v1/other".into();
                }
                r
            })
            .filter(|r| r.timestamp < now)
            .collect();
        let (first, late): (Vec<UsageRecord>, Vec<UsageRecord>) = all
            .iter()
            .cloned()
            .partition(|r| r.request_id.len() % 2 == 0);
        assert!(!late.is_empty());

        writer.ingest_group(&[&first]).unwrap();
        assert_eq!(count(&writer, "SELECT count(*) FROM usage_hours"), 0);
        assert_reports_exact(&store, &first, hour0).await;

        // An empty database starts at minute 1: the first step jumps to the first minute row.
        let steps = std::iter::from_fn(|| {
            writer.roll_up_step(now).unwrap();
            Some(writer.rolled_through)
        })
        .take_while(|through| *through != Some(roll_target(now)))
        .count();
        assert!(steps <= 2 * 60 / 10 + 1, "{steps} steps");
        assert!(count(&writer, "SELECT count(*) FROM usage_hours") > 0);
        assert_eq!(
            count(&writer, "SELECT sum(count) FROM usage_days"),
            first
                .iter()
                .filter(|r| r.timestamp < roll_target(now))
                .count() as i64
        );
        assert_reports_exact(&store, &first, hour0).await;

        // Late records of rolled minutes go to the hours and days directly.
        writer.ingest_group(&[&late]).unwrap();
        assert_reports_exact(&store, &all, hour0).await;
        writer.roll_up_step(now + HOUR_MS).unwrap();
        assert_eq!(
            count(&writer, "SELECT sum(count) FROM usage_ws_hours"),
            all.len() as i64
        );
        assert_reports_exact(&store, &all, hour0).await;
        store.close().await;
    }

    /// Every request id gets the same hash: idempotency must still be exact, from the text.
    #[tokio::test]
    async fn hash_collisions_never_drop_or_duplicate_records() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
        writer.hash = |_| 42;
        let r = |id: &str| record("key_c", "ws_c", id, now - 1000);
        let first = [r("a"), r("b"), r("a"), r("c")];
        let out = writer.ingest_group(&[&first]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (3, 1));
        let second = [r("c"), r("b"), r("d"), r("a"), r("d")];
        let third = [r("e"), r("b")];
        let out = writer.ingest_group(&[&second, &third]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (1, 4));
        assert_eq!((out[1].accepted, out[1].duplicates), (1, 1));

        let page = store
            .requests(&RequestFilter {
                limit: 100,
                ..RequestFilter::default()
            })
            .await
            .unwrap();
        let mut ids: Vec<String> = page.records.into_iter().map(|r| r.request_id).collect();
        ids.sort();
        assert_eq!(ids, ["a", "b", "c", "d", "e"]);

        // The same once the tail is indexed (colliding keys in usage_request_keys).
        writer.index_tail().unwrap();
        let out = writer
            .ingest_group(&[&[r("a"), r("e"), r("b"), r("f")]])
            .unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (1, 3));
        assert_eq!(
            count(
                &writer,
                "SELECT count(*) FROM usage_request_keys WHERE rid_hash = 42"
            ),
            5
        );
        store.close().await;
    }

    /// A duplicate has the request id and the timestamp of a stored record (the filter's
    /// re-delivery); the same request id at another time is another request. Exact with real
    /// hashes and with every hash colliding.
    #[tokio::test]
    async fn duplicate_is_same_request_id_and_timestamp() {
        for collide in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
            if collide {
                writer.hash = |_| 7;
            }
            let r = |id: &str, t: i64| record("key_c", "ws_c", id, now - 10_000 + t);
            let out = writer
                .ingest_group(&[&[r("a", 0), r("b", 0), r("a", 1), r("a", 0)]])
                .unwrap();
            assert_eq!((out[0].accepted, out[0].duplicates), (3, 1), "{collide}");
            // Re-delivered in later batches (same transaction and another one).
            let out = writer
                .ingest_group(&[&[r("a", 1), r("b", 0)], &[r("a", 0), r("b", 2)]])
                .unwrap();
            assert_eq!((out[0].accepted, out[0].duplicates), (0, 2), "{collide}");
            assert_eq!((out[1].accepted, out[1].duplicates), (1, 1), "{collide}");
            let out = writer
                .ingest_group(&[&[r("a", 0), r("a", 1), r("b", 0), r("b", 2), r("c", 0)]])
                .unwrap();
            assert_eq!((out[0].accepted, out[0].duplicates), (1, 4), "{collide}");

            let page = store
                .requests(&RequestFilter {
                    limit: 100,
                    ..RequestFilter::default()
                })
                .await
                .unwrap();
            let mut stored: Vec<(String, i64)> = page
                .records
                .into_iter()
                .map(|x| (x.request_id, x.timestamp - (now - 10_000)))
                .collect();
            stored.sort();
            let want = [("a", 0), ("a", 1), ("b", 0), ("b", 2), ("c", 0)]
                .map(|(id, t)| (id.to_owned(), t));
            assert_eq!(stored, want, "{collide}");
            store.close().await;
        }
    }

    /// Every page of the request log for `filter`, following the cursor.
    async fn all_pages(store: &SqliteStore, filter: &RequestFilter) -> Vec<(String, i64, i64)> {
        let mut filter = filter.clone();
        let mut rows = Vec::new();
        loop {
            let page = store.requests(&filter).await.unwrap();
            rows.extend(
                page.records
                    .iter()
                    .map(|r| (r.request_id.clone(), r.timestamp, r.id)),
            );
            match page.next_cursor {
                Some(c) => filter.cursor = Some(c),
                None => return rows,
            }
        }
    }

    fn count(writer: &Writer, sql: &str) -> i64 {
        writer.conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    /// The `resource_id` filter reads references for the older records and scans the tail
    /// above `through_id`: whatever the split, it answers what a filter over every record
    /// would, in the same order, across pages.
    #[tokio::test]
    async fn resource_filter_is_exact_across_references_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
        let t0 = now - 100_000;
        // Timestamps interleave across batches (late records), several records share one; odd
        // batches reach later than even ones.
        let batch = |n: usize| -> Vec<UsageRecord> {
            (0..40)
                .map(|i| {
                    let t = t0 + (i % 7) * 10 + if n % 2 == 1 { 35 } else { 0 };
                    let mut r = record("key_c", "ws_c", &format!("b{n}-{i}"), t);
                    r.resource_id = match i % 4 {
                        0 => None,
                        k => Some(format!("res-{k}")),
                    };
                    r.response_code = if i % 3 == 0 { 500 } else { 200 };
                    r
                })
                .collect()
        };
        let filters = |resource: &str| {
            let base = RequestFilter {
                resource_id: Some(resource.to_owned()),
                limit: 3,
                ..RequestFilter::default()
            };
            vec![
                base.clone(),
                RequestFilter {
                    response_code: Some(500),
                    ..base.clone()
                },
                RequestFilter {
                    from_ms: Some(t0 + 10),
                    to_ms: Some(t0 + 50),
                    key_id: Some("key_c".into()),
                    ..base.clone()
                },
                RequestFilter {
                    workspace_id: Some("ws_other".into()),
                    ..base
                },
            ]
        };
        // What a filter over every record gives: the unfiltered log, filtered here.
        let expected = |all: &[(String, i64, i64)],
                        resources: &HashMap<i64, Option<String>>,
                        codes: &HashMap<i64, u16>,
                        f: &RequestFilter|
         -> Vec<(String, i64, i64)> {
            all.iter()
                .filter(|(_, t, id)| {
                    resources[id] == f.resource_id
                        && f.response_code.is_none_or(|c| codes[id] == c)
                        && f.from_ms.is_none_or(|from| *t >= from)
                        && f.to_ms.is_none_or(|to| *t < to)
                        && f.workspace_id.as_deref().is_none_or(|w| w == "ws_c")
                })
                .cloned()
                .collect()
        };

        let mut referenced_counts = Vec::new();
        // Some batches start a little below a generation's end (0011), so their references
        // span two generations, and generations overlap in time: ids jump there (with an empty
        // tail) through `through_id`, above which the next ids are given.
        let jumps = [(0, 1 << RESOURCE_GEN_SHIFT), (3, 3 << RESOURCE_GEN_SHIFT)];
        for (n, write_refs) in [(0, true), (1, false), (2, true), (3, true), (4, false)] {
            if let Some((_, gen_start)) = jumps.iter().find(|(at, _)| *at == n) {
                writer
                    .conn
                    .execute(
                        "UPDATE usage_tail_state SET through_id = ?1",
                        [gen_start - 15],
                    )
                    .unwrap();
                writer.load_tail().unwrap();
            }
            writer.ingest_group(&[&batch(n)]).unwrap();
            if write_refs {
                assert!(writer.index_tail().unwrap() > 0);
            }
            referenced_counts.push(count(&writer, "SELECT count(*) FROM usage_resource_refs"));
            let all = all_pages(
                &store,
                &RequestFilter {
                    limit: 1000,
                    ..RequestFilter::default()
                },
            )
            .await;
            let page = store
                .requests(&RequestFilter {
                    limit: 1000,
                    ..RequestFilter::default()
                })
                .await
                .unwrap();
            let resources: HashMap<i64, Option<String>> = page
                .records
                .iter()
                .map(|r| (r.id, r.resource_id.clone()))
                .collect();
            let codes: HashMap<i64, u16> = page
                .records
                .iter()
                .map(|r| (r.id, r.response_code))
                .collect();
            for resource in ["res-1", "res-2", "res-3", "res-9"] {
                for f in filters(resource) {
                    let got = all_pages(&store, &f).await;
                    assert_eq!(
                        got,
                        expected(&all, &resources, &codes, &f),
                        "after batch {n}: {f:?}"
                    );
                }
            }
        }
        // 30 records with a resource per batch: references after 0, after 2 (for 1 and 2) and
        // after 3; 1 was read from the tail, then 4.
        assert_eq!(referenced_counts, [30, 30, 90, 120, 120]);
        // In generations 0 and 1 (batches 0 to 2), then 2 and 3 (batch 3), with their time
        // ranges.
        let gens: Vec<(i64, i64, i64, i64)> = writer
            .conn
            .prepare(
                "SELECT g.gen, g.min_ts - ?1, g.max_ts - ?1, \
                 (SELECT count(*) FROM usage_resource_refs x WHERE x.gen = g.gen) \
                 FROM usage_resource_gens g ORDER BY g.gen",
            )
            .unwrap()
            .query_map([t0], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        // (gen, oldest and newest timestamp after t0, references)
        assert_eq!(
            gens,
            [
                (0, 0, 60, 10),
                (1, 0, 95, 80),
                (2, 35, 95, 10),
                (3, 35, 95, 20)
            ]
        );
        store.close().await;
    }

    /// Indexed records of the last [`KEYS_RETAIN_MS`] stay in memory; older ones are found in
    /// `usage_request_keys`. Either way a re-delivered record is a duplicate, and one deleted
    /// since (retention) is stored again.
    #[tokio::test]
    async fn recently_indexed_keys_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
        let old = record("key_c", "ws_c", "old", now - 40 * DAY_MS);
        let recent = record("key_c", "ws_c", "recent", now - 500);
        let newest = record("key_c", "ws_c", "newest", now);
        let out = writer.ingest_group(&[&[old.clone(), recent.clone(), newest.clone()]]);
        assert_eq!(out.unwrap()[0].accepted, 3);
        assert_eq!(writer.index_tail().unwrap(), 3);
        // "old" left memory (found in usage_request_keys from now on), the others stayed.
        assert_eq!(writer.tail.len, 2);
        assert_eq!(writer.tail_len(), 0);
        assert!(writer.keyed_newest >= old.timestamp && writer.keyed_newest < recent.timestamp);
        let all = [old.clone(), recent.clone(), newest.clone()];
        let out = writer.ingest_group(&[&all]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (0, 3));
        // Deleted by retention: stored again, from memory's point of view too.
        while store.purge_records(now - 30 * DAY_MS, 10).await.unwrap() > 0 {}
        while store.purge_records(now + 1, 10).await.unwrap() > 0 {}
        let out = writer.ingest_group(&[&all]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (3, 0));
        let out = writer.ingest_group(&[&all]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (0, 3));
        store.close().await;
    }

    /// The `key_id` and `workspace_id` filters read their references (0008) for the older
    /// records and scan the tail above `through_id`: whatever the split, they answer what a
    /// filter over every record would, in the same order, across pages.
    #[tokio::test]
    async fn scope_filters_are_exact_across_references_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
        let plans = store.plans().await.unwrap();
        store
            .create_workspace(NewWorkspace {
                id: "ws_d".into(),
                name: WorkspaceName::parse("d").unwrap(),
                plan: PlanName::parse("enterprise", &plans).unwrap(),
                created_at: now,
            })
            .await
            .unwrap();
        for (id, ws) in [("key_c2", "ws_c"), ("key_d", "ws_d")] {
            let secret = ApiKeySecret::generate();
            store
                .create_key(NewKey {
                    id: id.into(),
                    workspace_id: ws.into(),
                    alias: Alias::parse(id).unwrap(),
                    description: None,
                    category: Category::parse("production").unwrap(),
                    expires_at: None,
                    quotas: Quotas::default(),
                    allowed: vec![],
                    created_at: now,
                    hash: secret.hash(),
                    prefix: secret.display_prefix(),
                })
                .await
                .unwrap();
        }
        let t0 = now - 100_000;
        let keys = [("key_c", "ws_c"), ("key_c2", "ws_c"), ("key_d", "ws_d")];
        // Timestamps interleave across batches (late records), several records share one.
        let batch = |n: usize| -> Vec<UsageRecord> {
            (0..42)
                .map(|i| {
                    let (k, w) = keys[i % 3];
                    let t = t0 + ((i * 5 + n * 3) % 11) as i64 * 10;
                    let mut r = record(k, w, &format!("b{n}-{i}"), t);
                    r.response_code = if i % 4 == 0 { 500 } else { 200 };
                    r
                })
                .collect()
        };
        let filters = || {
            let mut all = Vec::new();
            for key in [
                None,
                Some("key_c"),
                Some("key_c2"),
                Some("key_d"),
                Some("key_x"),
            ] {
                for ws in [None, Some("ws_c"), Some("ws_d"), Some("ws_x")] {
                    let base = RequestFilter {
                        key_id: key.map(str::to_owned),
                        workspace_id: ws.map(str::to_owned),
                        limit: 4,
                        ..RequestFilter::default()
                    };
                    all.push(base.clone());
                    all.push(RequestFilter {
                        response_code: Some(500),
                        from_ms: Some(t0 + 20),
                        to_ms: Some(t0 + 80),
                        ..base
                    });
                }
            }
            all
        };
        let expected = |all: &[(String, i64, i64)],
                        rows: &HashMap<i64, (String, String, u16)>,
                        f: &RequestFilter|
         -> Vec<(String, i64, i64)> {
            all.iter()
                .filter(|(_, t, id)| {
                    let (k, w, code) = &rows[id];
                    f.key_id.as_ref().is_none_or(|x| x == k)
                        && f.workspace_id.as_ref().is_none_or(|x| x == w)
                        && f.response_code.is_none_or(|c| *code == c)
                        && f.from_ms.is_none_or(|from| *t >= from)
                        && f.to_ms.is_none_or(|to| *t < to)
                })
                .cloned()
                .collect()
        };

        let mut referenced_counts = Vec::new();
        for (n, write_refs) in [(0, true), (1, false), (2, true), (3, false)] {
            writer.ingest_group(&[&batch(n)]).unwrap();
            if write_refs {
                assert!(writer.index_tail().unwrap() > 0);
            }
            referenced_counts.push((
                count(&writer, "SELECT count(*) FROM usage_key_refs"),
                count(&writer, "SELECT count(*) FROM usage_workspace_refs"),
            ));
            let unfiltered = RequestFilter {
                limit: 1000,
                ..RequestFilter::default()
            };
            let all = all_pages(&store, &unfiltered).await;
            // The unscoped log (idempotency keys, tail) against every stored record.
            let stored: Vec<(String, i64, i64)> = writer
                .conn
                .prepare(
                    "SELECT request_id, timestamp, id FROM usage_records \
                     ORDER BY timestamp DESC, id DESC",
                )
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(all, stored, "after batch {n}");
            let rows: HashMap<i64, (String, String, u16)> = store
                .requests(&unfiltered)
                .await
                .unwrap()
                .records
                .into_iter()
                .map(|r| (r.id, (r.key_id, r.workspace_id, r.response_code)))
                .collect();
            for f in filters() {
                let got = all_pages(&store, &f).await;
                assert_eq!(got, expected(&all, &rows, &f), "after batch {n}: {f:?}");
            }
        }
        assert_eq!(
            referenced_counts,
            [(42, 42), (42, 42), (126, 126), (126, 126)]
        );

        // Retention deletes the references with the records.
        while store.purge_records(now, 50).await.unwrap() > 0 {}
        assert_eq!(count(&writer, "SELECT count(*) FROM usage_key_refs"), 0);
        assert_eq!(
            count(&writer, "SELECT count(*) FROM usage_workspace_refs"),
            0
        );
        store.close().await;
    }

    /// Deleting records (retention) deletes their references; new records get ids above the
    /// referenced range even when the newest records were deleted, so none is ever missed.
    #[tokio::test]
    async fn references_follow_deletes_and_ids_stay_above_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
        let old = now - 40 * DAY_MS;
        let rs: Vec<UsageRecord> = (0..10)
            .map(|i| record("key_c", "ws_c", &format!("old-{i}"), old + i))
            .collect();
        writer.ingest_group(&[&rs]).unwrap();
        assert_eq!(writer.index_tail().unwrap(), 10);
        assert_eq!(store.purge_records(now - 30 * DAY_MS, 4).await.unwrap(), 4);
        assert_eq!(
            count(&writer, "SELECT count(*) FROM usage_resource_refs"),
            6
        );
        while store.purge_records(now - 30 * DAY_MS, 4).await.unwrap() > 0 {}
        assert_eq!(count(&writer, "SELECT count(*) FROM usage_records"), 0);
        assert_eq!(
            count(&writer, "SELECT count(*) FROM usage_resource_refs"),
            0
        );
        // Their generation (0011) goes with them.
        assert_eq!(
            count(&writer, "SELECT count(*) FROM usage_resource_gens"),
            0
        );

        // A deleted record is not stored any more: delivered again, it is stored again, whether
        // it was indexed or still in the tail.
        writer.ingest_group(&[&rs[..1]]).unwrap();
        assert_eq!(store.purge_records(now - 30 * DAY_MS, 4).await.unwrap(), 1);
        let out = writer.ingest_group(&[&rs[..2]]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (2, 0));
        while store.purge_records(now - 30 * DAY_MS, 4).await.unwrap() > 0 {}
        assert_eq!(count(&writer, "SELECT count(*) FROM usage_request_keys"), 0);

        // Every record is gone, the newest included: the next ids still start above the
        // indexed ones (10; 11-13 were never indexed and are free again).
        writer
            .ingest_group(&[&[record("key_c", "ws_c", "new", now)]])
            .unwrap();
        assert_eq!(count(&writer, "SELECT min(id) FROM usage_records"), 11);
        // old-0 had id 11 in the tail: delivered again, it is no duplicate of "new".
        let out = writer.ingest_group(&[&rs[..1]]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (1, 0));
        let out = writer.ingest_group(&[&rs[..1]]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (0, 1));
        let found = store
            .requests(&RequestFilter {
                resource_id: Some("r-1".into()),
                limit: 10,
                ..RequestFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(found.records.len(), 2);
        store.close().await;
    }

    /// A new writer (a restart) picks up where the references stand and writes the rest.
    #[tokio::test]
    async fn references_resume_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (store, mut writer, now) = store_and_writer(&path).await;
        let rs: Vec<UsageRecord> = (0..5)
            .map(|i| record("key_c", "ws_c", &format!("a-{i}"), now - 1000 + i))
            .collect();
        writer.ingest_group(&[&rs]).unwrap();
        drop(writer);
        let mut writer = Writer::new(
            open_writer(&path, Duration::from_secs(5)).unwrap(),
            Arc::default(),
        );
        writer.load_tail().unwrap();
        assert!(writer.tail_due(5) && !writer.tail_due(6));
        assert_eq!(writer.index_tail().unwrap(), 5);
        assert_eq!(writer.index_tail().unwrap(), 0);
        assert!(!writer.tail_due(1));
        // Duplicates are still found, referenced or not.
        let out = writer.ingest_group(&[&rs[..2]]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (0, 2));
        store.close().await;
    }

    /// Batches long enough for multi-row inserts, with duplicates inside a chunk, across chunks,
    /// batches and transactions, of the tail in memory, of indexed records and after a restart,
    /// and hashes that collide (all, some, none): every (request_id, timestamp) is stored once,
    /// counted as accepted the first time only.
    #[tokio::test]
    async fn chunked_inserts_are_exactly_once() {
        let hashes: [fn(&str) -> i64; 3] = [request_id_hash, |_| 42, |id| (id.len() % 3) as i64];
        for (h, hash) in hashes.into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
            writer.hash = hash;
            let mut seen = std::collections::HashSet::new();
            let mut x: u64 = 7;
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            for group in 0..5 {
                let batches: Vec<Vec<UsageRecord>> = (0..3)
                    .map(|_| {
                        (0..(40 + next() % 90))
                            .map(|_| {
                                let id = format!("r{}", next() % 150);
                                record("key_c", "ws_c", &id, now - 1000 + (next() % 3) as i64)
                            })
                            .collect()
                    })
                    .collect();
                let want: Vec<(u64, u64)> = batches
                    .iter()
                    .map(|b| {
                        let fresh = b
                            .iter()
                            .filter(|r| seen.insert((r.request_id.clone(), r.timestamp)))
                            .count() as u64;
                        (fresh, b.len() as u64 - fresh)
                    })
                    .collect();
                let refs: Vec<&[UsageRecord]> = batches.iter().map(Vec::as_slice).collect();
                // Duplicates of the tail (memory), of indexed records, and after a restart.
                match group {
                    2 => {
                        writer.index_tail().unwrap();
                    }
                    3 => {
                        writer = Writer::new(
                            open_writer(&dir.path().join("t.db"), Duration::from_secs(5)).unwrap(),
                            Arc::default(),
                        );
                        writer.hash = hash;
                        writer.load_tail().unwrap();
                    }
                    _ => {}
                }
                let got: Vec<(u64, u64)> = writer
                    .ingest_group(&refs)
                    .unwrap()
                    .iter()
                    .map(|o| (o.accepted, o.duplicates))
                    .collect();
                assert_eq!(got, want, "hash {h}, group {group}");
            }
            let mut stored: Vec<(String, i64)> = all_pages(
                &store,
                &RequestFilter {
                    limit: 500,
                    ..RequestFilter::default()
                },
            )
            .await
            .into_iter()
            .map(|(id, t, _)| (id, t))
            .collect();
            stored.sort();
            let mut want: Vec<(String, i64)> = seen.into_iter().collect();
            want.sort();
            assert_eq!(stored, want, "hash {h}");
            store.close().await;
        }
    }

    /// Rows migrated by 0004 have no hash: found by their text until the backfill gives them
    /// their hash and key, then through the keys, whether indexing had passed them or not.
    #[tokio::test]
    async fn rows_without_a_hash_stay_exact_through_the_backfill() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut writer, now) = store_and_writer(&dir.path().join("t.db")).await;
        let r = |id: &str| record("key_c", "ws_c", id, now - 1000);
        writer.ingest_group(&[&[r("a"), r("b")]]).unwrap();
        writer.index_tail().unwrap();
        writer.ingest_group(&[&[r("c")]]).unwrap();
        // As 0004 left them: no hash, no key (a and b indexed already, c in the tail).
        writer
            .conn
            .execute_batch(
                "DELETE FROM usage_request_keys; UPDATE usage_records SET rid_hash = NULL;",
            )
            .unwrap();
        writer.load_tail().unwrap();
        writer.tail = TailKeys::default();
        let again = || [r("a"), r("b"), r("c"), r("d")];
        let out = writer.ingest_group(&[&again()]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (1, 3));
        writer.backfill_hashes().unwrap();
        assert_eq!(count(&writer, "SELECT count(*) FROM usage_request_keys"), 2);
        writer.index_tail().unwrap();
        assert_eq!(count(&writer, "SELECT count(*) FROM usage_request_keys"), 4);
        assert_eq!(
            count(
                &writer,
                "SELECT count(*) FROM usage_records WHERE rid_hash IS NULL"
            ),
            0
        );
        let out = writer.ingest_group(&[&again()]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (0, 4));
        store.close().await;
    }

    /// Ingest waits for the tail in memory (loaded on demand) and fails while it cannot be.
    #[tokio::test]
    async fn ingest_needs_the_tail_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (store, mut writer, now) = store_and_writer(&path).await;
        let rs = [record("key_c", "ws_c", "a", now)];
        writer.ingest_group(&[&rs]).unwrap();
        let mut restarted = Writer::new(open_writer(&path, Duration::from_secs(5)).unwrap(), {
            Arc::default()
        });
        assert!(!restarted.tail_loaded);
        let out = restarted.store_group(&[&rs]).unwrap();
        assert_eq!((out[0].accepted, out[0].duplicates), (0, 1));
        restarted
            .conn
            .execute_batch("DROP TABLE usage_tail_state")
            .unwrap();
        restarted.tail_loaded = false;
        assert!(restarted.store_group(&[&rs]).is_err());
        store.close().await;
    }
}
