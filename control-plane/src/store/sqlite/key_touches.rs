//! `last_used_at` writes of key lookups, off the lookup's path.
//!
//! A lookup records its touch here and answers at once; a background task writes the pending
//! touches in one transaction, at most every [`WRITE_EVERY`]. Awaiting the write in the lookup
//! made a key's first lookup (the filter's cold path) several times slower than a cached one,
//! and milliseconds slower while an ingest transaction held SQLite's write lock; writing right
//! after each lookup still cost the next lookup ~40 µs of CPU on a busy core (one transaction
//! per new key). `last_used_at` has a one-minute resolution, so a short delay loses nothing.
//!
//! The rule "a key a lookup has answered for cannot be deleted" still holds: deleting a key
//! first writes every pending touch ([`KeyTouches::flush`]), and a touch is pending before its
//! lookup answers.
//!
//! Bounded: one entry per distinct key touched since the last write (keys come from the
//! database, so at most the number of keys; in practice those looked up for the first time within one `WRITE_EVERY`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::pool::SqliteDb;
use crate::store::sql::{self, args, keys::TOUCH_SQL};
use crate::store::StoreResult;

#[derive(Debug, Default)]
pub(super) struct KeyTouches {
    /// Key id → (newest touch time, resolution) not yet written.
    pending: Mutex<HashMap<String, (i64, i64)>>,
    /// Held for a whole write, so a `flush` returns only once earlier touches are committed.
    writing: tokio::sync::Mutex<()>,
    wake: Notify,
}

/// Pause after a failed write before trying again.
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// How long touches gather before the background writer writes them in one transaction.
const WRITE_EVERY: Duration = Duration::from_millis(250);

impl KeyTouches {
    /// Starts the background writer; it ends once the writer pool is closed ([`Self::stop`]).
    pub fn start(db: Arc<SqliteDb>) -> Arc<KeyTouches> {
        let touches = Arc::new(KeyTouches::default());
        let task = touches.clone();
        tokio::spawn(async move {
            loop {
                task.wake.notified().await;
                if db.writer.is_closed() {
                    return;
                }
                tokio::time::sleep(WRITE_EVERY).await;
                if db.writer.is_closed() {
                    return;
                }
                if let Err(e) = task.flush(&db).await {
                    tracing::warn!(error = %e, "cannot record key use; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                    task.wake.notify_one();
                }
            }
        });
        touches
    }

    /// Notes that a lookup answered for `key_id` at `now_ms`; written soon after.
    pub(super) fn request(&self, key_id: &str, now_ms: i64, resolution_ms: i64) {
        if let Ok(mut pending) = self.pending.lock() {
            let entry = pending
                .entry(key_id.to_owned())
                .or_insert((now_ms, resolution_ms));
            entry.0 = entry.0.max(now_ms);
        }
        self.wake.notify_one();
    }

    /// Lets the background writer see that its pool was closed.
    pub(super) fn stop(&self) {
        self.wake.notify_one();
    }

    /// Writes every touch requested so far (and waits for a write already under way).
    pub(super) async fn flush(&self, db: &SqliteDb) -> StoreResult<()> {
        let _writing = self.writing.lock().await;
        let batch = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return Ok(()),
        };
        if batch.is_empty() {
            return Ok(());
        }
        match write(db, &batch).await {
            Ok(()) => Ok(()),
            Err(e) => {
                // Put them back (newer touches may have arrived meanwhile).
                if let Ok(mut pending) = self.pending.lock() {
                    for (key, (t, resolution)) in batch {
                        let entry = pending.entry(key).or_insert((t, resolution));
                        entry.0 = entry.0.max(t);
                    }
                }
                Err(e)
            }
        }
    }
}

async fn write(db: &SqliteDb, batch: &HashMap<String, (i64, i64)>) -> StoreResult<()> {
    sql::in_write!(db, |tx| {
        for (key_id, (now_ms, resolution_ms)) in batch {
            tx.execute(TOUCH_SQL, args![*now_ms, key_id, *resolution_ms])
                .await?;
        }
        Ok(())
    })
}
