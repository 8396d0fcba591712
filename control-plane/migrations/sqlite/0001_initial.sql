-- Timestamps are integer Unix milliseconds (UTC), so windowing and bucketing read the same on
-- every backend.

CREATE TABLE plans (
    name                  TEXT PRIMARY KEY NOT NULL,
    max_keys              INTEGER,           -- NULL = unlimited
    rate_limit_per_second INTEGER,           -- NULL = unlimited
    rate_limit_per_minute INTEGER            -- NULL = unlimited
);

INSERT INTO plans (name, max_keys, rate_limit_per_second, rate_limit_per_minute) VALUES
    ('free', 2, 5, 100),
    ('pro', 25, 50, 2000),
    ('enterprise', NULL, NULL, NULL);

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    plan       TEXT NOT NULL REFERENCES plans (name),
    created_at INTEGER NOT NULL
);

CREATE INDEX workspaces_created_at ON workspaces (created_at);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    alias         TEXT NOT NULL,
    description   TEXT,
    category      TEXT NOT NULL,
    active        INTEGER NOT NULL CHECK (active IN (0, 1)),
    expires_at    INTEGER,                   -- NULL = never expires
    quota_total   INTEGER,                   -- NULL = no cap
    quota_daily   INTEGER,
    quota_weekly  INTEGER,
    quota_monthly INTEGER,
    allowed       TEXT NOT NULL DEFAULT '[]', -- JSON array of {"method","path"}; [] = everything
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,                   -- NULL = never seen at the edge (deletable)
    hash          TEXT NOT NULL,             -- SHA-256 hex of the current secret
    prefix        TEXT NOT NULL,             -- first 8 characters of the current secret
    UNIQUE (workspace_id, alias)
);

CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at);

-- Every hash that currently authenticates a key: the current secret (valid_until NULL) and, after
-- a rotation with grace, the previous ones until valid_until. The filter lookup starts here.
CREATE TABLE key_secrets (
    hash        TEXT PRIMARY KEY NOT NULL,
    key_id      TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    valid_until INTEGER
);

CREATE INDEX key_secrets_key ON key_secrets (key_id);
