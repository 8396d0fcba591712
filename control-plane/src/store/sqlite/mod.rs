//! SQLite backend. One single-connection pool serialises every write transaction (SQLite allows
//! one writer anyway, and queueing in the pool avoids `SQLITE_BUSY` on lock upgrades); a pool of
//! readers serves lookups and listings concurrently thanks to WAL.
//!
//! Over 600 lines because `impl Store for SqliteStore` is one block (a trait impl cannot be
//! split) holding every key, plan, workspace and console-token query. Those queries are nearly
//! the PostgreSQL store's; writing them once for both backends (issue 15) shrinks this file.

use crate::domain::PlanName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod checkpoint;
mod ingest;
mod lookup;
mod lookup_cache;
mod usage;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};

use crate::clock;
use crate::domain::{
    ceil_to, window_start, DAY_MS, HOUR_MS, LONGEST_WINDOW_MS, RECENT_BUCKET_HORIZON_MS,
};
use crate::domain::{
    ApiKey, ConsoleToken, IngestOutcome, KeyLookup, KeyPatch, NewConsoleToken, NewKey,
    NewWorkspace, Plan, Recent, RecentQuery, RequestFilter, RequestPage, Rotation, Usage,
    UsageQuery, UsageRecord, UsageReport, Workspace,
};
use crate::secret::SecretHash;
use crate::store::key_touches::KeyTouches;
use crate::store::rows::{
    allowed_column, allowed_from_column, count, quota_column, quotas_from_columns, ConsoleTokenRow,
    KeyRow, PlanRow, WorkspaceRow,
};
use crate::store::sqlite::ingest::{open_writer, spawn_writer, IngestJob};
use crate::store::sqlite::lookup::{LookupReader, LookupRow};
use crate::store::sqlite::lookup_cache::LookupCache;
use crate::store::{Store, StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    lookups: Arc<LookupCache>,
    /// Usage batches for the ingest writer task (group commit).
    ingest: mpsc::Sender<IngestJob>,
    /// `last_used_at` writes of lookups, made in the background.
    touches: Arc<KeyTouches>,
    /// The filter's lookup query, run on the calling task (see `sqlite_lookup`).
    lookup_reader: Arc<LookupReader>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and runs pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            // 64 MiB of page cache per connection: the ingest indexes and rollups stay hot.
            .pragma("cache_size", "-65536")
            .pragma("mmap_size", "268435456")
            // Checkpoint every 64 MiB of WAL instead of 4 MiB: a checkpoint fsyncs twice, and
            // ingest commits a few MiB per batch.
            .pragma("wal_autocheckpoint", "16384")
            .pragma("journal_size_limit", "134217728");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let readers_count = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(4)
            .clamp(4, 16) as u32;
        let readers = SqlitePoolOptions::new()
            .max_connections(readers_count)
            .connect_with(options.read_only(true))
            .await?;
        let lookups: Arc<LookupCache> = Arc::default();
        let (ingest, jobs) = mpsc::channel(256);
        let ingest_conn = open_writer(path, BUSY_TIMEOUT)?;
        spawn_writer(path, ingest_conn, lookups.clone(), jobs)?;
        let touches = KeyTouches::start(writer.clone());
        let lookup_reader = Arc::new(LookupReader::open(path, LOOKUP_SQL)?);
        Ok(Self {
            writer,
            readers,
            lookups,
            ingest,
            touches,
            lookup_reader,
        })
    }

    /// Writes pending lookup touches, so a key read shows every lookup answered before it.
    async fn settle_touches(&self) {
        if let Err(e) = self.touches.flush(&self.writer).await {
            tracing::warn!(error = %e, "cannot record key use");
        }
    }

    async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        // IMMEDIATE takes the write lock up front, so checks made inside the transaction (plan
        // limit, alias) still hold when it writes, even against another process.
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

const KEY_COLUMNS: &str = "id, workspace_id, alias, description, category, active, expires_at, \
     quota_total, quota_daily, quota_weekly, quota_monthly, allowed, created_at, last_used_at, \
     hash, prefix";

/// `KEY_COLUMNS` plus `calls_this_month`; binds the month (`YYYYMM`) as `?1`.
fn select_keys(condition: &str) -> String {
    format!(
        "SELECT {KEY_COLUMNS}, coalesce((SELECT calls FROM key_month_calls c \
         WHERE c.key_id = api_keys.id AND c.month = ?1), 0) AS calls_this_month \
         FROM api_keys WHERE {condition}"
    )
}

