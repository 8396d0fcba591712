//! PostgreSQL backend (`tollgate serve --database-url postgres://…`): the same semantics as the
//! SQLite store, for deployments that outgrow one machine (several control planes may share the
//! database).
//!
//! Over 600 lines because `impl Store for PostgresStore` is one block (a trait impl cannot be
//! split); its key, plan, workspace and console-token queries are nearly SQLite's, and writing
//! them once for both backends (issue 15) shrinks this file.
//!
//! One connection pool serves everything. Invariants that SQLite gets from its single writer come
//! from transactions and row locks here: creating a key locks its workspace row (plan key limit,
//! alias), changing or deleting a key locks the key row, and usage ingest locks the rows of the
//! keys it stores records for (so a key gets its first record or is deleted, never both).
//! Nothing is cached in the process: another control plane may change the database at any time.
//!
//! Usage ingest, analytics and the request log: `postgres_usage.rs`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

mod ingest;
mod usage;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, FromRow, PgConnection, PgPool};

use crate::clock;
use crate::domain::PlanName;
use crate::domain::{
    ceil_to, window_start, DAY_MS, HOUR_MS, LONGEST_WINDOW_MS, RECENT_BUCKET_HORIZON_MS,
};
use crate::domain::{
    ApiKey, ConsoleToken, IngestOutcome, KeyLookup, KeyPatch, NewConsoleToken, NewKey,
    NewWorkspace, Plan, Recent, RecentQuery, RequestFilter, RequestPage, Rotation, Usage,
    UsageQuery, UsageRecord, UsageReport, Workspace,
};
use crate::secret::SecretHash;
use crate::store::rows::{
    allowed_column, allowed_from_column, count, quota_column, quotas_from_columns, ConsoleTokenRow,
    KeyRow, PlanRow, WorkspaceRow,
};
use crate::store::{Store, StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections of the pool (lookups, ingest, key management and reads share them).
const MAX_CONNECTIONS: u32 = 16;
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
    /// When this process last wrote each key's `last_used_at`, to skip redundant writes.
    touched: Mutex<HashMap<String, i64>>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://…`) and runs pending migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        let options = options
            .application_name("tollgate")
            .options([("statement_timeout", STATEMENT_TIMEOUT_MS)]);
        // One connection first, so a wrong URL, host or password fails now with its own error
        // rather than as a pool timeout.
        options.connect().await?.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            touched: Mutex::default(),
        })
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

/// Deadlocks and serialization failures: the transaction can simply run again.
pub(super) fn retryable(e: &StoreError) -> bool {
    match e {
        StoreError::Backend(source) => source
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| match e {
                sqlx::Error::Database(db) => db.code(),
                _ => None,
            })
            .is_some_and(|code| code == "40P01" || code == "40001"),
        _ => false,
    }
}

const KEY_COLUMNS: &str = "id, workspace_id, alias, description, category, active, expires_at, \
     quota_total, quota_daily, quota_weekly, quota_monthly, allowed, created_at, last_used_at, \
     hash, prefix";

/// `KEY_COLUMNS` plus `calls_this_month`; binds the month (`YYYYMM`) as `$1`.
fn select_keys(condition: &str) -> String {
    format!(
        "SELECT {KEY_COLUMNS}, coalesce((SELECT calls FROM key_month_calls c \
         WHERE c.key_id = api_keys.id AND c.month = $1), 0) AS calls_this_month \
         FROM api_keys WHERE {condition}"
    )
}

/// The key `id`; with `lock`, its row stays locked until the transaction ends.
async fn fetch_key(conn: &mut PgConnection, id: &str, lock: bool) -> StoreResult<ApiKey> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row: Option<KeyRow> = sqlx::query_as(&format!("{}{lock}", select_keys("id = $2")))
        .bind(clock::utc_month(clock::now_ms()))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.ok_or(StoreError::KeyNotFound)?.try_into()
}

/// A unique violation on the alias constraint (two writers raced past the explicit check).
fn map_alias_conflict(e: sqlx::Error, alias: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db)
            if db.is_unique_violation() && db.constraint() == Some("api_keys_alias_unique") =>
        {
            StoreError::AliasTaken(alias.to_owned())
        }
        _ => e.into(),
    }
}

