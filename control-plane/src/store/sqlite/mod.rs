//! SQLite backend, the default: one file, rusqlite for every connection.
//!
//! Connections: the ingest writer thread's own ([`ingest`], group commit), the filter lookup's
//! readers on the calling task ([`lookup`]), the WAL checkpointer's ([`checkpoint`]), and for
//! everything else one writer and a pool of readers ([`pool`]) that run the shared SQL
//! ([`crate::store::sql`]). SQLite's write lock orders the writers; the busy timeout makes
//! each wait for the others.
//!
//! One driver, rusqlite, rather than sqlx: the two hot paths need a synchronous connection
//! (ingest runs thousands of prepared statements per transaction on its thread; a cold lookup
//! is one ~20 µs query that a hop to sqlx's connection thread and back doubled, see
//! `lookup.rs`), and with sqlx's SQLite driver beside rusqlite both had to agree on one
//! `libsqlite3-sys`, so neither could be upgraded alone. sqlx still embeds the migration files
//! ([`migrate`]) and drives PostgreSQL.

use crate::domain::PlanName;
use std::path::Path;
use std::sync::Arc;

mod checkpoint;
mod ingest;
mod key_touches;
mod lookup;
mod lookup_cache;
pub mod migrate;
mod pool;
mod statement;
mod usage;

use async_trait::async_trait;

