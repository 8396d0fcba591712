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

use rusqlite::{Connection, OpenFlags};

use super::statement::{self, sqlite_error};
use crate::store::sql::{Row, Value};
use crate::store::StoreResult;

/// Idle connections kept for the next lookups.
const MAX_IDLE: usize = 16;
/// A reader waits this long at most (only while SQLite recovers a WAL, in practice).
const BUSY_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(super) struct LookupReader {
    path: PathBuf,
    sql: &'static str,
    idle: Mutex<Vec<Connection>>,
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
        conn.prepare_cached(sql).map_err(sqlite_error)?;
        reader.put_back(conn);
        Ok(reader)
    }

    fn connect(&self) -> StoreResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite_error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
        conn.execute_batch("PRAGMA cache_size = -16384; PRAGMA mmap_size = 268435456;")
            .map_err(sqlite_error)?;
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

    /// Runs the lookup query for one hash (`lookup_args`).
    pub fn read(&self, args: Vec<Value>) -> StoreResult<Option<Row>> {
        let taken = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match taken {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let rows = statement::rows(&conn, self.sql, args);
        self.put_back(conn);
        Ok(rows?.into_iter().next())
    }
}
