//! Storage behind one trait. Handlers see `Arc<dyn Store>` only, so a PostgreSQL backend is one
//! more implementation (with its own migrations folder) and no handler changes.
//!
//! The trait is shaped around what the API needs rather than around tables: usage ingest takes a
//! validated batch, analytics read rollups, the filter lookup reads per-key charges, budget
//! leases reserve and charge units of a key's budgets.

mod group_commit;
mod observed;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

use async_trait::async_trait;

pub use observed::ObservedStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::domain::{
    ApiKey, ConsoleToken, ExternalId, IngestOutcome, KeyLookup, KeyPatch, LeaseAnswer,
    LeaseRequest, NewConsoleToken, NewKey, NewWorkspace, Plan, PlanName, RequestFilter,
    RequestPage, Rotation, UsageQuery, UsageRecord, UsageReport, Workspace,
};
use crate::secret::SecretHash;

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
    /// The database has no room to write: a full disk or a file size limit (SQLite's
    /// SQLITE_FULL, or an I/O error with ENOSPC or EFBIG), or PostgreSQL short of a resource
    /// (SQLSTATE class 53: disk full, out of memory, too many connections). Unlike `Backend`,
    /// the same call may succeed later as it is, once there is room.
    #[error("storage backend is full: {0}")]
    Full(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type StoreResult<T> = Result<T, StoreError>;

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
    /// The keys whose `external_id` is `external_id`, oldest first: of one workspace
    /// (`WorkspaceNotFound` when it does not exist) or, with `None`, of every workspace.
    async fn keys_with_external_id(
        &self,
        workspace_id: Option<&str>,
        external_id: &ExternalId,
    ) -> StoreResult<Vec<ApiKey>>;
    async fn key(&self, id: &str) -> StoreResult<ApiKey>;
    async fn update_key(&self, id: &str, patch: KeyPatch) -> StoreResult<ApiKey>;
    async fn rotate_key(&self, id: &str, rotation: Rotation) -> StoreResult<ApiKey>;
    /// Only keys never seen at the edge can be deleted (`KeyHasHistory` otherwise).
    async fn delete_key(&self, id: &str) -> StoreResult<()>;

    /// The key a secret hash authenticates at `now_ms`; `None` for an unknown hash or an old
    /// secret whose grace has ended. Its `usage` and `credits.used` (the charges) come from one
    /// consistent snapshot. Read-only: must stay cheap (backends may cache it until the next
    /// write).
    async fn lookup_key(&self, hash: &SecretHash, now_ms: i64) -> StoreResult<Option<KeyLookup>>;
    /// Sets `last_used_at = now_ms` unless it is already within `resolution_ms` of it. May be
    /// written after the call returns, but always before a later `delete_key` decides.
    async fn touch_key(&self, key_id: &str, now_ms: i64, resolution_ms: i64) -> StoreResult<()>;

    /// Budget leases of one Envoy at `now_ms` (`docs/protocol.md`): applies `request.settle`
    /// (charging what each lease spent; unknown leases are ignored), then answers each of
    /// `request.grant` in order, reserving units of what is left of the key's budget for at
    /// most `lease_ttl_ms`. Atomic per key, across callers and control planes sharing the store.
    async fn lease(
        &self,
        request: &LeaseRequest,
        now_ms: i64,
        lease_ttl_ms: i64,
    ) -> StoreResult<LeaseAnswer>;
    /// Charges in full and deletes the leases more than `LEASE_GRACE_MS` past their
    /// `expires_at` at `now_ms`; how many.
    async fn sweep_leases(&self, now_ms: i64) -> StoreResult<u64>;

    /// Stores a batch in one transaction (possibly shared with batches sent concurrently): raw
    /// records (new `request_id`s only), rollups, `calls_this_month` (and the month's credits)
    /// and `last_used_at`. Usage records are analytics: they charge no budget. Records whose key
    /// does not exist or belongs to another workspace are rejected (their position in
    /// `records`); the others are stored.
    async fn ingest_usage(&self, records: Vec<UsageRecord>) -> StoreResult<IngestOutcome>;
    /// Analytics from rollups over `[query.from_ms, query.to_ms)` (see [`UsageQuery`]).
    /// `WorkspaceNotFound`/`KeyNotFound` when the scope does not exist.
    async fn usage_report(&self, query: &UsageQuery) -> StoreResult<UsageReport>;
    /// One page of the request log, newest first.
    async fn requests(&self, filter: &RequestFilter) -> StoreResult<RequestPage>;
    /// Deletes up to `batch` raw records older than `before_ms`; returns how many it deleted.
    async fn purge_records(&self, before_ms: i64, batch: u32) -> StoreResult<u64>;
    /// Deletes rollups (and per-key charges no window can reach) older than `before_ms`.
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
