//! The control plane's database: SQLite in the stack's data directory (the default), or a fresh
//! PostgreSQL database per stack (`tollgate serve --database-url`) on the server that
//! `TOLLGATE_TEST_DATABASE_URL` names (`make test-postgres` sets it). The database is created
//! with `psql` from that URL and dropped with the stack; databases left by a killed test run
//! (their process gone) are dropped by the next run's first stack.
//!
//! A test that runs on both has a variant per backend:
//!
//! ```no_run
//! use tollgate_integration_tests::{Backend, Stack};
//! fn scenario(backend: Backend) {
//!     let stack = Stack::builder().backend(backend).start();
//!     // ...
//! }
//! #[test]
//! fn scenario_on_sqlite() {
//!     scenario(Backend::Sqlite)
//! }
//! #[test]
//! fn scenario_on_postgres() {
//!     if let Some(backend) = Backend::postgres() {
//!         scenario(backend)
//!     }
//! }
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::tools::program;

/// The PostgreSQL server of the `_on_postgres` tests (a URL of a database to connect to for
/// creating and dropping the tests' own, e.g. `postgres://postgres@127.0.0.1:5432/postgres`).
pub const DATABASE_URL_VAR: &str = "TOLLGATE_TEST_DATABASE_URL";

/// Prefix of the databases the stacks create: `tollgate_it_<pid>_<random>`.
const PREFIX: &str = "tollgate_it_";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `<data dir>/tollgate.db`.
    Sqlite,
    /// A fresh database per stack on the server of `admin_url`.
    Postgres { admin_url: String },
}

impl Backend {
    /// PostgreSQL at `TOLLGATE_TEST_DATABASE_URL`. Unset: `None` after printing that the test is
    /// skipped, or a panic when `CI=true` (as `make test-postgres` fails there without a
    /// server).
    pub fn postgres() -> Option<Backend> {
        let url = std::env::var(DATABASE_URL_VAR)
            .ok()
            .filter(|u| !u.is_empty());
        match url {
            Some(admin_url) => Some(Backend::Postgres { admin_url }),
            None if std::env::var("CI").as_deref() == Ok("true") => panic!(
                "{DATABASE_URL_VAR} is unset and CI=true requires the PostgreSQL runs: run them \
                 with `make test-postgres` (or set {DATABASE_URL_VAR}=postgres://…)"
            ),
            None => {
                eprintln!(
                    "skipped: needs {DATABASE_URL_VAR} (a PostgreSQL server; `make test-postgres` \
                     sets it)"
                );
                None
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }
}

/// A database `tollgate_it_<pid>_<random>` on the server of `admin_url`, dropped (with any
/// connection still open to it) when this is dropped.
#[derive(Debug)]
pub struct Database {
    admin_url: String,
    name: String,
    /// The URL of this database, for `--database-url`.
    pub url: String,
}

impl Database {
    pub fn create(admin_url: &str) -> Database {
        static SWEPT: AtomicBool = AtomicBool::new(false);
        if !SWEPT.swap(true, Ordering::SeqCst) {
            sweep(admin_url);
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut random = RandomState::new().build_hasher();
        random.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
        let name = format!("{PREFIX}{}_{:016x}", std::process::id(), random.finish());
        psql(admin_url, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR}: creating database {name}: {e}"));
        Database {
            admin_url: admin_url.to_string(),
            url: with_database(admin_url, &name),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = psql(&self.admin_url, &sql) {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// Drops the databases of test processes that are gone (killed runs).
fn sweep(admin_url: &str) {
    let sql = format!("SELECT datname FROM pg_database WHERE datname LIKE '{PREFIX}%'");
    let Ok(names) = psql(admin_url, &sql) else {
        return; // `create` reports an unreachable server
    };
    for name in names.lines().map(str::trim) {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .unwrap_or("");
        let valid = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid && !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = psql(
                admin_url,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// Runs one statement with `psql` on `url`; its unaligned, tuples-only output.
fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(program("psql"))
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .map_err(|e| format!("cannot start psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "psql {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `url` with its database (the path) replaced by `name`; the query string is kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t_1"),
            "postgres://postgres@127.0.0.1:5432/t_1"
        );
        assert_eq!(
            with_database("postgres://u:p@db:5432", "t_1"),
            "postgres://u:p@db:5432/t_1"
        );
        assert_eq!(
            with_database("postgresql://u@h/x?sslmode=disable", "t_1"),
            "postgresql://u@h/t_1?sslmode=disable"
        );
    }
}
