//! WAL checkpoints off the ingest writer's thread.
//!
//! With SQLite's automatic checkpoint, the transaction that crosses the threshold copies the
//! whole WAL into the database file and syncs it before it returns: with realistic traffic about
//! a tenth of the ingest writer's time, spent between two batches. Here the ingest writer's
//! connection has automatic checkpoints off, and this thread copies what has been committed every
//! [`PASSIVE_EVERY`] without taking any lock a writer needs (`PASSIVE`).
//!
//! A checkpoint running beside the writer never catches up with it, so the WAL would never start
//! over: once it is longer than [`RESTART_FRAMES`], the writer copies the few frames still left
//! itself between two transactions ([`Checkpointer::finish`], passive too), which completes the
//! checkpoint, and its next transaction writes from the WAL's start again. (A `RESTART`
//! checkpoint here would do the same but blocks every writer while it waits for readers: with
//! lookups reading, ingest stalled for its whole busy timeout.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How often committed frames are copied into the database file.
const PASSIVE_EVERY: Duration = Duration::from_millis(200);
/// WAL frames (4 KiB pages) past which the WAL is made to start over (64 MiB, as
/// `wal_autocheckpoint` for the other connections).
const RESTART_FRAMES: i64 = 16_384;
/// Stops the checkpoint thread when dropped (the ingest writer holds it).
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
    restart_frames: i64,
    /// The WAL's length in frames as the thread last saw it.
    wal_frames: Arc<AtomicI64>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to the database at `path`.
    pub(super) fn start(path: &Path) -> rusqlite::Result<Checkpointer> {
        Self::start_with(path, RESTART_FRAMES)
    }

    fn start_with(path: &Path, restart_frames: i64) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let (stop, stopped) = mpsc::channel::<()>();
        let path: PathBuf = path.to_owned();
        let wal_frames = Arc::new(AtomicI64::new(0));
        let seen = wal_frames.clone();
        std::thread::Builder::new()
            .name("tollgate-checkpoint".to_owned())
            .spawn(move || run(&conn, &path, &seen, &stopped))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Checkpointer {
            _stop: stop,
            restart_frames,
            wal_frames,
        })
    }

    /// Called by the writer between two transactions, on its own connection: once the WAL is
    /// long, copies what the thread has not copied yet (a passive checkpoint, which with no
    /// other writer completes), so the next transaction starts the WAL over.
    pub(super) fn finish(&self, writer: &Connection) -> rusqlite::Result<()> {
        if self.wal_frames.load(Ordering::Relaxed) <= self.restart_frames {
            return Ok(());
        }
        let (busy, _) = wal_checkpoint(writer, "PASSIVE")?;
        if !busy {
            // Until the thread sees the new length: one finish per long WAL.
            self.wal_frames.store(0, Ordering::Relaxed);
        }
        Ok(())
    }
}

fn run(conn: &Connection, path: &Path, wal_frames: &AtomicI64, stopped: &mpsc::Receiver<()>) {
    let mut failing = false;
    loop {
        match stopped.recv_timeout(PASSIVE_EVERY) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        match wal_checkpoint(conn, "PASSIVE") {
            Ok((_, frames)) => {
                wal_frames.store(frames, Ordering::Relaxed);
                failing = false;
            }
            Err(e) => {
                // Once per failure streak: the next success says nothing, the WAL just grows.
                if !failing {
                    tracing::warn!(error = %e, path = %path.display(), "WAL checkpoint failed");
                }
                failing = true;
            }
        }
    }
}

/// `PRAGMA wal_checkpoint(mode)`: whether it was blocked, and the WAL's length in frames.
fn wal_checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(bool, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok((row.get::<_, i64>(0)? != 0, row.get(1)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes 20,000 one-page rows on a connection that never checkpoints itself; the longest
    /// the WAL file grew, in frames.
    fn longest_wal(restart_frames: Option<i64>) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)",
            )
            .unwrap();
        writer.busy_timeout(Duration::from_secs(5)).unwrap();
        let checkpointer = restart_frames.map(|n| Checkpointer::start_with(&path, n).unwrap());
        let row = vec![7u8; 3_000];
        let wal = dir.path().join("c.db-wal");
        for i in 0..20_000 {
            writer
                .execute("INSERT INTO t (id, v) VALUES (?1, ?2)", (i, &row))
                .unwrap();
            if let Some(c) = &checkpointer {
                c.finish(&writer).unwrap();
            }
            if i % 200 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        drop(checkpointer);
        let rows: i64 = writer
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 20_000);
        // The file keeps the length of the longest WAL (no journal_size_limit here).
        std::fs::metadata(wal).unwrap().len() / 4_096
    }

    /// The WAL starts over once past the restart length, though the writer never stops and
    /// only finishes what the thread started; without the checkpointer it holds every page
    /// written.
    #[test]
    fn wal_stays_bounded_while_a_writer_never_stops() {
        let unchecked = longest_wal(None);
        assert!(unchecked > 20_000, "{unchecked} frames without checkpoints");
        let checked = longest_wal(Some(2_000));
        // Past 2,000 frames, plus what the writer adds until the next check.
        assert!(checked * 2 < unchecked, "{checked} frames with checkpoints");
    }
}
