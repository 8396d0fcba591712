//! The roll-up: minutes rolled into the hour and day rollups a minute after they end, a step at
//! a time, between ingest transactions.

use super::*;

/// The roll-ups from minutes: (minutes table, rollup table, scope column, bucket column, step).
pub(super) const ROLL_UPS: [(&str, &str, &str, &str, i64); 4] = [
    ("usage_minutes", "usage_hours", "key_id", "hour", HOUR_MS),
    ("usage_minutes", "usage_days", "key_id", "day", DAY_MS),
    (
        "usage_ws_minutes",
        "usage_ws_hours",
        "workspace_id",
        "hour",
        HOUR_MS,
    ),
    (
        "usage_ws_minutes",
        "usage_ws_days",
        "workspace_id",
        "day",
        DAY_MS,
    ),
];

/// Minutes before this are due to be rolled into the hours and days at `now_ms`.
pub(super) fn roll_target(now_ms: i64) -> i64 {
    floor_to(now_ms - ROLL_LAG_MS, MINUTE_MS)
}

impl Writer {
    /// Whether minutes are due to be rolled into the hours and days: some minute before
    /// [`roll_target`] is not rolled yet, and no failure asks to wait.
    pub(super) fn roll_due(&self, now_ms: i64) -> bool {
        self.rolled_through.is_some_and(|through| {
            roll_target(now_ms) > through && self.newest_timestamp >= through
        }) && self.roll_retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// How long the writer may wait for a job before a roll-up is due, if one will be.
    pub(super) fn roll_wait(&self, now_ms: i64) -> Option<Duration> {
        let through = self.rolled_through?;
        if self.newest_timestamp < through {
            return None;
        }
        let due_at = through + MINUTE_MS + ROLL_LAG_MS;
        let until_due = Duration::from_millis(u64::try_from(due_at - now_ms).unwrap_or(0));
        let until_retry = self.roll_retry_at.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        });
        Some(until_due.max(until_retry))
    }

    pub(super) fn roll_up_logged(&mut self, now_ms: i64) {
        match self.roll_up_step(now_ms) {
            Ok(()) => self.roll_retry_at = None,
            Err(e) => {
                tracing::error!(error = %e, "cannot roll minutes into hours and days; retrying");
                self.roll_retry_at = Some(Instant::now() + ROLL_RETRY_AFTER);
            }
        }
    }

    /// One transaction: the minute rows of up to [`ROLL_STEP_MS`] of minutes from
    /// `through_minute` (skipping minutes without rows) on to [`roll_target`], summed into the
    /// hour and day rollups of keys and workspaces, and the new `through_minute`.
    pub(super) fn roll_up_step(&mut self, now_ms: i64) -> rusqlite::Result<()> {
        let upto = self.in_transaction(|w| {
            let through: i64 = w.conn.query_row(
                "SELECT through_minute FROM usage_rollup_state",
                [],
                |row| row.get(0),
            )?;
            let target = roll_target(now_ms);
            if target <= through {
                return Ok(through);
            }
            let first: Option<i64> = w.conn.query_row(
                "SELECT min(coalesce((SELECT min(minute) FROM usage_minutes WHERE minute >= ?1),                  ?2), coalesce((SELECT min(minute) FROM usage_ws_minutes WHERE minute >= ?1), ?2))",
                params![through, target],
                |row| row.get(0),
            )?;
            let upto = target.min(first.unwrap_or(target).saturating_add(ROLL_STEP_MS));
            for (minutes, table, scope, column, step) in ROLL_UPS {
                let (ws_column, ws_value) = if scope == "key_id" {
                    (", workspace_id", ", workspace_id")
                } else {
                    ("", "")
                };
                w.conn
                    .prepare_cached(&format!(
                        "INSERT INTO {table} ({scope}, {column}, endpoint, method, response_code,                          status, count, credits, duration_ms{ws_column})                          SELECT {scope}, minute - minute % {step}, endpoint, method,                          response_code, status, sum(count), sum(credits), sum(duration_ms)                         {ws_value} FROM {minutes} WHERE minute >= ?1 AND minute < ?2                          GROUP BY {scope}, minute - minute % {step}, endpoint, method,                          response_code, status                          ON CONFLICT ({scope}, {column}, endpoint, method, response_code, status)                          DO UPDATE SET count = count + excluded.count,                          credits = credits + excluded.credits,                          duration_ms = duration_ms + excluded.duration_ms"
                    ))?
                    .execute(params![through, upto])?;
            }
            w.conn
                .prepare_cached("UPDATE usage_rollup_state SET through_minute = ?1")?
                .execute([upto])?;
            Ok::<_, rusqlite::Error>(upto)
        })?;
        self.rolled_through = Some(upto);
        Ok(())
    }
}
