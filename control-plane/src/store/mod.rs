//! Storage behind one trait. Handlers see `Arc<dyn Store>` only, so a PostgreSQL backend is one
//! more implementation (with its own migrations folder) and no handler changes.
//!
//! The trait is shaped around what the API needs rather than around tables: usage ingest takes a
//! validated batch, analytics read rollups, the filter lookup reads per-key counts.

mod key_touches;
pub mod postgres;
mod postgres_ingest;
mod postgres_usage;
mod rows;
pub mod sqlite;
mod sqlite_checkpoint;
mod sqlite_ingest;
mod sqlite_lookup;
mod sqlite_usage;
pub mod usage;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::secret::SecretHash;
use crate::validate::{Alias, Category, Description, PlanName, WorkspaceName};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use usage::{
    ConsoleToken, EndpointCount, IngestOutcome, IngestRejection, MethodCount, NewConsoleToken,
    Recent, RecentQuery, RequestCursor, RequestFilter, RequestPage, RequestRecord,
    ResponseCodeCount, SeriesBucket, StatusTotals, UsageQuery, UsageRecord, UsageReport,
    UsageScope, UsageStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("workspace not found")]
    WorkspaceNotFound,
    #[error("API key not found")]
    KeyNotFound,
    #[error("plan '{plan}' allows at most {max_keys} {}", if *.max_keys == 1 { "key" } else { "keys" })]
    PlanKeyLimit { plan: String, max_keys: i64 },
    #[error("alias '{0}' is already used in this workspace")]
    AliasTaken(String),
    #[error("API key has request history; deactivate it instead")]
    KeyHasHistory,
    #[error("console token not found")]
    ConsoleTokenNotFound,
    #[error("plan '{0}' already exists")]
    PlanExists(String),
    #[error("storage backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub name: String,
    /// `None` = unlimited, here and in the rate limits.
    pub max_keys: Option<i64>,
    pub rate_limit_per_second: Option<i64>,
    pub rate_limit_per_minute: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub id: String,
    pub name: WorkspaceName,
    pub plan: PlanName,
    pub created_at: i64,
}

/// Caps per window; `None` = no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub total: Option<u64>,
    pub daily: Option<u64>,
    pub weekly: Option<u64>,
    pub monthly: Option<u64>,
}

/// Requests counted per window, in the same shape as [`Quotas`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub total: u64,
    pub daily: u64,
    pub weekly: u64,
    pub monthly: u64,
}

/// One endpoint a key may call (`docs/protocol.md`). Built by `validate::allowed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRule {
    pub method: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub workspace_id: String,
    pub alias: String,
    pub description: Option<String>,
    pub category: String,
    pub active: bool,
    pub expires_at: Option<i64>,
    pub quotas: Quotas,
    pub allowed: Vec<AllowRule>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// SHA-256 hex of the current secret.
    pub hash: String,
    /// First 8 characters of the current secret.
    pub prefix: String,
    /// Usage records of the current calendar month (UTC), admitted or not.
    pub calls_this_month: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Inactive,
    Expired,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Expired => "expired",
        }
    }
}

impl ApiKey {
    /// A deactivated key reads `inactive` even when it has also expired: reactivating it is the
    /// first thing someone would have to do.
    pub fn status(&self, now_ms: i64) -> KeyStatus {
        if !self.active {
            KeyStatus::Inactive
        } else if self.expires_at.is_some_and(|t| t <= now_ms) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub workspace_id: String,
    pub alias: Alias,
    pub description: Option<Description>,
    pub category: Category,
    pub expires_at: Option<i64>,
    pub quotas: Quotas,
    pub allowed: Vec<AllowRule>,
    pub created_at: i64,
    pub hash: SecretHash,
    pub prefix: String,
}

/// A partial update. Outer `None` = leave unchanged; for nullable fields `Some(None)` clears.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub alias: Option<Alias>,
    pub description: Option<Option<Description>>,
    pub category: Option<Category>,
    pub active: Option<bool>,
    pub expires_at: Option<Option<i64>>,
    pub quotas: QuotasPatch,
    pub allowed: Option<Vec<AllowRule>>,
}

/// JSON merge-patch semantics per window: `None` keeps, `Some(None)` removes the cap.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotasPatch {
    pub total: Option<Option<u64>>,
    pub daily: Option<Option<u64>>,
    pub weekly: Option<Option<u64>>,
    pub monthly: Option<Option<u64>>,
}

impl QuotasPatch {
    pub fn clear_all() -> Self {
        Self {
            total: Some(None),
            daily: Some(None),
            weekly: Some(None),
            monthly: Some(None),
        }
    }
}

