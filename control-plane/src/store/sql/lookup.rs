//! The filter's key lookup: one statement, so the key, its secret, its plan, its charged usage
//! windows and its credits charged are one snapshot.

use crate::domain::{CreditsLookup, KeyLookup, Plan};
use crate::secret::SecretHash;
use crate::store::rows::{
    allowed_from_column, count, credits_from_row, meta_from_column, quotas_from_row,
    rate_limits_from_row,
};
use crate::store::sql::charges::{charged_args, charged_columns, usage_from_row};
use crate::store::sql::{args, Row, Value};
use crate::store::StoreResult;

/// Parameters: [`lookup_args`]. The charges are [`charged_columns`]'.
pub(crate) const LOOKUP_SQL: &str = concat!(
    "SELECT k.id AS key_id, k.workspace_id, k.active, k.expires_at, \
       s.valid_until AS secret_valid_until, k.allowed, \
       k.quota_total, k.quota_daily, k.quota_weekly, k.quota_monthly, \
       k.last_used_at, p.name AS plan_name, p.max_keys, \
       k.rate_limit_per_second, k.rate_limit_per_minute, k.rate_limit_per_hour, \
       k.credits_limit, k.credits_period, k.external_id, k.meta, \
       p.rate_limit_per_second AS plan_rate_limit_per_second, \
       p.rate_limit_per_minute AS plan_rate_limit_per_minute, ",
    charged_columns!(),
    " FROM key_secrets s \
     JOIN api_keys k ON k.id = s.key_id \
     JOIN workspaces w ON w.id = k.workspace_id \
     JOIN plans p ON p.name = w.plan \
     WHERE s.hash = $1"
);

/// [`LOOKUP_SQL`]'s parameters: the hash, then [`charged_args`].
pub(crate) fn lookup_args(hash: &SecretHash, now_ms: i64) -> Vec<Value> {
    let mut values = args![hash.as_str()];
    values.extend(charged_args(now_ms));
    values
}

/// The lookup answer from [`LOOKUP_SQL`]'s row (read with [`lookup_args`] at `now_ms`).
pub(crate) fn lookup_from_row(r: &Row, now_ms: i64) -> StoreResult<KeyLookup> {
    let credits = match credits_from_row(r)? {
        Some(budget) => Some(CreditsLookup {
            budget,
            used: count(r.get("credits_used")?),
            period: budget.period.bounds(now_ms),
        }),
        None => None,
    };
    Ok(KeyLookup {
        rate_limits: rate_limits_from_row(r)?,
        credits,
        external_id: r.get("external_id")?,
        meta: meta_from_column(&r.get::<String>("meta")?)?,
        quotas: quotas_from_row(r)?,
        allowed: allowed_from_column(&r.get::<String>("allowed")?)?,
        key_id: r.get("key_id")?,
        workspace_id: r.get("workspace_id")?,
        active: r.get("active")?,
        expires_at: r.get("expires_at")?,
        secret_valid_until: r.get("secret_valid_until")?,
        usage: usage_from_row(r)?,
        plan: Plan {
            name: r.get("plan_name")?,
            max_keys: r.get("max_keys")?,
            rate_limit_per_second: r.get("plan_rate_limit_per_second")?,
            rate_limit_per_minute: r.get("plan_rate_limit_per_minute")?,
        },
        last_used_at: r.get("last_used_at")?,
    })
}
