//! The filter's key lookup, read from SQLite on the calling task.
//!
//! A lookup the answer cache cannot serve is the filter's cold path. Through sqlx, its one
//! query (about 20 µs) went to the connection's worker thread and back: two thread hand-offs
//! that cost more than the query itself, most of all when the core had gone idle between
//! requests. Here the query runs where the request is, on a read-only connection (rusqlite,
//! as the ingest writer uses) with its statement prepared once.
//!
//! Blocking the async worker is bounded: the query reads a handful of index pages (WAL readers
//! never wait for the writer), and the busy timeout only matters in SQLite's rare recovery
//! states. Connections: one per lookup running at the same time, which is at most the number
//! of runtime worker threads since a lookup never awaits while holding one; at most
//! [`MAX_IDLE`] are kept.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use crate::store::{StoreError, StoreResult};

/// Idle connections kept for the next lookups.
const MAX_IDLE: usize = 16;
/// A reader waits this long at most (only while SQLite recovers a WAL, in practice).
const BUSY_TIMEOUT: Duration = Duration::from_millis(500);

/// One row of the lookup query (`LOOKUP_SQL` in `sqlite.rs`).
#[derive(Debug)]
pub(super) struct LookupRow {
    pub key_id: String,
    pub workspace_id: String,
    pub active: bool,
    pub expires_at: Option<i64>,
    pub secret_valid_until: Option<i64>,
    pub allowed: String,
    pub quota_total: Option<i64>,
    pub quota_daily: Option<i64>,
    pub quota_weekly: Option<i64>,
    pub quota_monthly: Option<i64>,
    pub last_used_at: Option<i64>,
    pub usage_total: Option<i64>,
    pub usage_daily: Option<i64>,
    pub usage_weekly: Option<i64>,
    pub usage_monthly: Option<i64>,
    pub recent: Option<i64>,
    pub plan_name: String,
    pub max_keys: Option<i64>,
    pub rate_limit_per_second: Option<i64>,
    pub rate_limit_per_minute: Option<i64>,
}

impl LookupRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            key_id: r.get("key_id")?,
            workspace_id: r.get("workspace_id")?,
            active: r.get("active")?,
            expires_at: r.get("expires_at")?,
            secret_valid_until: r.get("secret_valid_until")?,
            allowed: r.get("allowed")?,
            quota_total: r.get("quota_total")?,
            quota_daily: r.get("quota_daily")?,
            quota_weekly: r.get("quota_weekly")?,
            quota_monthly: r.get("quota_monthly")?,
            last_used_at: r.get("last_used_at")?,
            usage_total: r.get("usage_total")?,
            usage_daily: r.get("usage_daily")?,
            usage_weekly: r.get("usage_weekly")?,
            usage_monthly: r.get("usage_monthly")?,
            recent: r.get("recent")?,
            plan_name: r.get("plan_name")?,
            max_keys: r.get("max_keys")?,
            rate_limit_per_second: r.get("rate_limit_per_second")?,
            rate_limit_per_minute: r.get("rate_limit_per_minute")?,
        })
    }
}

/// The lookup query's parameters, in `?1`…`?9` order.
pub(super) type LookupParams<'a> = (&'a str, i64, i64, i64, i64, i64, i64, Option<&'a str>, i64);

#[derive(Debug)]
pub(super) struct LookupReader {
    path: PathBuf,
    sql: &'static str,
    idle: Mutex<Vec<Connection>>,
}

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl LookupReader {
    /// Opens one connection now, so a database it cannot read fails at startup.
    pub fn open(path: &Path, sql: &'static str) -> StoreResult<Self> {
        let reader = Self {
            path: path.to_owned(),
            sql,
            idle: Mutex::new(Vec::new()),
        };
        let conn = reader.connect()?;
        conn.prepare_cached(sql).map_err(backend)?;
        reader.put_back(conn);
        Ok(reader)
    }

    fn connect(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        conn.execute_batch("PRAGMA cache_size = -16384; PRAGMA mmap_size = 268435456;")
            .map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(4);
        Ok(conn)
    }

    fn put_back(&self, conn: Connection) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
    }

    /// Runs the lookup query for one hash.
    pub fn read(&self, params: LookupParams<'_>) -> StoreResult<Option<LookupRow>> {
        let taken = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match taken {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let row = conn
            .prepare_cached(self.sql)
            .and_then(|mut stmt| stmt.query_row(params, LookupRow::from_row).optional())
            .map_err(backend);
        self.put_back(conn);
        row
    }
}
