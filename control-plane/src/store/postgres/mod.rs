//! PostgreSQL backend (`tollgate serve --database-url postgres://…`): the same semantics as the
//! SQLite store, for deployments that outgrow one machine (several control planes may share the
//! database).
//!
//! One connection pool serves everything. Invariants that SQLite gets from its single writer come
//! from transactions and row locks here: creating a key locks its workspace row (plan key limit,
//! alias), changing or deleting a key locks the key row, and usage ingest locks the rows of the
//! keys it stores records for (so a key gets its first record or is deleted, never both).
//! Budget leases lock their key's row, so control planes sharing the database lease one at a
//! time per key. Nothing is cached in the process: another control plane may change the
//! database at any time.
//!
//! Plans, workspaces, keys, console tokens, the lookup and budget leases: the shared SQL
//! ([`crate::store::sql`], through `transaction.rs`). Usage ingest: group commit in `writer.rs`,
//! a group's transaction in `ingest.rs` (with `copy_in.rs`, `counts.rs` and `names.rs`); the
//! roll-up of its tail and retention by partition: `rollup.rs`; analytics and the request log:
//! `usage.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod copy_in;
mod counts;
mod ingest;
mod names;
mod rollup;
mod transaction;
mod usage;
mod writer;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgPool};
use tokio::task::AbortHandle;