use crate::config::DEFAULT_LOOKUP_CACHE_ENTRIES;
use crate::domain::{
    ApiKey, ConsoleToken, ExternalId, IngestOutcome, KeyLookup, KeyPatch, LeaseAnswer,
    LeaseRequest, NewConsoleToken, NewKey, NewWorkspace, Plan, RequestFilter, RequestPage,
    Rotation, UsageQuery, UsageRecord, UsageReport, Workspace,
};
use crate::metrics::Metrics;
use crate::secret::SecretHash;
use crate::store::group_commit::{self, IngestJob};
use crate::store::sql::{self, args, lookup::LOOKUP_SQL};
use crate::store::sqlite::ingest::{open_writer, spawn_writer};
use crate::store::sqlite::key_touches::KeyTouches;
use crate::store::sqlite::lookup::LookupReader;
use crate::store::sqlite::lookup_cache::LookupCache;
use crate::store::sqlite::migrate::{migrate, MIGRATIONS};
use crate::store::sqlite::pool::{Access, Pool, SqliteDb, BUSY_TIMEOUT};
use crate::store::{Store, StoreResult};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Arc<SqliteDb>,
    lookups: Arc<LookupCache>,
    /// Usage batches for the ingest writer task (group commit).
    ingest: mpsc::Sender<IngestJob>,
    /// `last_used_at` writes of lookups, made in the background.
    touches: Arc<KeyTouches>,
    /// The filter's lookup query, run on the calling task (see `lookup.rs`).
    lookup_reader: Arc<LookupReader>,
    /// Where lookups were answered from (cache or database).
    metrics: Metrics,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs pending migrations, with the
    /// default lookup cache.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with_lookup_cache(path, DEFAULT_LOOKUP_CACHE_ENTRIES).await
    }

    /// [`open`](Self::open), keeping at most `lookup_cache` filter lookup answers (0: none).
    pub async fn open_with_lookup_cache(path: &Path, lookup_cache: usize) -> StoreResult<Self> {
        let writer = Pool::new(path, Access::ReadWrite, 1);
        writer
            .lease()
            .await?
            .run(|conn| migrate(conn, &MIGRATIONS))
            .await?;
        let readers_count = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(4)
            .clamp(4, 16);
        let readers = Pool::new(path, Access::ReadOnly, readers_count);
        // One reader now, so a database it cannot read fails at startup.
        drop(readers.lease().await?);
        let db = Arc::new(SqliteDb { writer, readers });
        let lookups = Arc::new(LookupCache::new(lookup_cache));
        let (ingest, jobs) = mpsc::channel(256);
        let ingest_conn = open_writer(path, BUSY_TIMEOUT)?;
        spawn_writer(path, ingest_conn, lookups.clone(), jobs)?;
        let touches = KeyTouches::start(db.clone());
        let lookup_reader = Arc::new(LookupReader::open(path, LOOKUP_SQL)?);
        Ok(Self {
            db,
            lookups,
            ingest,
            touches,
            lookup_reader,
            metrics: Metrics::default(),
        })
    }

    /// Counts its lookups, by where each was answered from, in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Writes pending lookup touches, so a key read shows every lookup answered before it.
    async fn settle_touches(&self) {
        if let Err(e) = self.touches.flush(&self.db).await {
            tracing::warn!(error = %e, "cannot record key use");
        }
    }

    /// After leases charged `key_ids`: their cached lookup answers (`usage`, `credits.used`) go.
    fn charged(&self, key_ids: &[String]) {
        if !key_ids.is_empty() {
            self.lookups
                .invalidate_keys(key_ids.iter().map(String::as_str));
        }
    }

    /// `result`, after dropping every cached lookup answer if the change went through (they
    /// carry keys, secrets and plans).
    fn changed<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        if result.is_ok() {
            self.lookups.invalidate();
        }
        result
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn plans(&self) -> StoreResult<Vec<Plan>> {
        sql::catalog::plans(&*self.db).await
    }

    async fn create_plan(&self, plan: Plan) -> StoreResult<Plan> {
        sql::catalog::create_plan(&*self.db, plan).await
    }

    async fn set_workspace_plan(
        &self,
        workspace_id: &str,
        plan: &PlanName,
    ) -> StoreResult<Workspace> {
        self.changed(sql::catalog::set_workspace_plan(&*self.db, workspace_id, plan).await)
    }

    async fn create_workspace(&self, ws: NewWorkspace) -> StoreResult<Workspace> {
        sql::catalog::create_workspace(&*self.db, ws).await
    }

    async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        sql::catalog::workspaces(&*self.db).await
    }

    async fn workspace(&self, id: &str) -> StoreResult<Workspace> {
        sql::catalog::workspace(&*self.db, id).await
    }

    async fn create_key(&self, key: NewKey) -> StoreResult<ApiKey> {
        self.changed(sql::keys::create(&*self.db, key).await)
    }

    async fn keys(&self, workspace_id: &str) -> StoreResult<Vec<ApiKey>> {
        self.settle_touches().await;
        sql::keys::list(&*self.db, workspace_id).await
    }

    async fn keys_with_external_id(
        &self,
        workspace_id: Option<&str>,
        external_id: &ExternalId,
    ) -> StoreResult<Vec<ApiKey>> {
        self.settle_touches().await;
        sql::keys::with_external_id(&*self.db, workspace_id, external_id).await
    }

    async fn key(&self, id: &str) -> StoreResult<ApiKey> {
        self.settle_touches().await;
        sql::keys::get(&*self.db, id).await
    }

    async fn update_key(&self, id: &str, patch: KeyPatch) -> StoreResult<ApiKey> {
        self.changed(sql::keys::update(&*self.db, id, patch).await)
    }

    async fn rotate_key(&self, id: &str, rotation: Rotation) -> StoreResult<ApiKey> {
        self.changed(sql::keys::rotate(&*self.db, id, &rotation).await)
    }

    async fn delete_key(&self, id: &str) -> StoreResult<()> {
        // A lookup that answered for this key before now may not have written its touch yet.
        self.touches.flush(&self.db).await?;
        self.changed(sql::keys::delete(&*self.db, id).await)
    }

    async fn lookup_key(&self, hash: &SecretHash, now_ms: i64) -> StoreResult<Option<KeyLookup>> {
        if let Some(hit) = self.lookups.get(hash.as_str(), now_ms) {
            self.metrics.lookup_from_cache();
            return Ok(hit.filter(|k| k.secret_valid_until.is_none_or(|t| t > now_ms)));
        }
        let snapshot = self.lookups.snapshot();
        let args = sql::lookup::lookup_args(hash, now_ms);
        self.metrics.lookup_from_database();
        let found = match self.lookup_reader.read(args)? {
            Some(row) => Some(sql::lookup::lookup_from_row(&row, now_ms)?),
            None => None,
        };
        self.lookups
            .put(hash.as_str().to_owned(), snapshot, now_ms, found.clone());
        Ok(found.filter(|k| k.secret_valid_until.is_none_or(|t| t > now_ms)))
    }

    async fn touch_key(&self, key_id: &str, now_ms: i64, resolution_ms: i64) -> StoreResult<()> {
        // Cached lookups keep an older `last_used_at`; the write itself is needed once a minute.
        if self.lookups.recently_touched(key_id, now_ms, resolution_ms) {
            return Ok(());
        }
        self.touches.request(key_id, now_ms, resolution_ms);
        Ok(())
    }

    async fn lease(
        &self,
        request: &LeaseRequest,
        now_ms: i64,
        lease_ttl_ms: i64,
    ) -> StoreResult<LeaseAnswer> {
        let outcome = sql::leases::lease(&*self.db, request, now_ms, lease_ttl_ms).await?;
        self.charged(&outcome.charged);
        Ok(outcome.answer)
    }

    async fn sweep_leases(&self, now_ms: i64) -> StoreResult<u64> {
        let (swept, charged) = sql::leases::sweep(&*self.db, now_ms).await?;
        self.charged(&charged);
        Ok(swept)
    }

    async fn ingest_usage(&self, records: Vec<UsageRecord>) -> StoreResult<IngestOutcome> {
        group_commit::submit(&self.ingest, records).await
    }

    async fn usage_report(&self, query: &UsageQuery) -> StoreResult<UsageReport> {
        self.report(query).await
    }

    async fn requests(&self, filter: &RequestFilter) -> StoreResult<RequestPage> {
        self.request_page(filter).await
    }

    async fn purge_records(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        self.db
            .writer
            .lease()
            .await?
            .run(move |conn| {
                let deleted = statement::execute(
                    conn,
                    // By time through the idempotency keys (0010), plus the writer's tail (by
                    // its id range) and rows migrated by 0004 that have no hash yet.
                    "DELETE FROM usage_records WHERE id IN \
                     (SELECT id FROM usage_request_keys WHERE timestamp < $1 \
                      UNION ALL SELECT id FROM usage_records NOT INDEXED WHERE timestamp < $1 \
                      AND id > coalesce((SELECT through_id FROM usage_tail_state), 0) \
                      UNION ALL SELECT id FROM usage_records INDEXED BY usage_records_unhashed \
                      WHERE rid_hash IS NULL AND timestamp < $1 \
                      LIMIT $2)",
                    args![before_ms, batch],
                )?;
                if deleted > 0 {
                    // Resource reference generations (0011) whose references are all gone now.
                    statement::execute(
                        conn,
                        "DELETE FROM usage_resource_gens WHERE max_ts < $1 AND NOT EXISTS \
                         (SELECT 1 FROM usage_resource_refs x WHERE x.gen = usage_resource_gens.gen)",
                        args![before_ms],
                    )?;
                }
                Ok(deleted)
            })
            .await
    }

    async fn purge_rollups(&self, before_ms: i64, now_ms: i64) -> StoreResult<u64> {
        // Minutes not yet rolled into hours and days stay until they are (0009).
        let minutes_before = "min($1, (SELECT through_minute FROM usage_rollup_state))";
        let deleted =
            sql::retention::purge_rollups(&*self.db, before_ms, now_ms, minutes_before, None).await;
        self.changed(deleted)
    }

    async fn create_console_token(&self, token: NewConsoleToken) -> StoreResult<ConsoleToken> {
        sql::console_tokens::create(&*self.db, token).await
    }

    async fn console_tokens(&self, workspace_id: &str) -> StoreResult<Vec<ConsoleToken>> {
        sql::console_tokens::list(&*self.db, workspace_id).await
    }

    async fn console_token(&self, id: &str) -> StoreResult<ConsoleToken> {
        sql::console_tokens::get(&*self.db, id).await
    }

    async fn delete_console_token(&self, id: &str) -> StoreResult<()> {
        sql::console_tokens::delete(&*self.db, id).await
    }

    async fn console_token_by_hash(&self, hash: &str) -> StoreResult<Option<ConsoleToken>> {
        sql::console_tokens::by_hash(&*self.db, hash).await
    }

    async fn close(&self) {
        if let Err(e) = self.touches.flush(&self.db).await {
            tracing::warn!(error = %e, "cannot record key use at shutdown");
        }
        self.db.readers.close();
        self.db.writer.close();
        self.touches.stop();
    }
}