async fn alias_taken(
    conn: &mut PgConnection,
    workspace_id: &str,
    alias: &str,
    except_key: Option<&str>,
) -> StoreResult<bool> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT id FROM api_keys WHERE workspace_id = $1 AND alias = $2")
            .bind(workspace_id)
            .bind(alias)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.is_some_and(|(id,)| Some(id.as_str()) != except_key))
}

/// The filter lookup in one statement (one snapshot): key, secret, plan, the usage windows the
/// key has a quota for, and `recent` (only for keys with a quota). A window = whole hours from
/// the per-key hourly counts + the minutes of its first, partial hour. Same as `LOOKUP_SQL` of
/// the SQLite store.
const LOOKUP_SQL: &str = "\
SELECT k.id AS key_id, k.workspace_id, k.active, k.expires_at, \
       s.valid_until AS secret_valid_until, k.allowed, \
       k.quota_total, k.quota_daily, k.quota_weekly, k.quota_monthly, \
       k.last_used_at, p.name AS plan_name, p.max_keys, \
       p.rate_limit_per_second, p.rate_limit_per_minute, \
       CASE WHEN k.quota_total IS NOT NULL THEN \
         (SELECT admitted FROM key_admitted_totals t WHERE t.key_id = k.id) END AS usage_total, \
       CASE WHEN k.quota_daily IS NOT NULL THEN \
         (SELECT coalesce(sum(admitted), 0)::int8 FROM key_admitted_hours h \
           WHERE h.key_id = k.id AND h.hour >= $3) + \
         (SELECT coalesce(sum(admitted), 0)::int8 FROM key_admitted_minutes m \
           WHERE m.key_id = k.id AND m.minute >= $2 AND m.minute < $3) END AS usage_daily, \
       CASE WHEN k.quota_weekly IS NOT NULL THEN \
         (SELECT coalesce(sum(admitted), 0)::int8 FROM key_admitted_hours h \
           WHERE h.key_id = k.id AND h.hour >= $5) + \
         (SELECT coalesce(sum(admitted), 0)::int8 FROM key_admitted_minutes m \
           WHERE m.key_id = k.id AND m.minute >= $4 AND m.minute < $5) END AS usage_weekly, \
       CASE WHEN k.quota_monthly IS NOT NULL THEN \
         (SELECT coalesce(sum(admitted), 0)::int8 FROM key_admitted_hours h \
           WHERE h.key_id = k.id AND h.hour >= $7) + \
         (SELECT coalesce(sum(admitted), 0)::int8 FROM key_admitted_minutes m \
           WHERE m.key_id = k.id AND m.minute >= $6 AND m.minute < $7) END AS usage_monthly, \
       CASE WHEN $8::text IS NOT NULL AND coalesce(k.quota_total, k.quota_daily, \
         k.quota_weekly, k.quota_monthly) IS NOT NULL THEN \
         (SELECT coalesce(sum(admitted), 0)::int8 FROM key_instance_buckets b \
           WHERE b.key_id = k.id AND b.instance = $8::text AND b.bucket >= $9) END AS recent \
FROM key_secrets s \
JOIN api_keys k ON k.id = s.key_id \
JOIN workspaces w ON w.id = k.workspace_id \
JOIN plans p ON p.name = w.plan \
WHERE s.hash = $1";

#[derive(FromRow)]
struct LookupRow {
    key_id: String,
    workspace_id: String,
    active: bool,
    expires_at: Option<i64>,
    secret_valid_until: Option<i64>,
    allowed: String,
    quota_total: Option<i64>,
    quota_daily: Option<i64>,
    quota_weekly: Option<i64>,
    quota_monthly: Option<i64>,
    last_used_at: Option<i64>,
    usage_total: Option<i64>,
    usage_daily: Option<i64>,
    usage_weekly: Option<i64>,
    usage_monthly: Option<i64>,
    recent: Option<i64>,
    plan_name: String,
    max_keys: Option<i64>,
    rate_limit_per_second: Option<i64>,
    rate_limit_per_minute: Option<i64>,
}

