-- The PostgreSQL schema: the same tables and meaning as the SQLite one (migrations/sqlite), without
-- SQLite's write-path machinery (name dictionary, deferred reference tables): PostgreSQL keeps
-- indexes on random keys well, so raw records carry their names and plain indexes serve the
-- request log and idempotency.
--
-- Timestamps are integer Unix milliseconds (UTC). Text columns use the "C" collation so ordering
-- and comparisons are bytewise, as in SQLite.

CREATE TABLE plans (
    name                  TEXT COLLATE "C" PRIMARY KEY,
    max_keys              BIGINT,            -- NULL = unlimited
    rate_limit_per_second BIGINT,            -- NULL = unlimited
    rate_limit_per_minute BIGINT             -- NULL = unlimited
);

INSERT INTO plans (name, max_keys, rate_limit_per_second, rate_limit_per_minute) VALUES
    ('free', 2, 5, 100),
    ('pro', 25, 50, 2000),
    ('enterprise', NULL, NULL, NULL);

CREATE TABLE workspaces (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL,
    plan       TEXT COLLATE "C" NOT NULL REFERENCES plans (name),
    created_at BIGINT NOT NULL
);

CREATE INDEX workspaces_created_at ON workspaces (created_at, id);

CREATE TABLE api_keys (
    id            TEXT COLLATE "C" PRIMARY KEY,
    workspace_id  TEXT COLLATE "C" NOT NULL REFERENCES workspaces (id),
    alias         TEXT COLLATE "C" NOT NULL,
    description   TEXT,
    category      TEXT NOT NULL,
    active        BOOLEAN NOT NULL,
    expires_at    BIGINT,                    -- NULL = never expires
    quota_total   BIGINT,                    -- NULL = no cap
    quota_daily   BIGINT,
    quota_weekly  BIGINT,
    quota_monthly BIGINT,
    allowed       TEXT NOT NULL DEFAULT '[]', -- JSON array of {"method","path"}; [] = everything
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,                    -- NULL = never seen at the edge (deletable)
    hash          TEXT COLLATE "C" NOT NULL, -- SHA-256 hex of the current secret
    prefix        TEXT NOT NULL,             -- first 8 characters of the current secret
    CONSTRAINT api_keys_alias_unique UNIQUE (workspace_id, alias)
);

CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at, id);

-- Every hash that currently authenticates a key: the current secret (valid_until NULL) and, after
-- a rotation with grace, the previous ones until valid_until. The filter lookup starts here.
CREATE TABLE key_secrets (
    hash        TEXT COLLATE "C" PRIMARY KEY,
    key_id      TEXT COLLATE "C" NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    valid_until BIGINT
);

CREATE INDEX key_secrets_key ON key_secrets (key_id);

CREATE TABLE console_tokens (
    id           TEXT COLLATE "C" PRIMARY KEY,
    workspace_id TEXT COLLATE "C" NOT NULL REFERENCES workspaces (id),
    name         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    hash         TEXT COLLATE "C" NOT NULL UNIQUE -- SHA-256 hex of the token
);

CREATE INDEX console_tokens_workspace ON console_tokens (workspace_id, created_at, id);

-- One row per request the filter reported (raw; deleted after --retention-days).
CREATE TABLE usage_records (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- the cursor tie-breaker
    request_id    TEXT COLLATE "C" NOT NULL,
    ts            BIGINT NOT NULL,
    key_id        TEXT COLLATE "C" NOT NULL,
    workspace_id  TEXT COLLATE "C" NOT NULL,
    method        TEXT COLLATE "C" NOT NULL,
    endpoint      TEXT COLLATE "C" NOT NULL,
    resource_id   TEXT COLLATE "C",
    response_code BIGINT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('completed', 'rate_limited', 'failed')),
    duration_ms   DOUBLE PRECISION NOT NULL,
    client_ip     TEXT NOT NULL,
    credits       BIGINT NOT NULL,
    admitted      BOOLEAN NOT NULL,
    instance      TEXT COLLATE "C" NOT NULL
);

-- Idempotency: a record delivered again has the same request_id and timestamp.
CREATE UNIQUE INDEX usage_records_request ON usage_records (request_id, ts);
-- The request log reads newest first within a workspace, a key or a resource; retention and the
-- admin's unscoped log read by time.
CREATE INDEX usage_records_workspace_time ON usage_records (workspace_id, ts, id);
CREATE INDEX usage_records_key_time ON usage_records (key_id, ts, id);
CREATE INDEX usage_records_time ON usage_records (ts, id);
CREATE INDEX usage_records_resource ON usage_records (resource_id, ts, id)
    WHERE resource_id IS NOT NULL;

-- Analytics: key x endpoint x method x response code x status per minute, hour and day, and the
-- same per workspace. Filled by ingest in the same transaction as the raw records.
CREATE TABLE usage_minutes (
    key_id        TEXT COLLATE "C" NOT NULL,
    minute        BIGINT NOT NULL,
    endpoint      TEXT COLLATE "C" NOT NULL,
    method        TEXT COLLATE "C" NOT NULL,
    response_code BIGINT NOT NULL,
    status        TEXT COLLATE "C" NOT NULL,
    workspace_id  TEXT COLLATE "C" NOT NULL,
    count         BIGINT NOT NULL,
    credits       BIGINT NOT NULL,
    duration_ms   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key_id, minute, endpoint, method, response_code, status)
);

