//! The SQLite store's connections for everything but ingest and the filter lookup: one writer
//! (SQLite allows one writer anyway; waiting here instead of in SQLite avoids `SQLITE_BUSY` on
//! lock upgrades) and a pool of read-only readers (WAL lets them read beside the writer).
//!
//! rusqlite is synchronous, so a statement runs where blocking is allowed ([`Lease::run`]): in
//! place under `block_in_place` on the server's multi-thread runtime (the runtime moves the
//! worker's other tasks to another thread, so none waits on SQLite's locks behind it), on
//! tokio's blocking threads elsewhere (tests' current-thread runtimes). In place, because a
//! statement takes microseconds and a trip to a blocking thread and back ~50 µs on a busy
//! host: a budget lease's grant is about ten statements, and it sits on a never-seen key's
//! first request (measured: a lookup with its first lease, p50 570–1,040 µs through blocking
//! threads, 285 µs in place; the lookup alone 140 µs). A future dropped while its statement
//! runs on a blocking thread loses that connection (SQLite rolls back what it had not
//! committed when it closes), and the pool opens a new one when next needed.
//!
//! Bounded: at most `size` connections per pool, idle or leased.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::statement::{self, no_room, sqlite_error};
use crate::store::sql::{Database, Row, Sql, Transaction, Value};
use crate::store::{StoreError, StoreResult};

/// A statement waits this long at most for another connection's write lock.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Creates the file if needed.
    ReadWrite,
    ReadOnly,
}

/// Opens a connection with the settings every store connection shares.
pub(super) fn open(path: &Path, access: Access) -> StoreResult<Connection> {
    let flags = match access {
        Access::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sqlite_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
    // 64 MiB of page cache per connection: indexes and rollups stay hot. Checkpoint every
    // 64 MiB of WAL instead of 4 MiB: a checkpoint fsyncs twice, and ingest commits a few MiB
    // per batch.
    conn.execute_batch(
        "PRAGMA foreign_keys = ON; PRAGMA temp_store = memory; PRAGMA cache_size = -65536; \
         PRAGMA mmap_size = 268435456;",
    )
    .map_err(sqlite_error)?;
    if access == Access::ReadWrite {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA wal_autocheckpoint = 16384; PRAGMA journal_size_limit = 134217728;",
        )
        .map_err(sqlite_error)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

#[derive(Debug)]
pub(super) struct Pool {
    path: PathBuf,
    access: Access,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    closed: AtomicBool,
}

fn closed() -> StoreError {
    StoreError::Backend("the database is closed".into())
}

impl Pool {
    pub fn new(path: &Path, access: Access, size: usize) -> Arc<Self> {
        Arc::new(Self {
            path: path.to_owned(),
            access,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size)),
            closed: AtomicBool::new(false),
        })
    }

    /// A connection for this task alone until the lease is dropped.
    pub async fn lease(self: &Arc<Self>) -> StoreResult<Lease> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let (path, access) = (self.path.clone(), self.access);
                tokio::task::spawn_blocking(move || open(&path, access))
                    .await
                    .map_err(|e| StoreError::Backend(Box::new(e)))??
            }
        };
        Ok(Lease {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// No more leases; idle connections close now, leased ones when they come back.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

/// A connection taken from a [`Pool`]; back to it when dropped (rolled back if a transaction
/// was left open).
#[derive(Debug)]
pub(super) struct Lease {
    conn: Option<Connection>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Runs `work` with the connection where blocking is allowed: in place on a multi-thread
    /// runtime (the runtime hands this worker's other tasks to another thread meanwhile; a
    /// statement takes microseconds, a trip to a blocking thread and back ten times that,
    /// and a write transaction makes several), else on a blocking thread.
    pub async fn run<T, F>(&mut self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| StoreError::Backend("the connection was lost".into()))?;
        let flavor = tokio::runtime::Handle::current().runtime_flavor();
        if flavor == tokio::runtime::RuntimeFlavor::MultiThread {
            let result =
                tokio::task::block_in_place(|| work(&mut conn).map_err(|e| no_room(&conn, e)));
            self.conn = Some(conn);
            return result;
        }
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = work(&mut conn).map_err(|e| no_room(&conn, e));
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
        self.conn = Some(conn);
        result
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // Ending a transaction left open is quick: it holds the locks, so nothing waits.
        if !conn.is_autocommit() && conn.execute_batch("ROLLBACK").is_err() {
            return;
        }
        if !self.pool.is_closed() {
            if let Ok(mut idle) = self.pool.idle.lock() {
                idle.push(conn);
            }
        }
    }
}

/// A transaction on a leased connection. `BEGIN` goes with the first statement (one trip to a
/// blocking thread, not two).
#[derive(Debug)]
pub(crate) struct SqliteTx {
    lease: Lease,
    begin: Option<&'static str>,
}

impl SqliteTx {
    fn new(lease: Lease, begin: &'static str) -> Self {
        Self {
            lease,
            begin: Some(begin),
        }
    }

    async fn run<T, F>(&mut self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let begin = self.begin.take();
        self.lease
            .run(move |conn| {
                if let Some(begin) = begin {
                    conn.execute_batch(begin).map_err(sqlite_error)?;
                }
                work(conn)
            })
            .await
    }
}

#[async_trait]
impl Sql for SqliteTx {
    async fn execute(&mut self, sql: &str, args: Vec<Value>) -> StoreResult<u64> {
        let sql = sql.to_owned();
        self.run(move |conn| statement::execute(conn, &sql, args))
            .await
    }

    async fn rows(&mut self, sql: &str, args: Vec<Value>) -> StoreResult<Vec<Row>> {
        let sql = sql.to_owned();
        self.run(move |conn| statement::rows(conn, &sql, args))
            .await
    }

    fn for_update(&self) -> &'static str {
        ""
    }

    fn for_no_key_update(&self) -> &'static str {
        ""
    }

    fn count_slot(&self) -> &'static str {
        ""
    }
}

#[async_trait]
impl Transaction for SqliteTx {
    async fn commit(mut self) -> StoreResult<()> {
        if self.begin.is_some() {
            return Ok(()); // no statement ran
        }
        self.lease
            .run(|conn| conn.execute_batch("COMMIT").map_err(sqlite_error))
            .await
    }
}

/// The writer and the readers, as the shared SQL uses them.
#[derive(Debug)]
pub(super) struct SqliteDb {
    pub writer: Arc<Pool>,
    pub readers: Arc<Pool>,
}

#[async_trait]
impl Database for SqliteDb {
    type Tx = SqliteTx;

    async fn write(&self) -> StoreResult<SqliteTx> {
        // IMMEDIATE takes the write lock up front, so checks made inside the transaction (plan
        // limit, alias) still hold when it writes, even against another process.
        Ok(SqliteTx::new(self.writer.lease().await?, "BEGIN IMMEDIATE"))
    }

    async fn read(&self) -> StoreResult<SqliteTx> {
        Ok(SqliteTx::new(self.readers.lease().await?, "BEGIN"))
    }

    fn retryable(&self, _: &StoreError) -> bool {
        false
    }
}