async fn workspace_exists(conn: &mut PgConnection, id: &str) -> StoreResult<bool> {
    let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM workspaces WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(found.is_some())
}

impl PostgresStore {
    async fn create_key_once(&self, key: &NewKey) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // The workspace row lock orders concurrent key creations in this workspace, so the count
        // and the alias check below still hold when the insert commits.
        let plan: Option<(String, Option<i64>)> = sqlx::query_as(
            "SELECT p.name, p.max_keys FROM workspaces w JOIN plans p ON p.name = w.plan \
             WHERE w.id = $1 FOR UPDATE OF w",
        )
        .bind(&key.workspace_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (plan, max_keys) = plan.ok_or(StoreError::WorkspaceNotFound)?;
        if let Some(max_keys) = max_keys {
            // Every existing key takes a slot, deactivated ones included.
            let (count,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM api_keys WHERE workspace_id = $1")
                    .bind(&key.workspace_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if count >= max_keys {
                return Err(StoreError::PlanKeyLimit { plan, max_keys });
            }
        }
        if alias_taken(&mut tx, &key.workspace_id, key.alias.as_str(), None).await? {
            return Err(StoreError::AliasTaken(key.alias.as_str().to_owned()));
        }
        sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, TRUE, $6, $7, $8, $9, $10, $11, $12, NULL, $13, $14)"
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
        sqlx::query("INSERT INTO key_secrets (hash, key_id, valid_until) VALUES ($1, $2, NULL)")
            .bind(key.hash.as_str())
            .bind(&key.id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_key_once(&self, id: &str, patch: KeyPatch) -> StoreResult<ApiKey> {
        let mut tx = self.pool.begin().await?;
        // Locked: a concurrent patch applies to this one's result, not to the same old row.
        let mut key = fetch_key(&mut tx, id, true).await?;
        let old_alias = key.alias.clone();
        patch.apply(&mut key);
        if key.alias != old_alias
            && alias_taken(&mut tx, &key.workspace_id, &key.alias, Some(id)).await?
        {
            return Err(StoreError::AliasTaken(key.alias));
        }
        sqlx::query(
            "UPDATE api_keys SET alias = $1, description = $2, category = $3, active = $4, \
             expires_at = $5, quota_total = $6, quota_daily = $7, quota_weekly = $8, \
             quota_monthly = $9, allowed = $10 WHERE id = $11",
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
        Ok(key)
    }

    async fn rotate_key_once(&self, id: &str, rotation: &Rotation) -> StoreResult<ApiKey> {
        let mut tx = self.pool.begin().await?;
        let mut key = fetch_key(&mut tx, id, true).await?;
        match rotation.old_valid_until {
            None => {
                sqlx::query("DELETE FROM key_secrets WHERE key_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            Some(until) => {
                sqlx::query(
                    "DELETE FROM key_secrets WHERE key_id = $1 AND valid_until IS NOT NULL \
                     AND valid_until <= $2",
                )
                .bind(id)
                .bind(rotation.now_ms)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE key_secrets SET valid_until = $1 \
                     WHERE key_id = $2 AND (valid_until IS NULL OR valid_until > $1)",
                )
                .bind(until)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("INSERT INTO key_secrets (hash, key_id, valid_until) VALUES ($1, $2, NULL)")
            .bind(rotation.new_hash.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE api_keys SET hash = $1, prefix = $2 WHERE id = $3")
            .bind(rotation.new_hash.as_str())
            .bind(&rotation.new_prefix)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        key.hash = rotation.new_hash.as_str().to_owned();
        key.prefix = rotation.new_prefix.clone();
        Ok(key)
    }

    async fn delete_key_once(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // The row lock waits for a lookup's touch or an ingest that is giving the key a history.
        let row: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT last_used_at FROM api_keys WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        match row {
            None => return Err(StoreError::KeyNotFound),
            Some((Some(_),)) => return Err(StoreError::KeyHasHistory),
            Some((None,)) => {}
        }
        sqlx::query("DELETE FROM key_secrets WHERE key_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn lookup_once(
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
        let row: Option<LookupRow> = sqlx::query_as(LOOKUP_SQL)
            .bind(hash.as_str())
            .bind(d0)
            .bind(d1)
            .bind(w0)
            .bind(w1)
            .bind(m0)
            .bind(m1)
            .bind(recent.map(|r| r.instance.as_str()))
            .bind(since)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        if r.secret_valid_until.is_some_and(|t| t <= now_ms) {
            return Ok(None);
        }
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

/// Runs `$body` (an expression producing a `StoreResult`) again after a deadlock or a
/// serialization failure, at most [`RETRIES`] times.
macro_rules! with_retries {
    ($body:expr) => {{
        let mut attempt = 0;
        loop {
            match $body {
                Err(e) if attempt < RETRIES && retryable(&e) => attempt += 1,
                other => break other,
            }
        }
    }};
}

#[async_trait]
impl Store for PostgresStore {
    async fn plans(&self) -> StoreResult<Vec<Plan>> {
        let rows: Vec<PlanRow> = sqlx::query_as(
            "SELECT name, max_keys, rate_limit_per_second, rate_limit_per_minute FROM plans \
             ORDER BY max_keys IS NULL, max_keys, name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Plan::from).collect())
    }

    async fn create_plan(&self, plan: Plan) -> StoreResult<Plan> {
        let result = sqlx::query(
            "INSERT INTO plans (name, max_keys, rate_limit_per_second, rate_limit_per_minute) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&plan.name)
        .bind(plan.max_keys)
        .bind(plan.rate_limit_per_second)
        .bind(plan.rate_limit_per_minute)
        .execute(&self.pool)
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
        let row: Option<WorkspaceRow> = sqlx::query_as(
            "UPDATE workspaces SET plan = $1 WHERE id = $2 \
             RETURNING id, name, plan, created_at",
        )
        .bind(plan.as_str())
        .bind(workspace_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Workspace::from)
            .ok_or(StoreError::WorkspaceNotFound)
    }

    async fn create_workspace(&self, ws: NewWorkspace) -> StoreResult<Workspace> {
        sqlx::query("INSERT INTO workspaces (id, name, plan, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&ws.id)
            .bind(ws.name.as_str())
            .bind(ws.plan.as_str())
            .bind(ws.created_at)
            .execute(&self.pool)
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
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Workspace::from).collect())
    }

    async fn workspace(&self, id: &str) -> StoreResult<Workspace> {
        let row: Option<WorkspaceRow> =
            sqlx::query_as("SELECT id, name, plan, created_at FROM workspaces WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(Workspace::from)
            .ok_or(StoreError::WorkspaceNotFound)
    }

    async fn create_key(&self, key: NewKey) -> StoreResult<ApiKey> {
        with_retries!(self.create_key_once(&key).await)?;
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
        // One snapshot, so a concurrent delete cannot make the 404 lie.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        if !workspace_exists(&mut tx, workspace_id).await? {
            return Err(StoreError::WorkspaceNotFound);
        }
        let rows: Vec<KeyRow> =
            sqlx::query_as(&select_keys("workspace_id = $2 ORDER BY created_at, id"))
                .bind(clock::utc_month(clock::now_ms()))
                .bind(workspace_id)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    async fn key(&self, id: &str) -> StoreResult<ApiKey> {
        let mut conn = self.pool.acquire().await?;
        fetch_key(&mut conn, id, false).await
    }

    async fn update_key(&self, id: &str, patch: KeyPatch) -> StoreResult<ApiKey> {
        with_retries!(self.update_key_once(id, patch.clone()).await)
    }

    async fn rotate_key(&self, id: &str, rotation: Rotation) -> StoreResult<ApiKey> {
        with_retries!(self.rotate_key_once(id, &rotation).await)
    }

    async fn delete_key(&self, id: &str) -> StoreResult<()> {
        with_retries!(self.delete_key_once(id).await)
    }

    async fn lookup_key(
        &self,
        hash: &SecretHash,
        now_ms: i64,
        recent: Option<&RecentQuery>,
    ) -> StoreResult<Option<KeyLookup>> {
        self.lookup_once(hash, now_ms, recent).await
    }

    /// Written before it returns (the lookup handler awaits it), so a later `delete_key` sees it
    /// from any control plane. Keys this process wrote within `resolution_ms` are skipped.
    async fn touch_key(&self, key_id: &str, now_ms: i64, resolution_ms: i64) -> StoreResult<()> {
        if self.recently_touched(key_id, now_ms, resolution_ms) {
            return Ok(());
        }
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 \
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $1 - $3)",
        )
        .bind(now_ms)
        .bind(key_id)
        .bind(resolution_ms)
        .execute(&self.pool)
        .await?;
        self.remember_touch(key_id, now_ms);
        Ok(())
    }

    async fn ingest_usage(&self, records: Vec<UsageRecord>) -> StoreResult<IngestOutcome> {
        with_retries!(self.ingest(&records).await)
    }

    async fn usage_report(&self, query: &UsageQuery) -> StoreResult<UsageReport> {
        self.report(query).await
    }

    async fn requests(&self, filter: &RequestFilter) -> StoreResult<RequestPage> {
        self.request_page(filter).await
    }

    async fn purge_records(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM usage_records WHERE id IN \
             (SELECT id FROM usage_records WHERE ts < $1 ORDER BY ts LIMIT $2)",
        )
        .bind(before_ms)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_rollups(&self, before_ms: i64, now_ms: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let mut deleted = 0;
        for (sql, cutoff) in [
            ("DELETE FROM usage_minutes WHERE minute < $1", before_ms),
            ("DELETE FROM usage_hours WHERE hour < $1", before_ms),
            ("DELETE FROM usage_days WHERE day < $1", before_ms),
            ("DELETE FROM usage_ws_minutes WHERE minute < $1", before_ms),
            ("DELETE FROM usage_ws_hours WHERE hour < $1", before_ms),
            ("DELETE FROM usage_ws_days WHERE day < $1", before_ms),
            (
                "DELETE FROM key_admitted_minutes WHERE minute < $1",
                now_ms - LONGEST_WINDOW_MS - DAY_MS,
            ),
            (
                "DELETE FROM key_admitted_hours WHERE hour < $1",
                now_ms - LONGEST_WINDOW_MS - DAY_MS,
            ),
            (
                "DELETE FROM key_instance_buckets WHERE bucket < $1",
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
        Ok(deleted)
    }

    async fn create_console_token(&self, token: NewConsoleToken) -> StoreResult<ConsoleToken> {
        let done = sqlx::query(
            "INSERT INTO console_tokens (id, workspace_id, name, created_at, hash) \
             SELECT $1, id, $3, $4, $5 FROM workspaces WHERE id = $2",
        )
        .bind(&token.id)
        .bind(&token.workspace_id)
        .bind(&token.name)
        .bind(token.created_at)
        .bind(&token.hash)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::WorkspaceNotFound);
        }
        Ok(ConsoleToken {
            id: token.id,
            workspace_id: token.workspace_id,
            name: token.name,
            created_at: token.created_at,
        })
    }

    async fn console_tokens(&self, workspace_id: &str) -> StoreResult<Vec<ConsoleToken>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        if !workspace_exists(&mut tx, workspace_id).await? {
            return Err(StoreError::WorkspaceNotFound);
        }
        let rows: Vec<ConsoleTokenRow> = sqlx::query_as(
            "SELECT id, workspace_id, name, created_at FROM console_tokens \
             WHERE workspace_id = $1 ORDER BY created_at, id",
        )
        .bind(workspace_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows.into_iter().map(ConsoleToken::from).collect())
    }

    async fn console_token(&self, id: &str) -> StoreResult<ConsoleToken> {
        let row: Option<ConsoleTokenRow> = sqlx::query_as(
            "SELECT id, workspace_id, name, created_at FROM console_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(ConsoleToken::from)
            .ok_or(StoreError::ConsoleTokenNotFound)
    }

    async fn delete_console_token(&self, id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM console_tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::ConsoleTokenNotFound);
        }
        Ok(())
    }

    async fn console_token_by_hash(&self, hash: &str) -> StoreResult<Option<ConsoleToken>> {
        let row: Option<ConsoleTokenRow> = sqlx::query_as(
            "SELECT id, workspace_id, name, created_at FROM console_tokens WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(ConsoleToken::from))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
