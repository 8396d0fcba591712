//! The shared SQL on PostgreSQL: transactions from the pool, [`Value`]s bound with their types,
//! rows read back by column type, and PostgreSQL's errors as the store's.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{Column, Postgres, Row as _, TypeInfo};

use super::PostgresStore;
use crate::store::sql::{Database, Kind, Row, Sql, Transaction, Unique, Value};
use crate::store::{StoreError, StoreResult};

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        // SQLSTATE class 53, insufficient resources: 53100 disk_full, 53200 out_of_memory,
        // 53300 too_many_connections… The server is short of something it may have again.
        let full = match &e {
            sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("53")),
            _ => false,
        };
        if full {
            StoreError::Full(Box::new(e))
        } else {
            StoreError::Backend(Box::new(e))
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// PostgreSQL's error as the store's; a unique violation says which constraint ([`Unique`]).
fn pg_error(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            let unique = match db.constraint() {
                Some("api_keys_alias_unique") => Unique::KeyAlias,
                Some("plans_pkey") => Unique::PlanName,
                _ => Unique::Other,
            };
            return StoreError::Backend(Box::new(unique));
        }
    }
    e.into()
}

/// `query` with `args` bound as `$1`, `$2`…
pub(super) fn bind(
    mut query: Query<'_, Postgres, PgArguments>,
    args: Vec<Value>,
) -> Query<'_, Postgres, PgArguments> {
    for value in args {
        query = match value {
            Value::Int(v) => query.bind(v),
            Value::Real(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
            Value::Bool(v) => query.bind(v),
            Value::Null(Some(Kind::Int)) => query.bind(None::<i64>),
            Value::Null(Some(Kind::Real)) => query.bind(None::<f64>),
            Value::Null(Some(Kind::Bool)) => query.bind(None::<bool>),
            Value::Null(Some(Kind::Text) | None) => query.bind(None::<String>),
        };
    }
    query
}

/// A PostgreSQL row as a [`Row`], each column read by its type.
pub(super) fn pg_row(row: &PgRow) -> StoreResult<Row> {
    let columns: Arc<[String]> = row.columns().iter().map(|c| c.name().to_owned()).collect();
    let mut values = Vec::with_capacity(columns.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match column.type_info().name() {
            "INT8" => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
            "INT4" => row
                .try_get::<Option<i32>, _>(i)?
                .map(|v| Value::Int(v.into())),
            "INT2" => row
                .try_get::<Option<i16>, _>(i)?
                .map(|v| Value::Int(v.into())),
            "FLOAT8" => row.try_get::<Option<f64>, _>(i)?.map(Value::Real),
            "BOOL" => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => {
                row.try_get::<Option<String>, _>(i)?.map(Value::Text)
            }
            other => {
                return Err(StoreError::Backend(
                    format!(
                        "column {} has type {other}, which the store does not read",
                        column.name()
                    )
                    .into(),
                ))
            }
        };
        values.push(value.unwrap_or(Value::Null(None)));
    }
    Ok(Row::new(columns, values))
}

pub(crate) struct PgTx(sqlx::Transaction<'static, Postgres>);

#[async_trait]
impl Sql for PgTx {
    async fn execute(&mut self, sql: &str, args: Vec<Value>) -> StoreResult<u64> {
        let done = bind(sqlx::query(sql), args)
            .execute(&mut *self.0)
            .await
            .map_err(pg_error)?;
        Ok(done.rows_affected())
    }

    async fn rows(&mut self, sql: &str, args: Vec<Value>) -> StoreResult<Vec<Row>> {
        let rows = bind(sqlx::query(sql), args)
            .fetch_all(&mut *self.0)
            .await
            .map_err(pg_error)?;
        rows.iter().map(pg_row).collect()
    }

    fn for_update(&self) -> &'static str {
        " FOR UPDATE"
    }

    fn for_no_key_update(&self) -> &'static str {
        " FOR NO KEY UPDATE"
    }

    fn count_slot(&self) -> &'static str {
        ", slot"
    }
}

#[async_trait]
impl Transaction for PgTx {
    async fn commit(self) -> StoreResult<()> {
        Ok(self.0.commit().await?)
    }
}

#[async_trait]
impl Database for PostgresStore {
    type Tx = PgTx;

    async fn write(&self) -> StoreResult<PgTx> {
        Ok(PgTx(self.pool.begin().await?))
    }

    async fn read(&self) -> StoreResult<PgTx> {
        let tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        Ok(PgTx(tx))
    }

    /// Deadlocks and serialization failures.
    fn retryable(&self, e: &StoreError) -> bool {
        super::retryable(e)
    }
}