use crate::domain::PlanName;
use crate::domain::{
    ApiKey, ConsoleToken, ExternalId, IngestOutcome, KeyLookup, KeyPatch, LeaseAnswer,
    LeaseRequest, NewConsoleToken, NewKey, NewWorkspace, Plan, RequestFilter, RequestPage,
    Rotation, UsageQuery, UsageRecord, UsageReport, Workspace,
};
use crate::metrics::Metrics;
use crate::secret::SecretHash;
use crate::store::postgres::transaction::{bind, pg_row};
use crate::store::sql::{self, args, keys::TOUCH_SQL, lookup};
use crate::store::{Store, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections of the pool (ingest, key management and reads share them).
const MAX_CONNECTIONS: u32 = 16;
/// Connections of the lookups' own pool.
const LOOKUP_CONNECTIONS: u32 = 8;
/// A request waits at most this long for a connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Any one statement runs at most this long.
const STATEMENT_TIMEOUT_MS: &str = "30000";
/// A transaction that hits a deadlock or serialization failure is retried this many times.
pub(super) const RETRIES: u32 = 3;
/// Keys remembered as recently touched (see [`PostgresStore::touch_key`]).
const TOUCHED_MAX: usize = 50_000;

#[derive(Debug)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
    /// The filter's key lookups (see `open`).
    lookups: PgPool,
    /// When this process last wrote each key's `last_used_at`, to skip redundant writes.
    touched: Mutex<HashMap<String, i64>>,
    /// Name numbers and partitions this process has seen.
    known: Arc<names::Known>,
    /// The usage writer (group commit).
    writer: writer::Writer,
    /// The task rolling the usage tail (stopped by `close`).
    roller: AbortHandle,
    /// Lookups (all read the database: there is no lookup cache here).
    metrics: Metrics,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…`) and runs pending migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        // No JIT: its compilation (tens of ms) costs more than any of these statements saves.
        let options = options
            .application_name("tollgate")
            .options([("statement_timeout", STATEMENT_TIMEOUT_MS), ("jit", "off")]);
        // One connection first, so a wrong URL, host or password fails now with its own error
        // rather than as a pool timeout.
        options.connect().await?.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(ingest::CREATE_STAGING).await?;
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        // The lookup is one statement with a subquery per usage window; planned for its
        // parameters it spent 0.5 ms planning to run for 0.2 ms. Its generic plan (primary keys
        // only) is as good, so its connections keep that one.
        let lookups = PgPoolOptions::new()
            .max_connections(LOOKUP_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.options([("plan_cache_mode", "force_generic_plan")]))
            .await?;
        let roller = tokio::spawn(roll_continuously(pool.clone())).abort_handle();
        let known = Arc::new(names::Known::default());
        let writer = writer::Writer::start(pool.clone(), known.clone());
        Ok(Self {
            pool,
            lookups,
            touched: Mutex::default(),
            known,
            writer,
            roller,
            metrics: Metrics::default(),
        })
    }

    /// Counts its lookups in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Whether `key_id` was written within `resolution_ms` of `now_ms` by this process.
    fn recently_touched(&self, key_id: &str, now_ms: i64, resolution_ms: i64) -> bool {
        self.touched.lock().is_ok_and(|t| {
            t.get(key_id)
                .is_some_and(|&at| now_ms >= at && now_ms - at < resolution_ms)
        })
    }

    fn remember_touch(&self, key_id: &str, now_ms: i64) {
        if let Ok(mut t) = self.touched.lock() {
            if t.len() >= TOUCHED_MAX {
                t.clear();
            }
            t.insert(key_id.to_owned(), now_ms);
        }
    }
}

/// Rolls the usage tail every [`rollup::ROLLUP_EVERY`] until aborted.
async fn roll_continuously(pool: PgPool) {
    let mut ticker = tokio::time::interval(rollup::ROLLUP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = rollup::roll_tail(&pool).await {
            tracing::warn!(error = %e, "usage roll-up failed; retrying at the next one");
        }
    }
}

/// PostgreSQL's error code (SQLSTATE) of a store error, if it is one.
pub(super) fn sqlstate(e: &StoreError) -> Option<String> {
    match e {
        StoreError::Backend(source) | StoreError::Full(source) => {
            source.downcast_ref::<sqlx::Error>().and_then(|e| match e {
                sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
                _ => None,
            })
        }
        _ => None,
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.roller.abort();
        self.writer.stop();
    }
}

/// Deadlocks and serialization failures: the transaction can simply run again.
pub(super) fn retryable(e: &StoreError) -> bool {
    sqlstate(e).is_some_and(|code| code == "40P01" || code == "40001")
}

#[async_trait]
impl Store for PostgresStore {
    async fn plans(&self) -> StoreResult<Vec<Plan>> {
        sql::catalog::plans(self).await
    }

    async fn create_plan(&self, plan: Plan) -> StoreResult<Plan> {
        sql::catalog::create_plan(self, plan).await
    }

    async fn set_workspace_plan(
        &self,
        workspace_id: &str,
        plan: &PlanName,
    ) -> StoreResult<Workspace> {
        sql::catalog::set_workspace_plan(self, workspace_id, plan).await
    }

    async fn create_workspace(&self, ws: NewWorkspace) -> StoreResult<Workspace> {
        sql::catalog::create_workspace(self, ws).await
    }

    async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        sql::catalog::workspaces(self).await
    }

    async fn workspace(&self, id: &str) -> StoreResult<Workspace> {
        sql::catalog::workspace(self, id).await
    }

    async fn create_key(&self, key: NewKey) -> StoreResult<ApiKey> {
        sql::keys::create(self, key).await
    }

    async fn keys(&self, workspace_id: &str) -> StoreResult<Vec<ApiKey>> {
        sql::keys::list(self, workspace_id).await
    }

    async fn keys_with_external_id(
        &self,
        workspace_id: Option<&str>,
        external_id: &ExternalId,
    ) -> StoreResult<Vec<ApiKey>> {
        sql::keys::with_external_id(self, workspace_id, external_id).await
    }

    async fn key(&self, id: &str) -> StoreResult<ApiKey> {
        sql::keys::get(self, id).await
    }

    async fn update_key(&self, id: &str, patch: KeyPatch) -> StoreResult<ApiKey> {
        sql::keys::update(self, id, patch).await
    }

    async fn rotate_key(&self, id: &str, rotation: Rotation) -> StoreResult<ApiKey> {
        sql::keys::rotate(self, id, &rotation).await
    }

    async fn delete_key(&self, id: &str) -> StoreResult<()> {
        sql::keys::delete(self, id).await
    }

    /// One statement on the pool, no transaction: it is one snapshot already.
    async fn lookup_key(&self, hash: &SecretHash, now_ms: i64) -> StoreResult<Option<KeyLookup>> {
        let args = lookup::lookup_args(hash, now_ms);
        self.metrics.lookup_from_database();
        let row = bind(sqlx::query(lookup::LOOKUP_SQL), args)
            .fetch_optional(&self.lookups)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let found = lookup::lookup_from_row(&pg_row(&row)?, now_ms)?;
        Ok(Some(found).filter(|k| k.secret_valid_until.is_none_or(|t| t > now_ms)))
    }

    /// Written before it returns (the lookup handler awaits it), so a later `delete_key` sees it
    /// from any control plane. Keys this process wrote within `resolution_ms` are skipped.
    async fn touch_key(&self, key_id: &str, now_ms: i64, resolution_ms: i64) -> StoreResult<()> {
        if self.recently_touched(key_id, now_ms, resolution_ms) {
            return Ok(());
        }
        bind(sqlx::query(TOUCH_SQL), args![now_ms, key_id, resolution_ms])
            .execute(&self.pool)
            .await?;
        self.remember_touch(key_id, now_ms);
        Ok(())
    }

    async fn lease(
        &self,
        request: &LeaseRequest,
        now_ms: i64,
        lease_ttl_ms: i64,
    ) -> StoreResult<LeaseAnswer> {
        let outcome = sql::leases::lease(self, request, now_ms, lease_ttl_ms).await?;
        Ok(outcome.answer)
    }

    async fn sweep_leases(&self, now_ms: i64) -> StoreResult<u64> {
        Ok(sql::leases::sweep(self, now_ms).await?.0)
    }

    async fn ingest_usage(&self, records: Vec<UsageRecord>) -> StoreResult<IngestOutcome> {
        self.writer.ingest(records).await
    }

    async fn usage_report(&self, query: &UsageQuery) -> StoreResult<UsageReport> {
        self.report(query).await
    }

    async fn requests(&self, filter: &RequestFilter) -> StoreResult<RequestPage> {
        self.request_page(filter).await
    }

    /// Whole days at a time, whatever `batch`: the partitions of the days entirely before
    /// `before_ms` are dropped; a record goes when its whole day is older than `before_ms`.
    async fn purge_records(&self, before_ms: i64, _batch: u32) -> StoreResult<u64> {
        let dropped = rollup::drop_partitions_before(&self.pool, before_ms).await?;
        if dropped > 0 {
            self.known.forget_partitions();
        }
        Ok(dropped)
    }

    async fn purge_rollups(&self, before_ms: i64, now_ms: i64) -> StoreResult<u64> {
        let alone = rollup::retention_alone_sql();
        let deleted =
            sql::retention::purge_rollups(self, before_ms, now_ms, "$1", Some(&alone)).await?;
        rollup::analyze_records(&self.pool).await?;
        Ok(deleted)
    }

    async fn create_console_token(&self, token: NewConsoleToken) -> StoreResult<ConsoleToken> {
        sql::console_tokens::create(self, token).await
    }

    async fn console_tokens(&self, workspace_id: &str) -> StoreResult<Vec<ConsoleToken>> {
        sql::console_tokens::list(self, workspace_id).await
    }

    async fn console_token(&self, id: &str) -> StoreResult<ConsoleToken> {
        sql::console_tokens::get(self, id).await
    }

    async fn delete_console_token(&self, id: &str) -> StoreResult<()> {
        sql::console_tokens::delete(self, id).await
    }

    async fn console_token_by_hash(&self, hash: &str) -> StoreResult<Option<ConsoleToken>> {
        sql::console_tokens::by_hash(self, hash).await
    }

    async fn close(&self) {
        self.roller.abort();
        self.writer.stop();
        self.lookups.close().await;
        self.pool.close().await;
    }
}
