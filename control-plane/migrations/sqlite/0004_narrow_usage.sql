-- Faster ingest and workspace reports.
--
-- Raw records get narrower rows and index entries: key, workspace, method, endpoint and instance
-- become integer references into a dictionary of names, the status a small integer, and the
-- idempotency index holds a 64-bit hash of request_id instead of its text. A hash taken by
-- another request_id (a collision) is never trusted: the writer compares the text, and a record
-- whose hash is taken is stored with rid_hash NULL; rows with a NULL hash are found by their
-- text through a partial index (empty unless there was a collision). Rows copied here start with
-- a NULL hash (SQL cannot compute it); the control plane fills it in at startup, so idempotency
-- is exact before, during and after that backfill.
--
-- Workspace rollups (minute, hour, day) let a workspace report read one row per combination
-- and bucket instead of one per key.

CREATE TABLE usage_names (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

INSERT OR IGNORE INTO usage_names (name) SELECT key_id FROM usage_records GROUP BY key_id;
INSERT OR IGNORE INTO usage_names (name)
    SELECT workspace_id FROM usage_records GROUP BY workspace_id;
INSERT OR IGNORE INTO usage_names (name) SELECT DISTINCT method FROM usage_records;
INSERT OR IGNORE INTO usage_names (name) SELECT DISTINCT endpoint FROM usage_records;
INSERT OR IGNORE INTO usage_names (name) SELECT DISTINCT instance FROM usage_records;

CREATE TABLE usage_records_v4 (
    id            INTEGER PRIMARY KEY,      -- insertion order; the cursor tie-breaker
    rid_hash      INTEGER,                  -- see above; unique when not NULL
    request_id    TEXT NOT NULL,
    timestamp     INTEGER NOT NULL,
    key_ref       INTEGER NOT NULL,         -- usage_names
    workspace_ref INTEGER NOT NULL,         -- usage_names
    method_ref    INTEGER NOT NULL,         -- usage_names
    endpoint_ref  INTEGER NOT NULL,         -- usage_names
    resource_id   TEXT,
    response_code INTEGER NOT NULL,
    status        INTEGER NOT NULL CHECK (status IN (1, 2, 3)), -- completed, rate_limited, failed
    duration_ms   REAL NOT NULL,
    client_ip     TEXT NOT NULL,
    credits       INTEGER NOT NULL,
    admitted      INTEGER NOT NULL CHECK (admitted IN (0, 1)),
    instance_ref  INTEGER NOT NULL          -- usage_names
);

INSERT INTO usage_records_v4 (id, rid_hash, request_id, timestamp, key_ref, workspace_ref,
                              method_ref, endpoint_ref, resource_id, response_code, status,
                              duration_ms, client_ip, credits, admitted, instance_ref)
SELECT r.id, NULL, r.request_id, r.timestamp,
       (SELECT id FROM usage_names WHERE name = r.key_id),
       (SELECT id FROM usage_names WHERE name = r.workspace_id),
       (SELECT id FROM usage_names WHERE name = r.method),
       (SELECT id FROM usage_names WHERE name = r.endpoint),
       r.resource_id, r.response_code,
       CASE r.status WHEN 'completed' THEN 1 WHEN 'rate_limited' THEN 2 ELSE 3 END,
       r.duration_ms, r.client_ip, r.credits, r.admitted,
       (SELECT id FROM usage_names WHERE name = r.instance)
FROM usage_records r
ORDER BY r.id;

DROP TABLE usage_records;
ALTER TABLE usage_records_v4 RENAME TO usage_records;

CREATE UNIQUE INDEX usage_records_request ON usage_records (rid_hash);
CREATE INDEX usage_records_unhashed ON usage_records (request_id) WHERE rid_hash IS NULL;
CREATE INDEX usage_records_workspace_time ON usage_records (workspace_ref, timestamp);
CREATE INDEX usage_records_key_time ON usage_records (key_ref, timestamp);
CREATE INDEX usage_records_time ON usage_records (timestamp);
CREATE INDEX usage_records_resource ON usage_records (resource_id, timestamp)
    WHERE resource_id IS NOT NULL;

-- Workspace x endpoint x method x response code x status per minute, hour and day, filled by
-- ingest in the same transaction as the per-key rollups; here from them.
CREATE TABLE usage_ws_minutes (
    workspace_id  TEXT NOT NULL,
    minute        INTEGER NOT NULL,
    endpoint      TEXT NOT NULL,
    method        TEXT NOT NULL,
    response_code INTEGER NOT NULL,
    status        TEXT NOT NULL,
    count         INTEGER NOT NULL,
    credits       INTEGER NOT NULL,
    duration_ms   REAL NOT NULL,
    PRIMARY KEY (workspace_id, minute, endpoint, method, response_code, status)
) WITHOUT ROWID;

CREATE TABLE usage_ws_hours (
    workspace_id  TEXT NOT NULL,
    hour          INTEGER NOT NULL,
    endpoint      TEXT NOT NULL,
    method        TEXT NOT NULL,
    response_code INTEGER NOT NULL,
    status        TEXT NOT NULL,
    count         INTEGER NOT NULL,
    credits       INTEGER NOT NULL,
    duration_ms   REAL NOT NULL,
    PRIMARY KEY (workspace_id, hour, endpoint, method, response_code, status)
) WITHOUT ROWID;

CREATE TABLE usage_ws_days (
    workspace_id  TEXT NOT NULL,
    day           INTEGER NOT NULL,
    endpoint      TEXT NOT NULL,
    method        TEXT NOT NULL,
    response_code INTEGER NOT NULL,
    status        TEXT NOT NULL,
    count         INTEGER NOT NULL,
    credits       INTEGER NOT NULL,
    duration_ms   REAL NOT NULL,
    PRIMARY KEY (workspace_id, day, endpoint, method, response_code, status)
) WITHOUT ROWID;

INSERT INTO usage_ws_minutes
SELECT workspace_id, minute, endpoint, method, response_code, status,
       sum(count), sum(credits), sum(duration_ms)
FROM usage_minutes GROUP BY 1, 2, 3, 4, 5, 6;

INSERT INTO usage_ws_hours
SELECT workspace_id, hour, endpoint, method, response_code, status,
       sum(count), sum(credits), sum(duration_ms)
FROM usage_hours GROUP BY 1, 2, 3, 4, 5, 6;

INSERT INTO usage_ws_days
SELECT workspace_id, day, endpoint, method, response_code, status,
       sum(count), sum(credits), sum(duration_ms)
FROM usage_days GROUP BY 1, 2, 3, 4, 5, 6;

-- Workspace reports read the workspace rollups now.
DROP INDEX usage_minutes_workspace;
DROP INDEX usage_hours_workspace;
DROP INDEX usage_days_workspace;
