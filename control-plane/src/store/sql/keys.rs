//! API keys: create (within the plan's key limit, alias unique in the workspace), list, read,
//! patch, rotate (with a grace period for the old secret) and delete (only a key never used).

use crate::clock;
use crate::domain::credits::month_bounds;
use crate::domain::lease::LEASE_GRACE_MS;
use crate::domain::{floor_to, ApiKey, ExternalId, KeyPatch, Leased, NewKey, Rotation, DAY_MS};
use crate::store::rows::{
    allowed_column, allowed_from_column, count, credits_from_row, meta_column, meta_from_column,
    period_column, quota_column, quotas_from_row, rate_limits_from_row,
};
use crate::store::sql::catalog::require_workspace;
use crate::store::sql::{
    args, in_read, in_write, unique_violation, Database, Row, Sql, Unique, Value,
};
use crate::store::{StoreError, StoreResult};

const KEY_COLUMNS: &str = "id, workspace_id, alias, description, category, active, expires_at, \
     quota_total, quota_daily, quota_weekly, quota_monthly, allowed, created_at, last_used_at, \
     hash, prefix, rate_limit_per_second, rate_limit_per_minute, rate_limit_per_hour, \
     credits_limit, credits_period, external_id, meta";

/// `KEY_COLUMNS` plus `calls_this_month`, `credits_used` (charged to the budget's period;
/// without a budget, the admitted records' credits of the calendar month) and what its live
/// leases hold (`leased_calls`, `leased_credits`, `leased_holders`); binds [`select_args`] as
/// `$1`-`$4`, so `condition`'s own start at `$5`.
fn select_keys(condition: &str) -> String {
    format!(
        "SELECT {KEY_COLUMNS}, coalesce((SELECT CAST(sum(calls) AS BIGINT) \
           FROM key_month_calls c WHERE c.key_id = api_keys.id AND c.month = $1), 0) \
           AS calls_this_month, \
         CASE WHEN credits_period = 'total' THEN coalesce((SELECT CAST(sum(credits) AS BIGINT) \
           FROM key_admitted_totals t WHERE t.key_id = api_keys.id), 0) \
         WHEN credits_period = 'day' THEN coalesce((SELECT CAST(sum(credits) AS BIGINT) \
           FROM key_credit_days d WHERE d.key_id = api_keys.id AND d.day = $2), 0) \
         WHEN credits_period = 'month' THEN coalesce((SELECT CAST(sum(credits) AS BIGINT) \
           FROM key_credit_days d WHERE d.key_id = api_keys.id AND d.day >= $3), 0) \
         ELSE coalesce((SELECT CAST(sum(credits) AS BIGINT) FROM key_month_calls c \
           WHERE c.key_id = api_keys.id AND c.month = $1), 0) END AS credits_used, \
         coalesce((SELECT CAST(sum(units) AS BIGINT) FROM key_leases l \
           WHERE l.key_id = api_keys.id AND l.meter = 'calls' AND l.expires_at >= $4), 0) \
           AS leased_calls, \
         coalesce((SELECT CAST(sum(units) AS BIGINT) FROM key_leases l \
           WHERE l.key_id = api_keys.id AND l.meter = 'credits' AND l.expires_at >= $4), 0) \
           AS leased_credits, \
         (SELECT CAST(count(DISTINCT instance) AS BIGINT) FROM key_leases l \
           WHERE l.key_id = api_keys.id AND l.expires_at >= $4) AS leased_holders \
         FROM api_keys WHERE {condition}"
    )
}

/// [`select_keys`]' own parameters at `now_ms`: the month (`YYYYMM`), today's start and the
/// month's start (UTC), and the oldest `expires_at` of a live lease (one not yet swept).
fn select_args(now_ms: i64) -> Vec<Value> {
    args![
        clock::utc_month(now_ms),
        floor_to(now_ms, DAY_MS),
        month_bounds(now_ms).0,
        now_ms - LEASE_GRACE_MS
    ]
}