async fn fetch_key(conn: &mut SqliteConnection, id: &str) -> StoreResult<ApiKey> {
    let row: Option<KeyRow> = sqlx::query_as(&select_keys("id = ?2"))
        .bind(clock::utc_month(clock::now_ms()))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.ok_or(StoreError::KeyNotFound)?.try_into()
}

/// The filter lookup in one statement, so the key, its usage windows and `recent` are one
/// snapshot. A window is read only when the key has a quota for it, and `recent` only for keys
/// with a quota: the filter ignores the rest, and each window costs two index searches. A
/// window = whole hours from the per-key hourly counts + the minutes of its first, partial hour.
const LOOKUP_SQL: &str = "\
SELECT k.id AS key_id, k.workspace_id, k.active, k.expires_at, \
       s.valid_until AS secret_valid_until, k.allowed, \
       k.quota_total, k.quota_daily, k.quota_weekly, k.quota_monthly, \
       k.last_used_at, p.name AS plan_name, p.max_keys, \
       p.rate_limit_per_second, p.rate_limit_per_minute, \
       CASE WHEN k.quota_total IS NOT NULL THEN \
         (SELECT admitted FROM key_admitted_totals t WHERE t.key_id = k.id) END AS usage_total, \
       CASE WHEN k.quota_daily IS NOT NULL THEN \
         (SELECT coalesce(sum(admitted), 0) FROM key_admitted_hours h \
           WHERE h.key_id = k.id AND h.hour >= ?3) + \
         (SELECT coalesce(sum(admitted), 0) FROM key_admitted_minutes m \
           WHERE m.key_id = k.id AND m.minute >= ?2 AND m.minute < ?3) END AS usage_daily, \
       CASE WHEN k.quota_weekly IS NOT NULL THEN \
         (SELECT coalesce(sum(admitted), 0) FROM key_admitted_hours h \
           WHERE h.key_id = k.id AND h.hour >= ?5) + \
         (SELECT coalesce(sum(admitted), 0) FROM key_admitted_minutes m \
           WHERE m.key_id = k.id AND m.minute >= ?4 AND m.minute < ?5) END AS usage_weekly, \
       CASE WHEN k.quota_monthly IS NOT NULL THEN \
         (SELECT coalesce(sum(admitted), 0) FROM key_admitted_hours h \
           WHERE h.key_id = k.id AND h.hour >= ?7) + \
         (SELECT coalesce(sum(admitted), 0) FROM key_admitted_minutes m \
           WHERE m.key_id = k.id AND m.minute >= ?6 AND m.minute < ?7) END AS usage_monthly, \
       CASE WHEN ?8 IS NOT NULL AND coalesce(k.quota_total, k.quota_daily, k.quota_weekly, \
         k.quota_monthly) IS NOT NULL THEN \
         (SELECT coalesce(sum(admitted), 0) FROM key_instance_buckets b \
           WHERE b.key_id = k.id AND b.instance = ?8 AND b.bucket >= ?9) END AS recent \
FROM key_secrets s \
JOIN api_keys k ON k.id = s.key_id \
JOIN workspaces w ON w.id = k.workspace_id \
JOIN plans p ON p.name = w.plan \
WHERE s.hash = ?1";

async fn alias_taken(
    conn: &mut SqliteConnection,
    workspace_id: &str,
    alias: &str,
    except_key: Option<&str>,
) -> StoreResult<bool> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT id FROM api_keys WHERE workspace_id = ? AND alias = ?")
            .bind(workspace_id)
            .bind(alias)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.is_some_and(|(id,)| Some(id.as_str()) != except_key))
}

/// A unique violation can only come from `(workspace_id, alias)` once the explicit check passed
/// (ids and hashes are random), e.g. a concurrent writer outside this process.
fn map_alias_conflict(e: sqlx::Error, alias: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() && db.message().contains("alias") => {
            StoreError::AliasTaken(alias.to_owned())
        }
        _ => e.into(),
    }
}

