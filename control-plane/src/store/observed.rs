//! A [`Store`] that counts the calls its backend failed (`tollgate_store_errors_total`, by
//! operation), around whichever backend the server opened. Answers such as "key not found" are
//! not failures and are not counted.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Store, StoreError, StoreResult};
use crate::domain::{
    ApiKey, ConsoleToken, ExternalId, IngestOutcome, KeyLookup, KeyPatch, LeaseAnswer,
    LeaseRequest, NewConsoleToken, NewKey, NewWorkspace, Plan, PlanName, RequestFilter,
    RequestPage, Rotation, UsageQuery, UsageRecord, UsageReport, Workspace,
};
use crate::metrics::Metrics;
use crate::secret::SecretHash;

pub struct ObservedStore {
    inner: Arc<dyn Store>,
    metrics: Metrics,
}

impl ObservedStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Metrics) -> ObservedStore {
        ObservedStore { inner, metrics }
    }

    fn seen<T>(&self, operation: &'static str, result: StoreResult<T>) -> StoreResult<T> {
        if let Err(StoreError::Backend(_) | StoreError::Full(_)) = &result {
            self.metrics.store_error(operation);
        }
        result
    }
}

#[async_trait]
impl Store for ObservedStore {
    async fn plans(&self) -> StoreResult<Vec<Plan>> {
        self.seen("plans", self.inner.plans().await)
    }
    async fn create_plan(&self, plan: Plan) -> StoreResult<Plan> {
        self.seen("create_plan", self.inner.create_plan(plan).await)
    }
    async fn set_workspace_plan(
        &self,
        workspace_id: &str,
        plan: &PlanName,
    ) -> StoreResult<Workspace> {
        let result = self.inner.set_workspace_plan(workspace_id, plan).await;
        self.seen("set_workspace_plan", result)
    }
    async fn create_workspace(&self, workspace: NewWorkspace) -> StoreResult<Workspace> {
        self.seen(
            "create_workspace",
            self.inner.create_workspace(workspace).await,
        )
    }
    async fn workspaces(&self) -> StoreResult<Vec<Workspace>> {
        self.seen("workspaces", self.inner.workspaces().await)
    }
    async fn workspace(&self, id: &str) -> StoreResult<Workspace> {
        self.seen("workspace", self.inner.workspace(id).await)
    }
    async fn create_key(&self, key: NewKey) -> StoreResult<ApiKey> {
        self.seen("create_key", self.inner.create_key(key).await)
    }
    async fn keys(&self, workspace_id: &str) -> StoreResult<Vec<ApiKey>> {
        self.seen("keys", self.inner.keys(workspace_id).await)
    }
    async fn keys_with_external_id(
        &self,
        workspace_id: Option<&str>,
        external_id: &ExternalId,
    ) -> StoreResult<Vec<ApiKey>> {
        let result = self
            .inner
            .keys_with_external_id(workspace_id, external_id)
            .await;
        self.seen("keys_with_external_id", result)
    }
    async fn key(&self, id: &str) -> StoreResult<ApiKey> {
        self.seen("key", self.inner.key(id).await)
    }
    async fn update_key(&self, id: &str, patch: KeyPatch) -> StoreResult<ApiKey> {
        self.seen("update_key", self.inner.update_key(id, patch).await)
    }
    async fn rotate_key(&self, id: &str, rotation: Rotation) -> StoreResult<ApiKey> {
        self.seen("rotate_key", self.inner.rotate_key(id, rotation).await)
    }
    async fn delete_key(&self, id: &str) -> StoreResult<()> {
        self.seen("delete_key", self.inner.delete_key(id).await)
    }
    async fn lookup_key(&self, hash: &SecretHash, now_ms: i64) -> StoreResult<Option<KeyLookup>> {
        self.seen("lookup_key", self.inner.lookup_key(hash, now_ms).await)
    }
    async fn touch_key(&self, key_id: &str, now_ms: i64, resolution_ms: i64) -> StoreResult<()> {
        let result = self.inner.touch_key(key_id, now_ms, resolution_ms).await;
        self.seen("touch_key", result)
    }
    async fn lease(
        &self,
        request: &LeaseRequest,
        now_ms: i64,
        lease_ttl_ms: i64,
    ) -> StoreResult<LeaseAnswer> {
        let result = self.inner.lease(request, now_ms, lease_ttl_ms).await;
        self.seen("lease", result)
    }
    async fn sweep_leases(&self, now_ms: i64) -> StoreResult<u64> {
        self.seen("sweep_leases", self.inner.sweep_leases(now_ms).await)
    }
    async fn ingest_usage(&self, records: Vec<UsageRecord>) -> StoreResult<IngestOutcome> {
        self.seen("ingest_usage", self.inner.ingest_usage(records).await)
    }
    async fn usage_report(&self, query: &UsageQuery) -> StoreResult<UsageReport> {
        self.seen("usage_report", self.inner.usage_report(query).await)
    }
    async fn requests(&self, filter: &RequestFilter) -> StoreResult<RequestPage> {
        self.seen("requests", self.inner.requests(filter).await)
    }
    async fn purge_records(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        self.seen(
            "purge_records",
            self.inner.purge_records(before_ms, batch).await,
        )
    }
    async fn purge_rollups(&self, before_ms: i64, now_ms: i64) -> StoreResult<u64> {
        self.seen(
            "purge_rollups",
            self.inner.purge_rollups(before_ms, now_ms).await,
        )
    }
    async fn create_console_token(&self, token: NewConsoleToken) -> StoreResult<ConsoleToken> {
        let result = self.inner.create_console_token(token).await;
        self.seen("create_console_token", result)
    }
    async fn console_tokens(&self, workspace_id: &str) -> StoreResult<Vec<ConsoleToken>> {
        self.seen(
            "console_tokens",
            self.inner.console_tokens(workspace_id).await,
        )
    }
    async fn console_token(&self, id: &str) -> StoreResult<ConsoleToken> {
        self.seen("console_token", self.inner.console_token(id).await)
    }
    async fn delete_console_token(&self, id: &str) -> StoreResult<()> {
        self.seen(
            "delete_console_token",
            self.inner.delete_console_token(id).await,
        )
    }
    async fn console_token_by_hash(&self, hash: &str) -> StoreResult<Option<ConsoleToken>> {
        let result = self.inner.console_token_by_hash(hash).await;
        self.seen("console_token_by_hash", result)
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}
