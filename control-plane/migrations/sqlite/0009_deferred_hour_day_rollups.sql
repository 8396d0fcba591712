-- Hour and day rollups (per key and per workspace) are derived from the minute rollups by the
-- ingest writer, a few minutes' worth at a time, instead of being written by every ingest
-- transaction.
--
-- A transaction of ~1,000 realistic records touches ~500 combinations (key x endpoint x method x
-- response code x status), and each was upserted into six rollup tables; the hour and day rows
-- of the same combinations are updated again by every following transaction of the minute.
-- Rolled once per minute, each combination's hour and day rows take one update per minute.
--
-- usage_rollup_state.through_minute: every minute row with minute < through_minute is in the
-- hour and day tables; the rows at or after it are not (yet). Ingest writes hours and days
-- directly only for a record of a minute already rolled (a late record). Reports read the hour
-- or day table plus the minute rows at or after through_minute, in one snapshot, so they are
-- exact at every moment. Existing data is fully rolled up, hence the start after the newest
-- minute.

CREATE TABLE usage_rollup_state (
    singleton      INTEGER PRIMARY KEY CHECK (singleton = 1),
    through_minute INTEGER NOT NULL
);

INSERT INTO usage_rollup_state (singleton, through_minute)
SELECT 1, max(coalesce((SELECT max(minute) FROM usage_minutes), 0),
              coalesce((SELECT max(minute) FROM usage_ws_minutes), 0)) + 60000;

-- The writer rolls a range of minutes of every key and workspace; new minute rows land at the
-- right edge (a combination's row is created once per minute, then updated).
CREATE INDEX usage_minutes_by_minute ON usage_minutes (minute);
CREATE INDEX usage_ws_minutes_by_minute ON usage_ws_minutes (minute);