impl KeyPatch {
    /// Applies the patch to `key`; shared by every backend so they agree on the semantics.
    pub fn apply(self, key: &mut ApiKey) {
        if let Some(alias) = self.alias {
            key.alias = alias.into_inner();
        }
        if let Some(description) = self.description {
            key.description = description.map(Description::into_inner);
        }
        if let Some(category) = self.category {
            key.category = category.into_inner();
        }
        if let Some(active) = self.active {
            key.active = active;
        }
        if let Some(expires_at) = self.expires_at {
            key.expires_at = expires_at;
        }
        let q = self.quotas;
        for (slot, change) in [
            (&mut key.quotas.total, q.total),
            (&mut key.quotas.daily, q.daily),
            (&mut key.quotas.weekly, q.weekly),
            (&mut key.quotas.monthly, q.monthly),
        ] {
            if let Some(value) = change {
                *slot = value;
            }
        }
        if let Some(allowed) = self.allowed {
            key.allowed = allowed;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rotation {
    pub new_hash: SecretHash,
    pub new_prefix: String,
    pub now_ms: i64,
    /// `None`: every previous secret stops working now. `Some(t)`: previous secrets keep working
    /// until `t` (an earlier deadline from a previous rotation is kept).
    pub old_valid_until: Option<i64>,
}

/// What the filter needs to decide on a request, from one indexed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLookup {
    pub key_id: String,
    pub workspace_id: String,
    pub active: bool,
    pub expires_at: Option<i64>,
    /// Set only for a secret replaced by a rotation with grace.
    pub secret_valid_until: Option<i64>,
    pub allowed: Vec<AllowRule>,
    pub quotas: Quotas,
    /// Counted only for keys with at least one quota (zeros otherwise: the filter ignores it).
    pub usage: Usage,
    /// Present when the lookup asked for it ([`RecentQuery`]).
    pub recent: Option<Recent>,
    pub plan: Plan,
    pub last_used_at: Option<i64>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn plans(&self) -> StoreResult<Vec<Plan>>;
    /// Fails with `PlanExists` when the name is taken.
    async fn create_plan(&self, plan: Plan) -> StoreResult<Plan>;
    /// Moves a workspace to another (existing) plan; its keys' lookups see the new limits.
    async fn set_workspace_plan(
        &self,
        workspace_id: &str,
        plan: &PlanName,
    ) -> StoreResult<Workspace>;

    async fn create_workspace(&self, workspace: NewWorkspace) -> StoreResult<Workspace>;
    async fn workspaces(&self) -> StoreResult<Vec<Workspace>>;
    async fn workspace(&self, id: &str) -> StoreResult<Workspace>;

    /// Fails with `PlanKeyLimit` or `AliasTaken` without writing anything.
    async fn create_key(&self, key: NewKey) -> StoreResult<ApiKey>;
    async fn keys(&self, workspace_id: &str) -> StoreResult<Vec<ApiKey>>;
    async fn key(&self, id: &str) -> StoreResult<ApiKey>;
    async fn update_key(&self, id: &str, patch: KeyPatch) -> StoreResult<ApiKey>;
    async fn rotate_key(&self, id: &str, rotation: Rotation) -> StoreResult<ApiKey>;
    /// Only keys never seen at the edge can be deleted (`KeyHasHistory` otherwise).
    async fn delete_key(&self, id: &str) -> StoreResult<()>;

    /// The key a secret hash authenticates at `now_ms`; `None` for an unknown hash or an old
    /// secret whose grace has ended. `usage` and `recent` come from one consistent snapshot.
    /// Read-only: must stay cheap (backends may cache it until the next write).
    async fn lookup_key(
        &self,
        hash: &SecretHash,
        now_ms: i64,
        recent: Option<&RecentQuery>,
    ) -> StoreResult<Option<KeyLookup>>;
    /// Sets `last_used_at = now_ms` unless it is already within `resolution_ms` of it. May be
    /// written after the call returns, but always before a later `delete_key` decides.
    async fn touch_key(&self, key_id: &str, now_ms: i64, resolution_ms: i64) -> StoreResult<()>;

    /// Stores a batch in one transaction (possibly shared with batches sent concurrently): raw
    /// records (new `request_id`s only), rollups, quota
    /// counts, `calls_this_month` and `last_used_at`. Records whose key does not exist or belongs
    /// to another workspace are rejected (their position in `records`); the others are stored.
    async fn ingest_usage(&self, records: Vec<UsageRecord>) -> StoreResult<IngestOutcome>;
    /// Analytics from rollups over `[query.from_ms, query.to_ms)` (see [`UsageQuery`]).
    /// `WorkspaceNotFound`/`KeyNotFound` when the scope does not exist.
    async fn usage_report(&self, query: &UsageQuery) -> StoreResult<UsageReport>;
    /// One page of the request log, newest first.
    async fn requests(&self, filter: &RequestFilter) -> StoreResult<RequestPage>;
    /// Deletes up to `batch` raw records older than `before_ms`; returns how many it deleted.
    async fn purge_records(&self, before_ms: i64, batch: u32) -> StoreResult<u64>;
    /// Deletes rollups (and per-key quota minutes no window can reach) older than `before_ms`.
    async fn purge_rollups(&self, before_ms: i64, now_ms: i64) -> StoreResult<u64>;

    async fn create_console_token(&self, token: NewConsoleToken) -> StoreResult<ConsoleToken>;
    /// `WorkspaceNotFound` when the workspace does not exist.
    async fn console_tokens(&self, workspace_id: &str) -> StoreResult<Vec<ConsoleToken>>;
    async fn console_token(&self, id: &str) -> StoreResult<ConsoleToken>;
    async fn delete_console_token(&self, id: &str) -> StoreResult<()>;
    /// The console token whose SHA-256 hex is `hash`, if any.
    async fn console_token_by_hash(&self, hash: &str) -> StoreResult<Option<ConsoleToken>>;

    /// Flushes and closes connections; called once on shutdown.
    async fn close(&self);
}
