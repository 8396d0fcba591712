-- Daily rollups (UTC days), so a 1d series reads one row per key and combination per day, and
-- workspace indexes that carry `count` so workspace reports never visit the rollup tables.

CREATE TABLE usage_days (
    key_id        TEXT NOT NULL,
    day           INTEGER NOT NULL,          -- start (UTC midnight), Unix ms
    endpoint      TEXT NOT NULL,
    method        TEXT NOT NULL,
    response_code INTEGER NOT NULL,
    status        TEXT NOT NULL,
    workspace_id  TEXT NOT NULL,
    count         INTEGER NOT NULL,
    credits       INTEGER NOT NULL,
    duration_ms   REAL NOT NULL,
    PRIMARY KEY (key_id, day, endpoint, method, response_code, status)
) WITHOUT ROWID;

-- What was ingested before this migration, from the hourly rollups.
INSERT INTO usage_days (key_id, day, endpoint, method, response_code, status, workspace_id,
                        count, credits, duration_ms)
SELECT key_id, hour - hour % 86400000, endpoint, method, response_code, status,
       max(workspace_id), sum(count), sum(credits), sum(duration_ms)
FROM usage_hours
GROUP BY 1, 2, 3, 4, 5, 6;

CREATE INDEX usage_days_workspace ON usage_days (workspace_id, day, count);

DROP INDEX usage_minutes_workspace;
CREATE INDEX usage_minutes_workspace ON usage_minutes (workspace_id, minute, count);
DROP INDEX usage_hours_workspace;
CREATE INDEX usage_hours_workspace ON usage_hours (workspace_id, hour, count);
