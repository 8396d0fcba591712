-- Usage records, their rollups and console tokens. Every count table is filled by usage ingest in
-- the same transaction as the raw records, so they always agree with each other.

-- One row per request the filter reported (raw; deleted after --retention-days).
CREATE TABLE usage_records (
    id            INTEGER PRIMARY KEY,      -- insertion order; the cursor tie-breaker
    request_id    TEXT NOT NULL UNIQUE,     -- ingest is idempotent on it
    timestamp     INTEGER NOT NULL,
    key_id        TEXT NOT NULL,
    workspace_id  TEXT NOT NULL,
    method        TEXT NOT NULL,
    endpoint      TEXT NOT NULL,
    resource_id   TEXT,
    response_code INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('completed', 'rate_limited', 'failed')),
    duration_ms   REAL NOT NULL,
    client_ip     TEXT NOT NULL,
    credits       INTEGER NOT NULL,
    admitted      INTEGER NOT NULL CHECK (admitted IN (0, 1)),
    instance      TEXT NOT NULL
);

-- The request log reads newest first within a workspace or a key; retention and the admin's
-- unscoped log read by time; resource_id is the one selective filter without a scope.
CREATE INDEX usage_records_workspace_time ON usage_records (workspace_id, timestamp);
CREATE INDEX usage_records_key_time ON usage_records (key_id, timestamp);
CREATE INDEX usage_records_time ON usage_records (timestamp);
CREATE INDEX usage_records_resource ON usage_records (resource_id, timestamp)
    WHERE resource_id IS NOT NULL;

-- Analytics: key x endpoint x method x response code x status per minute, and the same per hour
-- (long ranges read whole hours from here and only their ragged edges from the minutes).
CREATE TABLE usage_minutes (
    key_id        TEXT NOT NULL,
    minute        INTEGER NOT NULL,          -- start, Unix ms
    endpoint      TEXT NOT NULL,
    method        TEXT NOT NULL,
    response_code INTEGER NOT NULL,
    status        TEXT NOT NULL,
    workspace_id  TEXT NOT NULL,
    count         INTEGER NOT NULL,
    credits       INTEGER NOT NULL,
    duration_ms   REAL NOT NULL,             -- sum
    PRIMARY KEY (key_id, minute, endpoint, method, response_code, status)
) WITHOUT ROWID;

CREATE INDEX usage_minutes_workspace ON usage_minutes (workspace_id, minute);

CREATE TABLE usage_hours (
    key_id        TEXT NOT NULL,
    hour          INTEGER NOT NULL,
    endpoint      TEXT NOT NULL,
    method        TEXT NOT NULL,
    response_code INTEGER NOT NULL,
    status        TEXT NOT NULL,
    workspace_id  TEXT NOT NULL,
    count         INTEGER NOT NULL,
    credits       INTEGER NOT NULL,
    duration_ms   REAL NOT NULL,
    PRIMARY KEY (key_id, hour, endpoint, method, response_code, status)
) WITHOUT ROWID;

CREATE INDEX usage_hours_workspace ON usage_hours (workspace_id, hour);

-- Quota counts for the filter lookup: admitted records per key, all time, per minute and per
-- hour (a rolling window = whole hours + the minutes of its first partial hour).
CREATE TABLE key_admitted_totals (
    key_id   TEXT PRIMARY KEY NOT NULL,
    admitted INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE key_admitted_minutes (
    key_id   TEXT NOT NULL,
    minute   INTEGER NOT NULL,
    admitted INTEGER NOT NULL,
    PRIMARY KEY (key_id, minute)
) WITHOUT ROWID;

CREATE TABLE key_admitted_hours (
    key_id   TEXT NOT NULL,
    hour     INTEGER NOT NULL,
    admitted INTEGER NOT NULL,
    PRIMARY KEY (key_id, hour)
) WITHOUT ROWID;

-- `recent` of the lookup: admitted records per key, Envoy instance and 10-second bucket.
CREATE TABLE key_instance_buckets (
    key_id   TEXT NOT NULL,
    instance TEXT NOT NULL,
    bucket   INTEGER NOT NULL,               -- start, Unix ms, multiple of 10000
    admitted INTEGER NOT NULL,
    PRIMARY KEY (key_id, instance, bucket)
) WITHOUT ROWID;

-- calls_this_month: every record, admitted or not, per calendar month (UTC, YYYYMM).
CREATE TABLE key_month_calls (
    key_id TEXT NOT NULL,
    month  INTEGER NOT NULL,
    calls  INTEGER NOT NULL,
    PRIMARY KEY (key_id, month)
) WITHOUT ROWID;

CREATE TABLE console_tokens (
    id           TEXT PRIMARY KEY NOT NULL,
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    name         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    hash         TEXT NOT NULL UNIQUE         -- SHA-256 hex of the token
);

CREATE INDEX console_tokens_workspace ON console_tokens (workspace_id, created_at);