fn key_from_row(r: &Row) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        quotas: quotas_from_row(r)?,
        allowed: allowed_from_column(&r.get::<String>("allowed")?)?,
        id: r.get("id")?,
        workspace_id: r.get("workspace_id")?,
        alias: r.get("alias")?,
        description: r.get("description")?,
        category: r.get("category")?,
        active: r.get("active")?,
        expires_at: r.get("expires_at")?,
        created_at: r.get("created_at")?,
        last_used_at: r.get("last_used_at")?,
        hash: r.get("hash")?,
        prefix: r.get("prefix")?,
        calls_this_month: count(r.get("calls_this_month")?),
        rate_limits: rate_limits_from_row(r)?,
        credits: credits_from_row(r)?,
        credits_used: count(r.get("credits_used")?),
        external_id: r.get("external_id")?,
        meta: meta_from_column(&r.get::<String>("meta")?)?,
        leased: Leased {
            calls: count(r.get("leased_calls")?),
            credits: count(r.get("leased_credits")?),
            holders: count(r.get("leased_holders")?),
        },
    })
}

/// Key `id`; in a write transaction its row stays locked until the end (so a concurrent patch
/// applies to this one's result, not to the same old row).
async fn fetch_key(tx: &mut dyn Sql, id: &str, lock: bool) -> StoreResult<ApiKey> {
    let lock = if lock { tx.for_update() } else { "" };
    let sql = format!("{}{lock}", select_keys("id = $5"));
    let mut values = select_args(clock::now_ms());
    values.extend(args![id]);
    let row = tx.row(&sql, values).await?;
    key_from_row(&row.ok_or(StoreError::KeyNotFound)?)
}

async fn alias_taken(
    tx: &mut dyn Sql,
    workspace_id: &str,
    alias: &str,
    except_key: Option<&str>,
) -> StoreResult<bool> {
    let sql = "SELECT id FROM api_keys WHERE workspace_id = $1 AND alias = $2";
    let found = tx.row(sql, args![workspace_id, alias]).await?;
    Ok(match found {
        Some(row) => Some(row.get::<String>("id")?.as_str()) != except_key,
        None => false,
    })
}

/// A unique violation of the alias constraint: another writer got past the explicit check
/// (e.g. another control plane on the same database).
fn alias_conflict(e: StoreError, alias: &str) -> StoreError {
    match unique_violation(&e) {
        Some(Unique::KeyAlias) => StoreError::AliasTaken(alias.to_owned()),
        _ => e,
    }
}

pub(crate) async fn create<D: Database>(db: &D, key: NewKey) -> StoreResult<ApiKey> {
    in_write!(db, |tx| insert(tx, &key).await)?;
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
        rate_limits: key.rate_limits,
        credits: key.credits,
        credits_used: 0,
        external_id: key.external_id.map(ExternalId::into_inner),
        meta: key.meta,
        leased: Leased::default(),
    })
}

