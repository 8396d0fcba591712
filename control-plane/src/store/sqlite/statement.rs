//! The shared SQL's statements on a rusqlite connection: [`Value`]s bound to `$n` (or `?n`)
//! parameters, rows read back as [`Row`]s, and SQLite's errors as the store's.

use std::sync::Arc;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Connection, ErrorCode, ToSql};

use crate::store::sql::{Row, Unique, Value};
use crate::store::{StoreError, StoreResult};

/// SQLite's error as the store's; a unique violation says which constraint ([`Unique`]).
pub(super) fn sqlite_error(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &e {
        // SQLITE_CONSTRAINT_PRIMARYKEY and SQLITE_CONSTRAINT_UNIQUE; the message names the
        // columns: "UNIQUE constraint failed: api_keys.workspace_id, api_keys.alias".
        if failure.code == ErrorCode::ConstraintViolation
            && matches!(failure.extended_code, 1555 | 2067)
        {
            let unique = if message.ends_with("api_keys.alias") {
                Unique::KeyAlias
            } else if message.ends_with("plans.name") {
                Unique::PlanName
            } else {
                Unique::Other
            };
            return StoreError::Backend(Box::new(unique));
        }
    }
    StoreError::Backend(Box::new(e))
}

/// `e`, which a call on `conn` failed with, as [`StoreError::Full`] when SQLite found no room to
/// write: SQLITE_FULL (its answer to ENOSPC), or an I/O error whose system errno is ENOSPC or
/// EFBIG. EFBIG is a file size limit (RLIMIT_FSIZE), which `serve` makes fail like a full disk
/// by ignoring SIGXFSZ; SQLite reports a failed write as SQLITE_IOERR_WRITE and keeps its errno
/// on the connection, so `conn` must be the connection of the failed call, asked right after.
pub(super) fn no_room(conn: &Connection, e: StoreError) -> StoreError {
    let StoreError::Backend(source) = e else {
        return e;
    };
    let full = match source.downcast_ref::<rusqlite::Error>() {
        Some(rusqlite::Error::SqliteFailure(failure, _)) => match failure.code {
            ErrorCode::DiskFull => true,
            ErrorCode::SystemIoFailure => {
                // SAFETY: the handle is `conn`'s, open while `conn` is borrowed, and used on this
                // thread only; sqlite3_system_errno reads a field of it.
                let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
                errno == libc::ENOSPC || errno == libc::EFBIG
            }
            _ => false,
        },
        _ => false,
    };
    if full {
        StoreError::Full(source)
    } else {
        StoreError::Backend(source)
    }
}

struct Bound<'v>(&'v Value);

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null(_) => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
        })
    }
}

/// `sql` prepared (cached on the connection) with `args` bound: `$n` and `?n` take the n-th
/// value, a bare `?` the next one.
pub(super) fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
    args: &[Value],
) -> StoreResult<CachedStatement<'c>> {
    let mut stmt = conn.prepare_cached(sql).map_err(sqlite_error)?;
    for i in 1..=stmt.parameter_count() {
        let n = match stmt.parameter_name(i) {
            Some(name) => name
                .strip_prefix(['$', '?'])
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    StoreError::Backend(format!("unsupported SQL parameter {name}").into())
                })?,
            None => i,
        };
        let value = n.checked_sub(1).and_then(|n| args.get(n)).ok_or_else(|| {
            StoreError::Backend(
                format!("statement needs parameter {n}, {} values given", args.len()).into(),
            )
        })?;
        stmt.raw_bind_parameter(i, Bound(value))
            .map_err(sqlite_error)?;
    }
    Ok(stmt)
}

/// Runs a statement; the number of rows it changed.
pub(super) fn execute(conn: &Connection, sql: &str, args: Vec<Value>) -> StoreResult<u64> {
    let mut stmt = prepare(conn, sql, &args)?;
    let changed = stmt.raw_execute().map_err(sqlite_error)?;
    Ok(changed as u64)
}

/// Runs a query; its rows.
pub(super) fn rows(conn: &Connection, sql: &str, args: Vec<Value>) -> StoreResult<Vec<Row>> {
    let mut stmt = prepare(conn, sql, &args)?;
    let columns: Arc<[String]> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            values.push(match row.get_ref(i).map_err(sqlite_error)? {
                ValueRef::Null => Value::Null(None),
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
                ValueRef::Blob(_) => {
                    return Err(StoreError::Backend(
                        format!("column {} holds a blob", columns[i]).into(),
                    ))
                }
            });
        }
        out.push(Row::new(columns.clone(), values));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::{args, unique_violation};

    #[test]
    fn binds_dollar_parameters_by_number_and_booleans_as_integers() {
        let conn = Connection::open_in_memory().unwrap();
        execute(
            &conn,
            "CREATE TABLE t (a INTEGER, b TEXT, c INTEGER)",
            vec![],
        )
        .unwrap();
        // $2 appears before $1: each takes its own value, not the next one.
        let n = execute(
            &conn,
            "INSERT INTO t (b, a, c) VALUES ($2, $1, $3)",
            args![7_i64, "x", true],
        )
        .unwrap();
        assert_eq!(n, 1);
        let rows = rows(&conn, "SELECT a, b, c FROM t WHERE a = $1", args![7_i64]).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<i64>("a").unwrap(), 7);
        assert_eq!(rows[0].get::<String>("b").unwrap(), "x");
        assert!(rows[0].get::<bool>("c").unwrap());
    }

    #[test]
    fn too_few_values_is_an_error_not_a_null() {
        let conn = Connection::open_in_memory().unwrap();
        let e = rows(&conn, "SELECT $1 + $2", args![1_i64]).unwrap_err();
        assert!(e.to_string().contains("parameter 2"), "{e}");
    }

    #[test]
    fn unique_violations_say_which_constraint() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE plans (name TEXT PRIMARY KEY); \
             CREATE TABLE api_keys (workspace_id TEXT, alias TEXT, UNIQUE (workspace_id, alias));",
        )
        .unwrap();
        let insert_twice = |sql: &str, values: Vec<Value>| {
            execute(&conn, sql, values.clone()).unwrap();
            execute(&conn, sql, values).unwrap_err()
        };
        let e = insert_twice("INSERT INTO plans VALUES ($1)", args!["p"]);
        assert_eq!(unique_violation(&e), Some(Unique::PlanName));
        let e = insert_twice("INSERT INTO api_keys VALUES ($1, $2)", args!["w", "a"]);
        assert_eq!(unique_violation(&e), Some(Unique::KeyAlias));
    }
}
