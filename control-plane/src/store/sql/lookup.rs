//! The filter's key lookup: one statement, so the key, its secret, its plan, its usage windows,
//! its credits spent and `recent` are one snapshot.

use crate::domain::credits::month_bounds;
use crate::domain::{
    ceil_to, floor_to, window_start, CreditsLookup, KeyLookup, Plan, Recent, RecentQuery, Usage,
    DAY_MS, HOUR_MS, LONGEST_WINDOW_MS,
};
use crate::secret::SecretHash;
use crate::store::rows::{
    allowed_from_column, count, credits_from_row, meta_from_column, quotas_from_row,
    rate_limits_from_row,
};
use crate::store::sql::{args, Row, Value};
use crate::store::StoreResult;

/// A window is read only when the key has a quota for it, and `recent` only for keys with a
/// quota: the filter ignores the rest, and each window costs two index searches. A window =
/// whole hours from the per-key hourly counts + the minutes of its first, partial hour.
/// Credits spent (`credits_used`) are read only for keys with a budget: all time from the
/// totals, a day or a calendar month from the per-day counts; `recent_credits` from the
/// per-instance buckets since the split point of the key's period.
/// Counts are summed: PostgreSQL keeps them in slots (several rows per key and bucket).
/// Parameters: [`lookup_args`].
pub(crate) const LOOKUP_SQL: &str = "\
SELECT k.id AS key_id, k.workspace_id, k.active, k.expires_at, \
       s.valid_until AS secret_valid_until, k.allowed, \
       k.quota_total, k.quota_daily, k.quota_weekly, k.quota_monthly, \
       k.last_used_at, p.name AS plan_name, p.max_keys, \
       k.rate_limit_per_second, k.rate_limit_per_minute, k.rate_limit_per_hour, \
       k.credits_limit, k.credits_period, k.external_id, k.meta, \
       CASE WHEN k.credits_limit IS NULL THEN NULL \
         WHEN k.credits_period = 'total' THEN \
           (SELECT CAST(sum(credits) AS BIGINT) FROM key_admitted_totals t \
           WHERE t.key_id = k.id) \
         WHEN k.credits_period = 'day' THEN \
           (SELECT CAST(sum(credits) AS BIGINT) FROM key_credit_days d \
           WHERE d.key_id = k.id AND d.day = $10) \
         ELSE (SELECT CAST(coalesce(sum(credits), 0) AS BIGINT) FROM key_credit_days d \
           WHERE d.key_id = k.id AND d.day >= $11) END AS credits_used, \
       CASE WHEN CAST($8 AS TEXT) IS NOT NULL AND k.credits_limit IS NOT NULL THEN \
         (SELECT CAST(coalesce(sum(credits), 0) AS BIGINT) FROM key_instance_buckets b \
           WHERE b.key_id = k.id AND b.instance = CAST($8 AS TEXT) AND b.bucket >= \
           CASE k.credits_period WHEN 'day' THEN $12 WHEN 'month' THEN $13 ELSE $9 END) \
       END AS recent_credits, \
       p.rate_limit_per_second AS plan_rate_limit_per_second, \
       p.rate_limit_per_minute AS plan_rate_limit_per_minute, \
       CASE WHEN k.quota_total IS NOT NULL THEN \
         (SELECT CAST(sum(admitted) AS BIGINT) FROM key_admitted_totals t \
           WHERE t.key_id = k.id) END AS usage_total, \
       CASE WHEN k.quota_daily IS NOT NULL THEN \
         (SELECT CAST(coalesce(sum(admitted), 0) AS BIGINT) FROM key_admitted_hours h \
           WHERE h.key_id = k.id AND h.hour >= $3) + \
         (SELECT CAST(coalesce(sum(admitted), 0) AS BIGINT) FROM key_admitted_minutes m \
           WHERE m.key_id = k.id AND m.minute >= $2 AND m.minute < $3) END AS usage_daily, \
       CASE WHEN k.quota_weekly IS NOT NULL THEN \
         (SELECT CAST(coalesce(sum(admitted), 0) AS BIGINT) FROM key_admitted_hours h \
           WHERE h.key_id = k.id AND h.hour >= $5) + \
         (SELECT CAST(coalesce(sum(admitted), 0) AS BIGINT) FROM key_admitted_minutes m \
           WHERE m.key_id = k.id AND m.minute >= $4 AND m.minute < $5) END AS usage_weekly, \
       CASE WHEN k.quota_monthly IS NOT NULL THEN \
         (SELECT CAST(coalesce(sum(admitted), 0) AS BIGINT) FROM key_admitted_hours h \
           WHERE h.key_id = k.id AND h.hour >= $7) + \
         (SELECT CAST(coalesce(sum(admitted), 0) AS BIGINT) FROM key_admitted_minutes m \
           WHERE m.key_id = k.id AND m.minute >= $6 AND m.minute < $7) END AS usage_monthly, \
       CASE WHEN CAST($8 AS TEXT) IS NOT NULL AND coalesce(k.quota_total, k.quota_daily, \
         k.quota_weekly, k.quota_monthly) IS NOT NULL THEN \
         (SELECT CAST(coalesce(sum(admitted), 0) AS BIGINT) FROM key_instance_buckets b \
           WHERE b.key_id = k.id AND b.instance = CAST($8 AS TEXT) AND b.bucket >= $9) \
       END AS recent \
FROM key_secrets s \
JOIN api_keys k ON k.id = s.key_id \
JOIN workspaces w ON w.id = k.workspace_id \
JOIN plans p ON p.name = w.plan \
WHERE s.hash = $1";

/// [`LOOKUP_SQL`]'s parameters: the hash, each window's start and its first whole hour, the
/// instance and start of `recent`, today's and this month's start (UTC), and the split points
/// of `recent.credits` for a day and a month budget (`max(since_ms, period start)`; a `total`
/// budget's is `since_ms`).
pub(crate) fn lookup_args(
    hash: &SecretHash,
    now_ms: i64,
    recent: Option<&RecentQuery>,
) -> Vec<Value> {
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
    // Period starts are UTC midnights, so bucket boundaries too: the split stays exact.
    let today = floor_to(now_ms, DAY_MS);
    let month = month_bounds(now_ms).0;
    args![
        hash.as_str(),
        d0,
        d1,
        w0,
        w1,
        m0,
        m1,
        recent.map(|r| r.instance.as_str()),
        since,
        today,
        month,
        since.max(today),
        since.max(month)
    ]
}

/// The lookup answer from [`LOOKUP_SQL`]'s row (read with [`lookup_args`] at `now_ms`).
pub(crate) fn lookup_from_row(
    r: &Row,
    now_ms: i64,
    recent: Option<&RecentQuery>,
) -> StoreResult<KeyLookup> {
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
        usage: Usage {
            total: count(r.get("usage_total")?),
            daily: count(r.get("usage_daily")?),
            weekly: count(r.get("usage_weekly")?),
            monthly: count(r.get("usage_monthly")?),
        },
        recent: match recent {
            Some(q) => Some(Recent {
                since_ms: q.since_ms,
                count: count(r.get("recent")?),
                credits: count(r.get("recent_credits")?),
            }),
            None => None,
        },
        plan: Plan {
            name: r.get("plan_name")?,
            max_keys: r.get("max_keys")?,
            rate_limit_per_second: r.get("plan_rate_limit_per_second")?,
            rate_limit_per_minute: r.get("plan_rate_limit_per_minute")?,
        },
        last_used_at: r.get("last_used_at")?,
    })
}
