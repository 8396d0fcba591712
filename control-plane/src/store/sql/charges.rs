//! Charges: what settled and expired leases spent of a key's budgets, in the per-key count
//! tables (`calls` in `key_admitted_totals.admitted`, `key_admitted_minutes` and
//! `key_admitted_hours`; `credits` in `key_admitted_totals.credits` and `key_credit_days`).
//! Written only by the leases (`leases.rs`), under the key's lock; read by the filter's lookup
//! (`usage`, `credits.used`) and by a grant (its room), with the same window arithmetic.

use std::collections::BTreeMap;

use crate::domain::credits::month_bounds;
use crate::domain::{
    ceil_to, floor_to, window_start, Meter, Usage, DAY_MS, HOUR_MS, LONGEST_WINDOW_MS, MINUTE_MS,
};
use crate::store::rows::count;
use crate::store::sql::{args, Row, Sql, Value};
use crate::store::StoreResult;

/// The charged columns of key `k` (its `api_keys` row): `credits_used` (its budget's current
/// period; NULL without a budget) and `usage_total`, `usage_daily`, `usage_weekly`,
/// `usage_monthly` (NULL for a window without a quota). A rolling window = whole hours from the
/// hourly charges + the minutes of its first, partial hour; only the windows the key has a quota
/// for are read (each costs two index searches). Counts are summed: PostgreSQL keeps them in
/// slots. Binds `$2`–`$9` ([`charged_args`]).
macro_rules! charged_columns {
    () => {
        "CASE WHEN k.credits_limit IS NULL THEN NULL \
           WHEN k.credits_period = 'total' THEN \
             (SELECT CAST(sum(credits) AS BIGINT) FROM key_admitted_totals t \
             WHERE t.key_id = k.id) \
           WHEN k.credits_period = 'day' THEN \
             (SELECT CAST(sum(credits) AS BIGINT) FROM key_credit_days d \
             WHERE d.key_id = k.id AND d.day = $8) \
           ELSE (SELECT CAST(coalesce(sum(credits), 0) AS BIGINT) FROM key_credit_days d \
             WHERE d.key_id = k.id AND d.day >= $9) END AS credits_used, \
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
             WHERE m.key_id = k.id AND m.minute >= $6 AND m.minute < $7) END AS usage_monthly"
    };
}
pub(crate) use charged_columns;

/// [`charged_columns`]' parameters at `now_ms`, `$2` to `$9`: each window's start and its first
/// whole hour (daily, weekly, monthly), today's start and this month's (UTC).
pub(crate) fn charged_args(now_ms: i64) -> Vec<Value> {
    let window = |w: i64| {
        let start = window_start(now_ms, w);
        (start, ceil_to(start, HOUR_MS))
    };
    let (d0, d1) = window(DAY_MS);
    let (w0, w1) = window(7 * DAY_MS);
    let (m0, m1) = window(LONGEST_WINDOW_MS);
    args![
        d0,
        d1,
        w0,
        w1,
        m0,
        m1,
        floor_to(now_ms, DAY_MS),
        month_bounds(now_ms).0
    ]
}

/// The charged windows of a row with [`charged_columns`] (0 where not read).
pub(crate) fn usage_from_row(r: &Row) -> StoreResult<Usage> {
    Ok(Usage {
        total: count(r.get("usage_total")?),
        daily: count(r.get("usage_daily")?),
        weekly: count(r.get("usage_weekly")?),
        monthly: count(r.get("usage_monthly")?),
    })
}

/// One key's charges not yet written: units per meter and minute.
#[derive(Debug, Default)]
pub(crate) struct Charges(BTreeMap<(Meter, i64), i64>);

impl Charges {
    /// `units` of `meter` spent at `at_ms` (charged to its minute).
    pub fn add(&mut self, meter: Meter, units: u64, at_ms: i64) {
        if units == 0 {
            return;
        }
        let units = i64::try_from(units).unwrap_or(i64::MAX);
        let entry = self
            .0
            .entry((meter, floor_to(at_ms, MINUTE_MS)))
            .or_default();
        *entry = entry.saturating_add(units);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds the charges to key `key_id`'s count tables (slot 0 on PostgreSQL), in key order.
    pub async fn write(&self, tx: &mut dyn Sql, key_id: &str) -> StoreResult<()> {
        let slot = tx.count_slot();
        let (mut calls, mut credits) = (0_i64, 0_i64);
        let mut hours: BTreeMap<i64, i64> = BTreeMap::new();
        let mut days: BTreeMap<i64, i64> = BTreeMap::new();
        let minutes = format!(
            "INSERT INTO key_admitted_minutes (key_id, minute, admitted) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id, minute{slot}) \
             DO UPDATE SET admitted = key_admitted_minutes.admitted + excluded.admitted"
        );
        for (&(meter, minute), &units) in &self.0 {
            match meter {
                Meter::Calls => {
                    calls = calls.saturating_add(units);
                    *hours.entry(floor_to(minute, HOUR_MS)).or_default() += units;
                    tx.execute(&minutes, args![key_id, minute, units]).await?;
                }
                Meter::Credits => {
                    credits = credits.saturating_add(units);
                    *days.entry(floor_to(minute, DAY_MS)).or_default() += units;
                }
            }
        }
        let sql = format!(
            "INSERT INTO key_admitted_hours (key_id, hour, admitted) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id, hour{slot}) \
             DO UPDATE SET admitted = key_admitted_hours.admitted + excluded.admitted"
        );
        for (hour, units) in hours {
            tx.execute(&sql, args![key_id, hour, units]).await?;
        }
        let sql = format!(
            "INSERT INTO key_credit_days (key_id, day, credits) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id, day{slot}) \
             DO UPDATE SET credits = key_credit_days.credits + excluded.credits"
        );
        for (day, units) in days {
            tx.execute(&sql, args![key_id, day, units]).await?;
        }
        if calls > 0 || credits > 0 {
            let sql = format!(
                "INSERT INTO key_admitted_totals (key_id, admitted, credits) VALUES ($1, $2, $3) \
                 ON CONFLICT (key_id{slot}) DO UPDATE SET \
                 admitted = key_admitted_totals.admitted + excluded.admitted, \
                 credits = key_admitted_totals.credits + excluded.credits"
            );
            tx.execute(&sql, args![key_id, calls, credits]).await?;
        }
        Ok(())
    }
}