CREATE TABLE usage_hours (
    key_id        TEXT COLLATE "C" NOT NULL,
    hour          BIGINT NOT NULL,
    endpoint      TEXT COLLATE "C" NOT NULL,
    method        TEXT COLLATE "C" NOT NULL,
    response_code BIGINT NOT NULL,
    status        TEXT COLLATE "C" NOT NULL,
    workspace_id  TEXT COLLATE "C" NOT NULL,
    count         BIGINT NOT NULL,
    credits       BIGINT NOT NULL,
    duration_ms   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key_id, hour, endpoint, method, response_code, status)
);

CREATE TABLE usage_days (
    key_id        TEXT COLLATE "C" NOT NULL,
    day           BIGINT NOT NULL,
    endpoint      TEXT COLLATE "C" NOT NULL,
    method        TEXT COLLATE "C" NOT NULL,
    response_code BIGINT NOT NULL,
    status        TEXT COLLATE "C" NOT NULL,
    workspace_id  TEXT COLLATE "C" NOT NULL,
    count         BIGINT NOT NULL,
    credits       BIGINT NOT NULL,
    duration_ms   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key_id, day, endpoint, method, response_code, status)
);

CREATE TABLE usage_ws_minutes (
    workspace_id  TEXT COLLATE "C" NOT NULL,
    minute        BIGINT NOT NULL,
    endpoint      TEXT COLLATE "C" NOT NULL,
    method        TEXT COLLATE "C" NOT NULL,
    response_code BIGINT NOT NULL,
    status        TEXT COLLATE "C" NOT NULL,
    count         BIGINT NOT NULL,
    credits       BIGINT NOT NULL,
    duration_ms   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workspace_id, minute, endpoint, method, response_code, status)
);

CREATE TABLE usage_ws_hours (
    workspace_id  TEXT COLLATE "C" NOT NULL,
    hour          BIGINT NOT NULL,
    endpoint      TEXT COLLATE "C" NOT NULL,
    method        TEXT COLLATE "C" NOT NULL,
    response_code BIGINT NOT NULL,
    status        TEXT COLLATE "C" NOT NULL,
    count         BIGINT NOT NULL,
    credits       BIGINT NOT NULL,
    duration_ms   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workspace_id, hour, endpoint, method, response_code, status)
);

CREATE TABLE usage_ws_days (
    workspace_id  TEXT COLLATE "C" NOT NULL,
    day           BIGINT NOT NULL,
    endpoint      TEXT COLLATE "C" NOT NULL,
    method        TEXT COLLATE "C" NOT NULL,
    response_code BIGINT NOT NULL,
    status        TEXT COLLATE "C" NOT NULL,
    count         BIGINT NOT NULL,
    credits       BIGINT NOT NULL,
    duration_ms   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workspace_id, day, endpoint, method, response_code, status)
);

-- Quota counts for the filter lookup: admitted records per key, all time, per minute and per
-- hour (a rolling window = whole hours + the minutes of its first partial hour).
CREATE TABLE key_admitted_totals (
    key_id   TEXT COLLATE "C" PRIMARY KEY,
    admitted BIGINT NOT NULL
);

CREATE TABLE key_admitted_minutes (
    key_id   TEXT COLLATE "C" NOT NULL,
    minute   BIGINT NOT NULL,
    admitted BIGINT NOT NULL,
    PRIMARY KEY (key_id, minute)
);

CREATE TABLE key_admitted_hours (
    key_id   TEXT COLLATE "C" NOT NULL,
    hour     BIGINT NOT NULL,
    admitted BIGINT NOT NULL,
    PRIMARY KEY (key_id, hour)
);

-- `recent` of the lookup: admitted records per key, Envoy instance and 10-second bucket.
CREATE TABLE key_instance_buckets (
    key_id   TEXT COLLATE "C" NOT NULL,
    instance TEXT COLLATE "C" NOT NULL,
    bucket   BIGINT NOT NULL,                -- start, Unix ms, multiple of 10000
    admitted BIGINT NOT NULL,
    PRIMARY KEY (key_id, instance, bucket)
);

-- calls_this_month: every record, admitted or not, per calendar month (UTC, YYYYMM).
CREATE TABLE key_month_calls (
    key_id TEXT COLLATE "C" NOT NULL,
    month  BIGINT NOT NULL,
    calls  BIGINT NOT NULL,
    PRIMARY KEY (key_id, month)
);

-- Retention deletes rollups by time.
CREATE INDEX usage_minutes_time ON usage_minutes (minute);
CREATE INDEX usage_hours_time ON usage_hours (hour);
CREATE INDEX usage_days_time ON usage_days (day);
CREATE INDEX usage_ws_minutes_time ON usage_ws_minutes (minute);
CREATE INDEX usage_ws_hours_time ON usage_ws_hours (hour);
CREATE INDEX usage_ws_days_time ON usage_ws_days (day);
CREATE INDEX key_admitted_minutes_time ON key_admitted_minutes (minute);
CREATE INDEX key_admitted_hours_time ON key_admitted_hours (hour);
CREATE INDEX key_instance_buckets_time ON key_instance_buckets (bucket);
