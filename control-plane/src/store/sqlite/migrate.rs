//! The SQLite schema's migrations (`migrations/sqlite`), applied through rusqlite, and the
//! constants their SQL holds.
//!
//! The files are embedded by `sqlx::migrate!` (file parsing and checksums only; sqlx does not
//! open SQLite), and their bookkeeping is sqlx's `_sqlx_migrations` table, row for row: a
//! database migrated by an earlier Tollgate, whose runner was sqlx's, carries on here. Each
//! migration commits together with its row, so it never runs twice; a row left unsuccessful,
//! a changed file or a migration this build does not know stops the store from opening.

use std::time::Instant;

use rusqlite::{Connection, OptionalExtension};
use sqlx::migrate::Migrator;

use super::statement::sqlite_error;
use crate::store::{StoreError, StoreResult};

/// The migrations this build ships.
pub(super) static MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// Resource references are kept by generation of `2^RESOURCE_GEN_SHIFT` record ids (`id >>
/// RESOURCE_GEN_SHIFT`): a step's references then dirty a few hundred pages of the newest
/// generation instead of one page each across every resource's range. Migration 0011's SQL
/// (its copy and its delete trigger) has the shift written out; a test holds the two together.
pub(super) const RESOURCE_GEN_SHIFT: u32 = 17;

fn failed(message: String) -> StoreError {
    StoreError::Backend(message.into())
}

/// Applies `migrator`'s pending migrations to `conn` (a read-write connection), in order.
pub fn migrate(conn: &mut Connection, migrator: &Migrator) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations ( \
             version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, \
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
             success BOOLEAN NOT NULL, \
             checksum BLOB NOT NULL, \
             execution_time BIGINT NOT NULL)",
    )
    .map_err(sqlite_error)?;
    let dirty: Option<i64> = conn
        .query_row(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(sqlite_error)?;
    if let Some(version) = dirty {
        return Err(failed(format!(
            "migration {version} was left partly applied; restore the database from a backup"
        )));
    }
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    let newest_applied: Option<i64> = conn
        .query_row("SELECT max(version) FROM _sqlx_migrations", [], |r| {
            r.get(0)
        })
        .map_err(sqlite_error)?;
    if let Some(v) = newest_applied.filter(|v| !known.contains(v)) {
        return Err(failed(format!(
            "the database has migration {v}, which this tollgate does not know: it was made \
             by a newer version"
        )));
    }
    for m in migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
    {
        let started = Instant::now();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sqlite_error)?;
        let applied: Option<Vec<u8>> = tx
            .query_row(
                "SELECT checksum FROM _sqlx_migrations WHERE version = ?1",
                [m.version],
                |r| r.get(0),
            )
            .optional()
            .map_err(sqlite_error)?;
        match applied {
            Some(checksum) if checksum == *m.checksum => continue,
            Some(_) => {
                return Err(failed(format!(
                    "migration {} ({}) differs from the one applied to this database",
                    m.version, m.description
                )))
            }
            None => {}
        }
        tx.execute_batch(&m.sql).map_err(|e| {
            failed(format!(
                "migration {} ({}) failed: {e}",
                m.version, m.description
            ))
        })?;
        tx.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (?1, ?2, TRUE, ?3, ?4)",
            rusqlite::params![
                m.version,
                &*m.description,
                &*m.checksum,
                i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX)
            ],
        )
        .map_err(sqlite_error)?;
        tx.commit().map_err(sqlite_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_0011_uses_the_generation_shift() {
        let sql = MIGRATIONS
            .iter()
            .find(|m| m.version == 11)
            .map(|m| m.sql.to_string())
            .unwrap();
        let shifts: Vec<u32> = sql
            .split(">>")
            .skip(1)
            .map(|after| {
                let digits: String = after
                    .trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().unwrap()
            })
            .collect();
        assert_eq!(shifts.len(), 5);
        assert!(
            shifts.iter().all(|&s| s == RESOURCE_GEN_SHIFT),
            "{shifts:?}"
        );
    }

    #[test]
    fn applies_once_and_refuses_a_changed_migration() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &MIGRATIONS).unwrap();
        migrate(&mut conn, &MIGRATIONS).unwrap();
        let applied: i64 = conn
            .query_row("SELECT count(*) FROM _sqlx_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(applied, MIGRATIONS.iter().count() as i64);
        conn.execute(
            "UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 3",
            [],
        )
        .unwrap();
        let e = migrate(&mut conn, &MIGRATIONS).unwrap_err().to_string();
        assert!(e.contains("migration 3"), "{e}");
    }
}
