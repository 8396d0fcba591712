//! SQLite backend. One single-connection pool serialises every write transaction (SQLite allows
//! one writer anyway, and queueing in the pool avoids `SQLITE_BUSY` on lock upgrades); a pool of
//! readers serves lookups and listings concurrently thanks to WAL.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqliteConnection, SqlitePool};

use super::{
    AllowRule, ApiKey, KeyLookup, KeyPatch, NewKey, NewWorkspace, Plan, Quotas, Rotation, Store,
    StoreError, StoreResult, Usage, Workspace,
};
use crate::secret::SecretHash;

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
            .foreign_keys(true);
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
        Ok(Self { writer, readers })
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

#[derive(FromRow)]
struct PlanRow {
    name: String,
    max_keys: Option<i64>,
    rate_limit_per_second: Option<i64>,
    rate_limit_per_minute: Option<i64>,
}

impl From<PlanRow> for Plan {
    fn from(r: PlanRow) -> Self {
        Plan {
            name: r.name,
            max_keys: r.max_keys,
            rate_limit_per_second: r.rate_limit_per_second,
            rate_limit_per_minute: r.rate_limit_per_minute,
        }
    }
}

#[derive(FromRow)]
struct WorkspaceRow {
    id: String,
    name: String,
    plan: String,
    created_at: i64,
}

impl From<WorkspaceRow> for Workspace {
    fn from(r: WorkspaceRow) -> Self {
        Workspace {
            id: r.id,
            name: r.name,
            plan: r.plan,
            created_at: r.created_at,
        }
    }
}

#[derive(FromRow)]
struct KeyRow {
    id: String,
    workspace_id: String,
    alias: String,
    description: Option<String>,
    category: String,
    active: bool,
    expires_at: Option<i64>,
    quota_total: Option<i64>,
    quota_daily: Option<i64>,
    quota_weekly: Option<i64>,
    quota_monthly: Option<i64>,
    allowed: String,
    created_at: i64,
    last_used_at: Option<i64>,
    hash: String,
    prefix: String,
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(r: KeyRow) -> StoreResult<Self> {
        Ok(ApiKey {
            quotas: quotas_from_columns(
                r.quota_total,
                r.quota_daily,
                r.quota_weekly,
                r.quota_monthly,
            ),
            allowed: allowed_from_column(&r.allowed)?,
            id: r.id,
            workspace_id: r.workspace_id,
            alias: r.alias,
            description: r.description,
            category: r.category,
            active: r.active,
            expires_at: r.expires_at,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            hash: r.hash,
            prefix: r.prefix,
        })
    }
}

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
    plan_name: String,
    max_keys: Option<i64>,
    rate_limit_per_second: Option<i64>,
    rate_limit_per_minute: Option<i64>,
}

fn quotas_from_columns(
    total: Option<i64>,
    daily: Option<i64>,
    weekly: Option<i64>,
    monthly: Option<i64>,
) -> Quotas {
    // Validation only lets positive values in, so the conversion cannot fail for stored data.
    let q = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
    Quotas {
        total: q(total),
        daily: q(daily),
        weekly: q(weekly),
        monthly: q(monthly),
    }
}

fn quota_column(v: Option<u64>) -> Option<i64> {
    v.and_then(|v| i64::try_from(v).ok())
}

fn allowed_from_column(json: &str) -> StoreResult<Vec<AllowRule>> {
    serde_json::from_str(json).map_err(|e| StoreError::Backend(Box::new(e)))
}

fn allowed_column(rules: &[AllowRule]) -> StoreResult<String> {
    serde_json::to_string(rules).map_err(|e| StoreError::Backend(Box::new(e)))
}

async fn fetch_key(conn: &mut SqliteConnection, id: &str) -> StoreResult<ApiKey> {
    let row: Option<KeyRow> =
        sqlx::query_as(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.ok_or(StoreError::KeyNotFound)?.try_into()
}

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
        })
    }

    async fn keys(&self, workspace_id: &str) -> StoreResult<Vec<ApiKey>> {
        // Both reads on one connection so a concurrent delete cannot make the 404 lie.
        let mut conn = self.readers.acquire().await?;
        let exists: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM workspaces WHERE id = ?")
            .bind(workspace_id)
            .fetch_optional(&mut *conn)
            .await?;
        if exists.is_none() {
            return Err(StoreError::WorkspaceNotFound);
        }
        let rows: Vec<KeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE workspace_id = ? ORDER BY created_at, id"
        ))
        .bind(workspace_id)
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    async fn key(&self, id: &str) -> StoreResult<ApiKey> {
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
        key.hash = rotation.new_hash.as_str().to_owned();
        key.prefix = rotation.new_prefix;
        Ok(key)
    }

    async fn delete_key(&self, id: &str) -> StoreResult<()> {
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
        Ok(())
    }

    async fn lookup_key(&self, hash: &SecretHash, now_ms: i64) -> StoreResult<Option<KeyLookup>> {
        let row: Option<LookupRow> = sqlx::query_as(
            "SELECT k.id AS key_id, k.workspace_id, k.active, k.expires_at, \
                    s.valid_until AS secret_valid_until, k.allowed, \
                    k.quota_total, k.quota_daily, k.quota_weekly, k.quota_monthly, \
                    k.last_used_at, p.name AS plan_name, p.max_keys, \
                    p.rate_limit_per_second, p.rate_limit_per_minute \
             FROM key_secrets s \
             JOIN api_keys k ON k.id = s.key_id \
             JOIN workspaces w ON w.id = k.workspace_id \
             JOIN plans p ON p.name = w.plan \
             WHERE s.hash = ?",
        )
        .bind(hash.as_str())
        .fetch_optional(&self.readers)
        .await?;
        let Some(r) = row else { return Ok(None) };
        if r.secret_valid_until.is_some_and(|until| until <= now_ms) {
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
            usage: Usage::default(),
            plan: Plan {
                name: r.plan_name,
                max_keys: r.max_keys,
                rate_limit_per_second: r.rate_limit_per_second,
                rate_limit_per_minute: r.rate_limit_per_minute,
            },
            last_used_at: r.last_used_at,
        }))
    }

    async fn touch_key(&self, key_id: &str, now_ms: i64, resolution_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = ?1 \
             WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at <= ?1 - ?3)",
        )
        .bind(now_ms)
        .bind(key_id)
        .bind(resolution_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}
