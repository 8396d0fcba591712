//! The SQL both backends share, written once: plans, workspaces, keys, console tokens, the
//! filter's lookup, budget leases and their charges, and the usage report. Statements use `$1`, `$2`… (PostgreSQL's form, which SQLite reads as named
//! parameters) and only what both dialects accept (`CAST(… AS BIGINT)`, `RETURNING`).
//!
//! A backend supplies a [`Database`]: transactions that run a statement with [`Value`]s and
//! give back [`Row`]s. What differs between backends stays in the backend: how a write is
//! serialised ([`Sql::for_update`]: PostgreSQL locks rows, SQLite's write transaction already
//! holds the only write lock), whether a transaction may be retried, and which constraint a
//! unique violation broke ([`Unique`]). Usage ingest and the request log differ by
//! design (SQLite's deferred indexes) and live in each backend.

pub(crate) mod catalog;
mod charges;
pub(crate) mod console_tokens;
pub(crate) mod keys;
pub(crate) mod leases;
pub(crate) mod lookup;
mod query;
pub(crate) mod report;
pub(crate) mod retention;
mod value;

use async_trait::async_trait;

pub(crate) use query::QueryBuilder;
pub(crate) use value::{args, Kind, Row, Value};

use crate::store::{StoreError, StoreResult};

/// A transaction (or connection) that runs statements.
#[async_trait]
pub(crate) trait Sql: Send {
    /// Runs a statement; the number of rows it changed.
    async fn execute(&mut self, sql: &str, args: Vec<Value>) -> StoreResult<u64>;
    /// Runs a query; its rows.
    async fn rows(&mut self, sql: &str, args: Vec<Value>) -> StoreResult<Vec<Row>>;
    /// Appended to a `SELECT` in a write transaction: the rows it reads stay locked until the
    /// transaction ends (PostgreSQL: ` FOR UPDATE`; SQLite: nothing, its write transaction
    /// already excludes every other writer).
    fn for_update(&self) -> &'static str;
    /// Like [`Sql::for_update`], but readers that only keep the row from being deleted (ingest's
    /// `FOR KEY SHARE` on a key) do not wait for it (PostgreSQL: ` FOR NO KEY UPDATE`).
    fn for_no_key_update(&self) -> &'static str;
    /// The key columns of the per-key count tables after the key and its bucket, for an upsert's
    /// conflict target (PostgreSQL: `, slot`, several rows per key and bucket; a row written
    /// without it takes slot 0, the column's default. SQLite: nothing, one row).
    fn count_slot(&self) -> &'static str;
}

impl dyn Sql + '_ {
    /// The first row, if any.
    pub async fn row(&mut self, sql: &str, args: Vec<Value>) -> StoreResult<Option<Row>> {
        Ok(self.rows(sql, args).await?.into_iter().next())
    }
}

#[async_trait]
pub(crate) trait Transaction: Sql + Sized {
    async fn commit(self) -> StoreResult<()>;
}

/// A backend's database, as the shared SQL uses it.
#[async_trait]
pub(crate) trait Database: Send + Sync {
    type Tx: Transaction + 'static;
    /// A transaction whose reads still hold when it writes (with [`Sql::for_update`]).
    async fn write(&self) -> StoreResult<Self::Tx>;
    /// A read-only transaction: one snapshot for every statement.
    async fn read(&self) -> StoreResult<Self::Tx>;
    /// Whether a failed transaction can simply run again (PostgreSQL's deadlocks and
    /// serialization failures).
    fn retryable(&self, e: &StoreError) -> bool;
}

/// A write transaction is tried at most this many times more when [`Database::retryable`].
pub(crate) const RETRIES: u32 = 3;

/// The unique constraints the shared SQL tells apart. A backend turns its driver's unique
/// violation into `StoreError::Backend(Box<Unique>)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unique {
    #[error("unique violation: plan name")]
    PlanName,
    #[error("unique violation: key alias in its workspace")]
    KeyAlias,
    #[error("unique violation")]
    Other,
}

/// Which [`Unique`] constraint `e` broke, if it is a unique violation.
pub(crate) fn unique_violation(e: &StoreError) -> Option<Unique> {
    match e {
        StoreError::Backend(source) => source.downcast_ref::<Unique>().copied(),
        _ => None,
    }
}

/// Runs `$body` (which yields a `StoreResult`, `$tx` being the transaction as `&mut dyn Sql`)
/// in a write transaction of `$db` and commits; again (at most [`RETRIES`] times) when the
/// backend says the failure was transient. `?` and `return` in `$body` end the attempt.
macro_rules! in_write {
    ($db:expr, |$tx:ident| $body:expr) => {{
        let db = $db;
        let mut attempt = 0;
        loop {
            let result: $crate::store::StoreResult<_> = async {
                let mut tx = $crate::store::sql::Database::write(db).await?;
                let value: $crate::store::StoreResult<_> = {
                    let $tx: &mut dyn $crate::store::sql::Sql = &mut tx;
                    $body
                };
                let value = value?;
                $crate::store::sql::Transaction::commit(tx).await?;
                Ok(value)
            }
            .await;
            match result {
                Err(e)
                    if attempt < $crate::store::sql::RETRIES
                        && $crate::store::sql::Database::retryable(db, &e) =>
                {
                    attempt += 1
                }
                other => break other,
            }
        }
    }};
}
pub(crate) use in_write;

/// Runs `$body` as [`in_write!`] does, in one read snapshot of `$db`, once.
macro_rules! in_read {
    ($db:expr, |$tx:ident| $body:expr) => {{
        let result: $crate::store::StoreResult<_> = async {
            let mut tx = $crate::store::sql::Database::read($db).await?;
            let value: $crate::store::StoreResult<_> = {
                let $tx: &mut dyn $crate::store::sql::Sql = &mut tx;
                $body
            };
            let value = value?;
            $crate::store::sql::Transaction::commit(tx).await?;
            Ok(value)
        }
        .await;
        result
    }};
}
pub(crate) use in_read;