impl SqliteStore {
    async fn lookup_uncached(
        &self,
        hash: &SecretHash,
        now_ms: i64,
        recent: Option<&RecentQuery>,
    ) -> StoreResult<Option<KeyLookup>> {
        let window = |w: i64| {
            let start = window_start(now_ms, w);
            (start, ceil_to(start, HOUR_MS))
        };
        let (d0, d1) = window(DAY_MS);
        let (w0, w1) = window(7 * DAY_MS);
        let (m0, m1) = window(LONGEST_WINDOW_MS);
        // `since_ms` is on a bucket boundary within the buckets' horizon (the handler checks it),
        // so the per-instance buckets count it exactly.
        let since = recent.map_or(0, |r| r.since_ms);
        let row: Option<LookupRow> = self.lookup_reader.read((
            hash.as_str(),
            d0,
            d1,
            w0,
            w1,
            m0,
            m1,
            recent.map(|r| r.instance.as_str()),
            since,
        ))?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(KeyLookup {
            quotas: quotas_from_columns(
                r.quota_total,
                r.quota_daily,
                r.quota_weekly,
                r.quota_monthly,
            ),
            allowed: allowed_from_column(&r.allowed)?,
            key_id: r.key_id,
            workspace_id: r.workspace_id,
            active: r.active,
            expires_at: r.expires_at,
            secret_valid_until: r.secret_valid_until,
            usage: Usage {
                total: count(r.usage_total),
                daily: count(r.usage_daily),
                weekly: count(r.usage_weekly),
                monthly: count(r.usage_monthly),
            },
            recent: recent.map(|q| Recent {
                since_ms: q.since_ms,
                count: count(r.recent),
            }),
            plan: Plan {
                name: r.plan_name,
                max_keys: r.max_keys,
                rate_limit_per_second: r.rate_limit_per_second,
                rate_limit_per_minute: r.rate_limit_per_minute,
            },
            last_used_at: r.last_used_at,
        }))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn plans(&self) -> StoreResult<Vec<Plan>> {
        let rows: Vec<PlanRow> = sqlx::query_as(
            "SELECT name, max_keys, rate_limit_per_second, rate_limit_per_minute FROM plans \
             ORDER BY max_keys IS NULL, max_keys, name",
        )
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(Plan::from).collect())
    }

    async fn create_plan(&self, plan: Plan) -> StoreResult<Plan> {
        let result = sqlx::query(
            "INSERT INTO plans (name, max_keys, rate_limit_per_second, rate_limit_per_minute) \
             VALUES (?, ?, ?, ?)",
        )
        .bind(&plan.name)
        .bind(plan.max_keys)
        .bind(plan.rate_limit_per_second)
        .bind(plan.rate_limit_per_minute)
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => Ok(plan),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::PlanExists(plan.name))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn set_workspace_plan(
        &self,
        workspace_id: &str,
        plan: &PlanName,
    ) -> StoreResult<Workspace> {
        let done = sqlx::query("UPDATE workspaces SET plan = ? WHERE id = ?")
            .bind(plan.as_str())
            .bind(workspace_id)
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::WorkspaceNotFound);
        }
        // Cached lookup answers carry the plan's limits.
        self.lookups.invalidate();
        self.workspace(workspace_id).await
    }

    async fn create_workspace(&self, ws: NewWorkspace) -> StoreResult<Workspace> {
        sqlx::query("INSERT INTO workspaces (id, name, plan, created_at) VALUES (?, ?, ?, ?)")
            .bind(&ws.id)
            .bind(ws.name.as_str())
            .bind(ws.plan.as_str())
            .bind(ws.created_at)
            .execute(&self.writer)
            .await?;
        Ok(Workspace {
            id: ws.id,
            name: ws.name.into_inner(),
            plan: ws.plan.into_inner(),
            created_at: ws.created_at,
        })
    }

    async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        let rows: Vec<WorkspaceRow> = sqlx::query_as(
            "SELECT id, name, plan, created_at FROM workspaces ORDER BY created_at, id",
        )
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(Workspace::from).collect())
    }

    async fn workspace(&self, id: &str) -> StoreResult<Workspace> {
        let row: Option<WorkspaceRow> =
            sqlx::query_as("SELECT id, name, plan, created_at FROM workspaces WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.readers)
                .await?;
        row.map(Workspace::from)
            .ok_or(StoreError::WorkspaceNotFound)
    }

    async fn create_key(&self, key: NewKey) -> StoreResult<ApiKey> {
        let mut tx = self.begin().await?;
        let plan: Option<(String, Option<i64>)> = sqlx::query_as(
            "SELECT p.name, p.max_keys FROM workspaces w JOIN plans p ON p.name = w.plan \
             WHERE w.id = ?",
        )
        .bind(&key.workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (plan, max_keys) = plan.ok_or(StoreError::WorkspaceNotFound)?;
        if let Some(max_keys) = max_keys {
            // Every existing key takes a slot, deactivated ones included (they can be turned back
            // on at any time); deleting a never-used key frees its slot.
            let (count,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM api_keys WHERE workspace_id = ?")
                    .bind(&key.workspace_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if count >= max_keys {
                return Err(StoreError::PlanKeyLimit { plan, max_keys });
            }
        }
        if alias_taken(&mut tx, &key.workspace_id, key.alias.as_str(), None).await? {
            return Err(StoreError::AliasTaken(key.alias.into_inner()));
        }
        sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)"
        ))
        .bind(&key.id)
        .bind(&key.workspace_id)
        .bind(key.alias.as_str())
        .bind(key.description.as_ref().map(|d| d.as_str()))
        .bind(key.category.as_str())
        .bind(key.expires_at)
        .bind(quota_column(key.quotas.total))
        .bind(quota_column(key.quotas.daily))
        .bind(quota_column(key.quotas.weekly))
        .bind(quota_column(key.quotas.monthly))
        .bind(allowed_column(&key.allowed)?)
        .bind(key.created_at)
        .bind(key.hash.as_str())
        .bind(&key.prefix)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_alias_conflict(e, key.alias.as_str()))?;
        sqlx::query("INSERT INTO key_secrets (hash, key_id, valid_until) VALUES (?, ?, NULL)")
            .bind(key.hash.as_str())
            .bind(&key.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.lookups.invalidate();
        Ok(ApiKey {
            id: key.id,
            workspace_id: key.workspace_id,
            alias: key.alias.into_inner(),
            description: key.description.map(|d| d.into_inner()),
            category: key.category.into_inner(),
            active: true,
            expires_at: key.expires_at,
            quotas: key.quotas,
            allowed: key.allowed,
            created_at: key.created_at,
            last_used_at: None,
            hash: key.hash.as_str().to_owned(),
            prefix: key.prefix,
            calls_this_month: 0,
        })
    }

    async fn keys(&self, workspace_id: &str) -> StoreResult<Vec<ApiKey>> {
        self.settle_touches().await;
        // Both reads on one connection so a concurrent delete cannot make the 404 lie.
        let mut conn = self.readers.acquire().await?;
        let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM workspaces WHERE id = ?")
            .bind(workspace_id)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(StoreError::WorkspaceNotFound);
        }
        let rows: Vec<KeyRow> =
            sqlx::query_as(&select_keys("workspace_id = ?2 ORDER BY created_at, id"))
                .bind(clock::utc_month(clock::now_ms()))
                .bind(workspace_id)
                .fetch_all(&mut *conn)
                .await?;
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    async fn key(&self, id: &str) -> StoreResult<ApiKey> {
        self.settle_touches().await;
        let mut conn = self.readers.acquire().await?;
        fetch_key(&mut conn, id).await
    }

    async fn update_key(&self, id: &str, patch: KeyPatch) -> StoreResult<ApiKey> {
        let mut tx = self.begin().await?;
        let mut key = fetch_key(&mut tx, id).await?;
        let old_alias = key.alias.clone();
        patch.apply(&mut key);
        if key.alias != old_alias
            && alias_taken(&mut tx, &key.workspace_id, &key.alias, Some(id)).await?
        {
            return Err(StoreError::AliasTaken(key.alias));
        }
        sqlx::query(
            "UPDATE api_keys SET alias = ?, description = ?, category = ?, active = ?, \
             expires_at = ?, quota_total = ?, quota_daily = ?, quota_weekly = ?, \
             quota_monthly = ?, allowed = ? WHERE id = ?",
        )
        .bind(&key.alias)
        .bind(&key.description)
        .bind(&key.category)
        .bind(key.active)
        .bind(key.expires_at)
        .bind(quota_column(key.quotas.total))
        .bind(quota_column(key.quotas.daily))
        .bind(quota_column(key.quotas.weekly))
        .bind(quota_column(key.quotas.monthly))
        .bind(allowed_column(&key.allowed)?)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_alias_conflict(e, &key.alias))?;
        tx.commit().await?;
        self.lookups.invalidate();
        Ok(key)
    }

    async fn rotate_key(&self, id: &str, rotation: Rotation) -> StoreResult<ApiKey> {
        let mut tx = self.begin().await?;
        let mut key = fetch_key(&mut tx, id).await?;
        match rotation.old_valid_until {
            None => {
                sqlx::query("DELETE FROM key_secrets WHERE key_id = ?")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(until) => {
                sqlx::query(
                    "DELETE FROM key_secrets WHERE key_id = ? AND valid_until IS NOT NULL \
                     AND valid_until <= ?",
                )
                .bind(id)
                .bind(rotation.now_ms)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE key_secrets SET valid_until = ?1 \
                     WHERE key_id = ?2 AND (valid_until IS NULL OR valid_until > ?1)",
                )
                .bind(until)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("INSERT INTO key_secrets (hash, key_id, valid_until) VALUES (?, ?, NULL)")
            .bind(rotation.new_hash.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE api_keys SET hash = ?, prefix = ? WHERE id = ?")
            .bind(rotation.new_hash.as_str())
            .bind(&rotation.new_prefix)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.lookups.invalidate();
        key.hash = rotation.new_hash.as_str().to_owned();
        key.prefix = rotation.new_prefix;
        Ok(key)
    }

    async fn delete_key(&self, id: &str) -> StoreResult<()> {
        // A lookup that answered for this key before now may not have written its touch yet.
        self.touches.flush(&self.writer).await?;
        let mut tx = self.begin().await?;
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT last_used_at FROM api_keys WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        match row {
            None => return Err(StoreError::KeyNotFound),
            Some((Some(_),)) => return Err(StoreError::KeyHasHistory),
            Some((None,)) => {}
        }
        sqlx::query("DELETE FROM key_secrets WHERE key_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM api_keys WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.lookups.invalidate();
        Ok(())
    }

    async fn lookup_key(
        &self,
        hash: &SecretHash,
        now_ms: i64,
        recent: Option<&RecentQuery>,
    ) -> StoreResult<Option<KeyLookup>> {
        let cache_key = (hash.as_str().to_owned(), recent.cloned());
        if let Some(hit) = self.lookups.get(&cache_key, now_ms) {
            return Ok(hit.filter(|k| k.secret_valid_until.is_none_or(|t| t > now_ms)));
        }
        let snapshot = self.lookups.snapshot();
        let found = self.lookup_uncached(hash, now_ms, recent).await?;
        self.lookups.put(cache_key, snapshot, now_ms, found.clone());
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

    async fn ingest_usage(&self, records: Vec<UsageRecord>) -> StoreResult<IngestOutcome> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Backend("the ingest writer has stopped".into());
        self.ingest
            .send(IngestJob { records, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    async fn usage_report(&self, query: &UsageQuery) -> StoreResult<UsageReport> {
        self.report(query).await
    }

    async fn requests(&self, filter: &RequestFilter) -> StoreResult<RequestPage> {
        self.request_page(filter).await
    }

    async fn purge_records(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            // By time through the idempotency keys (0010), plus the writer's tail (by its id
            // range) and rows migrated by 0004 that have no hash yet.
            "DELETE FROM usage_records WHERE id IN \
             (SELECT id FROM usage_request_keys WHERE timestamp < ?1 \
              UNION ALL SELECT id FROM usage_records NOT INDEXED WHERE timestamp < ?1 \
              AND id > coalesce((SELECT through_id FROM usage_tail_state), 0) \
              UNION ALL SELECT id FROM usage_records INDEXED BY usage_records_unhashed \
              WHERE rid_hash IS NULL AND timestamp < ?1 \
              LIMIT ?2)",
        )
        .bind(before_ms)
        .bind(batch)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() > 0 {
            // Resource reference generations (0011) whose references are all gone now.
            sqlx::query(
                "DELETE FROM usage_resource_gens WHERE max_ts < ?1 AND NOT EXISTS \
                 (SELECT 1 FROM usage_resource_refs x WHERE x.gen = usage_resource_gens.gen)",
            )
            .bind(before_ms)
            .execute(&self.writer)
            .await?;
            // `recent` older than the bucket horizon reads raw records.
            self.lookups.invalidate();
        }
        Ok(done.rows_affected())
    }

    async fn purge_rollups(&self, before_ms: i64, now_ms: i64) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let mut deleted = 0;
        for (sql, cutoff) in [
            // Minutes not yet rolled into hours and days stay until they are (0009).
            (
                "DELETE FROM usage_minutes WHERE minute < \
                 min(?, (SELECT through_minute FROM usage_rollup_state))",
                before_ms,
            ),
            ("DELETE FROM usage_hours WHERE hour < ?", before_ms),
            ("DELETE FROM usage_days WHERE day < ?", before_ms),
            (
                "DELETE FROM usage_ws_minutes WHERE minute < \
                 min(?, (SELECT through_minute FROM usage_rollup_state))",
                before_ms,
            ),
            ("DELETE FROM usage_ws_hours WHERE hour < ?", before_ms),
            ("DELETE FROM usage_ws_days WHERE day < ?", before_ms),
            (
                "DELETE FROM key_admitted_minutes WHERE minute < ?",
                now_ms - LONGEST_WINDOW_MS - DAY_MS,
            ),
            (
                "DELETE FROM key_admitted_hours WHERE hour < ?",
                now_ms - LONGEST_WINDOW_MS - DAY_MS,
            ),
            (
                "DELETE FROM key_instance_buckets WHERE bucket < ?",
                now_ms - RECENT_BUCKET_HORIZON_MS - HOUR_MS,
            ),
        ] {
            deleted += sqlx::query(sql)
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        self.lookups.invalidate();
        Ok(deleted)
    }

    async fn create_console_token(&self, token: NewConsoleToken) -> StoreResult<ConsoleToken> {
        let mut tx = self.begin().await?;
        let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM workspaces WHERE id = ?")
            .bind(&token.workspace_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::WorkspaceNotFound);
        }
        sqlx::query(
            "INSERT INTO console_tokens (id, workspace_id, name, created_at, hash) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&token.id)
        .bind(&token.workspace_id)
        .bind(&token.name)
        .bind(token.created_at)
        .bind(&token.hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ConsoleToken {
            id: token.id,
            workspace_id: token.workspace_id,
            name: token.name,
            created_at: token.created_at,
        })
    }

    async fn console_tokens(&self, workspace_id: &str) -> StoreResult<Vec<ConsoleToken>> {
        let mut conn = self.readers.acquire().await?;
        let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM workspaces WHERE id = ?")
            .bind(workspace_id)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(StoreError::WorkspaceNotFound);
        }
        let rows: Vec<ConsoleTokenRow> = sqlx::query_as(
            "SELECT id, workspace_id, name, created_at FROM console_tokens \
             WHERE workspace_id = ? ORDER BY created_at, id",
        )
        .bind(workspace_id)
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows.into_iter().map(ConsoleToken::from).collect())
    }

    async fn console_token(&self, id: &str) -> StoreResult<ConsoleToken> {
        let row: Option<ConsoleTokenRow> = sqlx::query_as(
            "SELECT id, workspace_id, name, created_at FROM console_tokens WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.readers)
        .await?;
        row.map(ConsoleToken::from)
            .ok_or(StoreError::ConsoleTokenNotFound)
    }

    async fn delete_console_token(&self, id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM console_tokens WHERE id = ?")
            .bind(id)
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::ConsoleTokenNotFound);
        }
        Ok(())
    }

    async fn console_token_by_hash(&self, hash: &str) -> StoreResult<Option<ConsoleToken>> {
        let row: Option<ConsoleTokenRow> = sqlx::query_as(
            "SELECT id, workspace_id, name, created_at FROM console_tokens WHERE hash = ?",
        )
        .bind(hash)
        .fetch_optional(&self.readers)
        .await?;
        Ok(row.map(ConsoleToken::from))
    }

    async fn close(&self) {
        if let Err(e) = self.touches.flush(&self.writer).await {
            tracing::warn!(error = %e, "cannot record key use at shutdown");
        }
        self.readers.close().await;
        self.writer.close().await;
        self.touches.stop();
    }
}