async fn insert(tx: &mut dyn Sql, key: &NewKey) -> StoreResult<()> {
    // The workspace row stays locked, which orders concurrent key creations in this workspace:
    // the count and the alias check below still hold when the insert commits.
    let sql = format!(
        "SELECT plan FROM workspaces WHERE id = $1{}",
        tx.for_update()
    );
    let workspace = tx.row(&sql, args![&key.workspace_id]).await?;
    let plan: String = workspace
        .ok_or(StoreError::WorkspaceNotFound)?
        .get("plan")?;
    let limit = tx
        .row("SELECT max_keys FROM plans WHERE name = $1", args![&plan])
        .await?;
    let max_keys: Option<i64> = match limit {
        Some(row) => row.get("max_keys")?,
        None => None,
    };
    if let Some(max_keys) = max_keys {
        // Every existing key takes a slot, deactivated ones included (they can be turned back
        // on at any time); deleting a never-used key frees its slot.
        let sql = "SELECT count(*) FROM api_keys WHERE workspace_id = $1";
        let count: i64 = match tx.row(sql, args![&key.workspace_id]).await? {
            Some(row) => row.first()?,
            None => 0,
        };
        if count >= max_keys {
            return Err(StoreError::PlanKeyLimit { plan, max_keys });
        }
    }
    if alias_taken(tx, &key.workspace_id, key.alias.as_str(), None).await? {
        return Err(StoreError::AliasTaken(key.alias.as_str().to_owned()));
    }
    let sql = format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, NULL, $14, $15, \
         $16, $17, $18, $19, $20, $21, $22)"
    );
    let values = args![
        &key.id,
        &key.workspace_id,
        key.alias.as_str(),
        key.description.as_ref().map(|d| d.as_str()),
        key.category.as_str(),
        true,
        key.expires_at,
        quota_column(key.quotas.total),
        quota_column(key.quotas.daily),
        quota_column(key.quotas.weekly),
        quota_column(key.quotas.monthly),
        allowed_column(&key.allowed)?,
        key.created_at,
        key.hash.as_str(),
        &key.prefix,
        quota_column(key.rate_limits.per_second),
        quota_column(key.rate_limits.per_minute),
        quota_column(key.rate_limits.per_hour),
        quota_column(key.credits.map(|c| c.limit)),
        period_column(key.credits),
        key.external_id.as_ref().map(|e| e.as_str()),
        meta_column(&key.meta)?,
    ];
    tx.execute(&sql, values)
        .await
        .map_err(|e| alias_conflict(e, key.alias.as_str()))?;
    let sql = "INSERT INTO key_secrets (hash, key_id, valid_until) VALUES ($1, $2, NULL)";
    tx.execute(sql, args![key.hash.as_str(), &key.id]).await?;
    Ok(())
}

/// The workspace's keys, oldest first (`WorkspaceNotFound` read in the same snapshot, so a
/// concurrent change cannot make the 404 lie).
pub(crate) async fn list<D: Database>(db: &D, workspace_id: &str) -> StoreResult<Vec<ApiKey>> {
    in_read!(db, |tx| {
        require_workspace(tx, workspace_id).await?;
        let sql = select_keys("workspace_id = $5 ORDER BY created_at, id");
        let mut values = select_args(clock::now_ms());
        values.extend(args![workspace_id]);
        let rows = tx.rows(&sql, values).await?;
        rows.iter().map(key_from_row).collect()
    })
}

/// The keys whose `external_id` is `external_id`, oldest first: of one workspace
/// (`WorkspaceNotFound` as [`list`]), or of every workspace.
pub(crate) async fn with_external_id<D: Database>(
    db: &D,
    workspace_id: Option<&str>,
    external_id: &ExternalId,
) -> StoreResult<Vec<ApiKey>> {
    in_read!(db, |tx| {
        let mut values = select_args(clock::now_ms());
        values.extend(args![external_id.as_str()]);
        let sql = match workspace_id {
            Some(ws) => {
                require_workspace(tx, ws).await?;
                values.extend(args![ws]);
                select_keys("workspace_id = $6 AND external_id = $5 ORDER BY created_at, id")
            }
            None => select_keys("external_id = $5 ORDER BY created_at, id"),
        };
        let rows = tx.rows(&sql, values).await?;
        rows.iter().map(key_from_row).collect()
    })
}

pub(crate) async fn get<D: Database>(db: &D, id: &str) -> StoreResult<ApiKey> {
    in_read!(db, |tx| fetch_key(tx, id, false).await)
}

