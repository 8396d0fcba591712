//! Retention of the rollups and the per-key charges: what is older than its horizon goes.

use crate::domain::credits::CREDIT_DAYS_KEPT_MS;
use crate::domain::{DAY_MS, LONGEST_WINDOW_MS};
use crate::store::sql::{args, in_write, Database};
use crate::store::StoreResult;

/// Deletes the rollups before `before_ms` and the charges no window reads any more, in one
/// transaction; how many rows went. `minutes_before` bounds the minute rollups in terms of `$1`
/// (SQLite keeps the minutes not yet rolled into hours and days: migration 0009). `alone`, where
/// several control planes share the database, is a statement answering one boolean column
/// `alone`: false skips this pass (another control plane is making it).
pub(crate) async fn purge_rollups<D: Database>(
    db: &D,
    before_ms: i64,
    now_ms: i64,
    minutes_before: &str,
    alone: Option<&str>,
) -> StoreResult<u64> {
    let statements = [
        (
            format!("DELETE FROM usage_minutes WHERE minute < {minutes_before}"),
            before_ms,
        ),
        (
            "DELETE FROM usage_hours WHERE hour < $1".to_owned(),
            before_ms,
        ),
        (
            "DELETE FROM usage_days WHERE day < $1".to_owned(),
            before_ms,
        ),
        (
            format!("DELETE FROM usage_ws_minutes WHERE minute < {minutes_before}"),
            before_ms,
        ),
        (
            "DELETE FROM usage_ws_hours WHERE hour < $1".to_owned(),
            before_ms,
        ),
        (
            "DELETE FROM usage_ws_days WHERE day < $1".to_owned(),
            before_ms,
        ),
        (
            "DELETE FROM key_admitted_minutes WHERE minute < $1".to_owned(),
            now_ms - LONGEST_WINDOW_MS - DAY_MS,
        ),
        (
            "DELETE FROM key_admitted_hours WHERE hour < $1".to_owned(),
            now_ms - LONGEST_WINDOW_MS - DAY_MS,
        ),
        (
            "DELETE FROM key_credit_days WHERE day < $1".to_owned(),
            now_ms - CREDIT_DAYS_KEPT_MS,
        ),
    ];
    in_write!(db, |tx| {
        if let Some(sql) = alone {
            let row = tx.row(sql, Vec::new()).await?;
            if !row
                .map(|r| r.get::<bool>("alone"))
                .transpose()?
                .unwrap_or(false)
            {
                return Ok(0);
            }
        }
        let mut deleted = 0;
        for (sql, cutoff) in &statements {
            deleted += tx.execute(sql, args![*cutoff]).await?;
        }
        Ok(deleted)
    })
}