pub(crate) async fn update<D: Database>(db: &D, id: &str, patch: KeyPatch) -> StoreResult<ApiKey> {
    in_write!(db, |tx| {
        let mut key = fetch_key(tx, id, true).await?;
        let old_alias = key.alias.clone();
        patch.clone().apply(&mut key);
        if key.alias != old_alias
            && alias_taken(tx, &key.workspace_id, &key.alias, Some(id)).await?
        {
            return Err(StoreError::AliasTaken(key.alias));
        }
        let sql = "UPDATE api_keys SET alias = $1, description = $2, category = $3, \
                 active = $4, expires_at = $5, quota_total = $6, quota_daily = $7, \
                 quota_weekly = $8, quota_monthly = $9, allowed = $10, \
                 rate_limit_per_second = $12, rate_limit_per_minute = $13, \
                 rate_limit_per_hour = $14, credits_limit = $15, credits_period = $16, \
                 external_id = $17, meta = $18 WHERE id = $11";
        let values = args![
            &key.alias,
            &key.description,
            &key.category,
            key.active,
            key.expires_at,
            quota_column(key.quotas.total),
            quota_column(key.quotas.daily),
            quota_column(key.quotas.weekly),
            quota_column(key.quotas.monthly),
            allowed_column(&key.allowed)?,
            id,
            quota_column(key.rate_limits.per_second),
            quota_column(key.rate_limits.per_minute),
            quota_column(key.rate_limits.per_hour),
            quota_column(key.credits.map(|c| c.limit)),
            period_column(key.credits),
            &key.external_id,
            meta_column(&key.meta)?,
        ];
        tx.execute(sql, values)
            .await
            .map_err(|e| alias_conflict(e, &key.alias))?;
        // Read again: `credits_used` depends on the (maybe changed) budget period.
        fetch_key(tx, id, false).await
    })
}

/// A new secret for key `id`. The old secrets stop now, or stay valid until
/// `rotation.old_valid_until` (those that already ended are removed).
pub(crate) async fn rotate<D: Database>(
    db: &D,
    id: &str,
    rotation: &Rotation,
) -> StoreResult<ApiKey> {
    in_write!(db, |tx| {
        let mut key = fetch_key(tx, id, true).await?;
        match rotation.old_valid_until {
            None => {
                tx.execute("DELETE FROM key_secrets WHERE key_id = $1", args![id])
                    .await?;
            }
            Some(until) => {
                let sql = "DELETE FROM key_secrets WHERE key_id = $1 \
                         AND valid_until IS NOT NULL AND valid_until <= $2";
                tx.execute(sql, args![id, rotation.now_ms]).await?;
                let sql = "UPDATE key_secrets SET valid_until = $1 \
                         WHERE key_id = $2 AND (valid_until IS NULL OR valid_until > $1)";
                tx.execute(sql, args![until, id]).await?;
            }
        }
        let sql = "INSERT INTO key_secrets (hash, key_id, valid_until) VALUES ($1, $2, NULL)";
        tx.execute(sql, args![rotation.new_hash.as_str(), id])
            .await?;
        let sql = "UPDATE api_keys SET hash = $1, prefix = $2 WHERE id = $3";
        let values = args![rotation.new_hash.as_str(), &rotation.new_prefix, id];
        tx.execute(sql, values).await?;
        key.hash = rotation.new_hash.as_str().to_owned();
        key.prefix = rotation.new_prefix.clone();
        Ok(key)
    })
}

/// Deletes key `id` unless the edge has ever used it (`KeyHasHistory`: deactivate it instead).
pub(crate) async fn delete<D: Database>(db: &D, id: &str) -> StoreResult<()> {
    in_write!(db, |tx| {
        // Locked: waits for a lookup's touch or an ingest that is giving the key a history.
        let sql = format!(
            "SELECT last_used_at FROM api_keys WHERE id = $1{}",
            tx.for_update()
        );
        let row = tx.row(&sql, args![id]).await?;
        let last_used_at: Option<i64> = row.ok_or(StoreError::KeyNotFound)?.get("last_used_at")?;
        if last_used_at.is_some() {
            return Err(StoreError::KeyHasHistory);
        }
        tx.execute("DELETE FROM key_secrets WHERE key_id = $1", args![id])
            .await?;
        tx.execute("DELETE FROM api_keys WHERE id = $1", args![id])
            .await?;
        Ok(())
    })
}

/// `last_used_at = $1` for key `$2`, unless it was written within `$3` ms before.
pub(crate) const TOUCH_SQL: &str = "UPDATE api_keys SET last_used_at = $1 \
     WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $1 - $3)";
