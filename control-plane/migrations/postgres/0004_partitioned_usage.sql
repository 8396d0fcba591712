-- Usage at scale (issue 17). Ingest becomes append-only and set-based:
--   * raw records are narrow (integer references for key, workspace, method, endpoint and
--     instance; status as a small code) and partitioned by UTC day, so retention drops whole
--     partitions instead of deleting rows;
--   * idempotency is a unique (timestamp, request_hash) per partition, where request_hash is the
--     first 8 bytes of SHA-256(request_id) as a signed integer: a redelivered record lands in the
--     partition of its timestamp and meets itself there;
--   * the analytics rollups are no longer upserted by every batch: a batch appends its per-minute
--     aggregates to usage_tail, and one control plane at a time (advisory lock) rolls the tail
--     into the minute, hour and day rollups. Reports read rollups + tail;
--   * the per-key counts the lookup reads get a `slot`: a batch adds to the rows of one slot, so
--     concurrent batches of the same keys rarely wait for each other's row locks; readers sum
--     over the slots.
-- The existing records are copied into the new table, ids kept.

-- Names of methods, endpoints and Envoy instances, by number. Never deleted (few, and raw
-- records of any age refer to them).
CREATE TABLE usage_names (
    id   INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE
);

ALTER TABLE workspaces ADD COLUMN ref INTEGER GENERATED ALWAYS AS IDENTITY;
ALTER TABLE workspaces ADD CONSTRAINT workspaces_ref_unique UNIQUE (ref);
ALTER TABLE api_keys ADD COLUMN ref INTEGER GENERATED ALWAYS AS IDENTITY;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_ref_unique UNIQUE (ref);

-- The partition of the UTC day that starts at `day_ms`, created when missing. Serialised by an
-- advisory lock so control planes creating the same day at once do not race.
CREATE FUNCTION tollgate_usage_partition(day_ms BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    name TEXT := 'usage_records_' || to_char(to_timestamp(day_ms / 1000) AT TIME ZONE 'UTC',
                                              'YYYYMMDD');
BEGIN
    IF day_ms % 86400000 <> 0 THEN
        RAISE EXCEPTION 'tollgate_usage_partition: % is not a UTC midnight', day_ms;
    END IF;
    PERFORM pg_advisory_xact_lock(7301700401);
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF usage_records FOR VALUES FROM (%s) TO (%s)',
                       name, day_ms, day_ms + 86400000);
    END IF;
END
$$;

ALTER TABLE usage_records RENAME TO usage_records_0003;
-- Its indexes' names go to the new table (the copy reads it whole).
DROP INDEX usage_records_request, usage_records_workspace_time, usage_records_key_time,
    usage_records_time, usage_records_resource;

CREATE SEQUENCE usage_record_ids AS BIGINT CACHE 1000;

-- Columns by alignment (8-byte, 4-byte, 2-byte, then variable), so rows carry no padding.
CREATE TABLE usage_records (
    "timestamp"   BIGINT NOT NULL,
    request_hash  BIGINT NOT NULL,
    id            BIGINT NOT NULL DEFAULT nextval('usage_record_ids'), -- the cursor tie-breaker
    credits       BIGINT NOT NULL,
    duration_ms   DOUBLE PRECISION NOT NULL,
    key_ref       INTEGER NOT NULL,          -- api_keys.ref
    workspace_ref INTEGER NOT NULL,          -- workspaces.ref
    method        INTEGER NOT NULL,          -- usage_names.id
    endpoint      INTEGER NOT NULL,          -- usage_names.id
    instance      INTEGER NOT NULL,          -- usage_names.id
    response_code SMALLINT NOT NULL,
    status        SMALLINT NOT NULL,         -- 0 completed, 1 rate_limited, 2 failed
    admitted      BOOLEAN NOT NULL,
    request_id    TEXT COLLATE "C" NOT NULL,
    resource_id   TEXT COLLATE "C",
    client_ip     TEXT NOT NULL
) PARTITION BY RANGE ("timestamp");

ALTER SEQUENCE usage_record_ids OWNED BY usage_records.id;

-- Idempotency; also the unscoped request log's order (by time).
CREATE UNIQUE INDEX usage_records_request ON usage_records ("timestamp", request_hash);
-- The request log newest first within a key, a workspace or a resource.
CREATE INDEX usage_records_key_time ON usage_records (key_ref, "timestamp", id);
CREATE INDEX usage_records_workspace_time ON usage_records (workspace_ref, "timestamp", id);
CREATE INDEX usage_records_resource ON usage_records (resource_id, "timestamp", id)
    WHERE resource_id IS NOT NULL;

-- Copy the existing records.
INSERT INTO usage_names (name)
SELECT method FROM usage_records_0003
UNION SELECT endpoint FROM usage_records_0003
UNION SELECT instance FROM usage_records_0003
ORDER BY 1;

SELECT tollgate_usage_partition(day)
FROM (SELECT DISTINCT "timestamp" - "timestamp" % 86400000 AS day FROM usage_records_0003) d;

INSERT INTO usage_records ("timestamp", request_hash, id, credits, duration_ms, key_ref,
    workspace_ref, method, endpoint, instance, response_code, status, admitted, request_id,
    resource_id, client_ip)
SELECT r."timestamp",
       ('x' || substr(encode(sha256(convert_to(r.request_id, 'UTF8')), 'hex'), 1, 16))::bit(64)::bigint,
       r.id, r.credits, r.duration_ms, k.ref, w.ref, m.id, e.id, i.id, r.response_code,
       CASE r.status WHEN 'completed' THEN 0 WHEN 'rate_limited' THEN 1 ELSE 2 END,
       r.admitted, r.request_id, r.resource_id, r.client_ip
FROM usage_records_0003 r
JOIN api_keys k ON k.id = r.key_id
JOIN workspaces w ON w.id = r.workspace_id
JOIN usage_names m ON m.name = r.method
JOIN usage_names e ON e.name = r.endpoint
JOIN usage_names i ON i.name = r.instance
ORDER BY r.id
ON CONFLICT DO NOTHING;

SELECT setval('usage_record_ids', greatest((SELECT max(id) FROM usage_records_0003), 1));

DROP TABLE usage_records_0003;

-- Per-minute aggregates of the batches stored since the last roll-up: the same shape as
-- usage_minutes. Rolled into the six rollup tables and emptied by one control plane at a time.
CREATE TABLE usage_tail (
    key_id        TEXT COLLATE "C" NOT NULL,
    workspace_id  TEXT COLLATE "C" NOT NULL,
    minute        BIGINT NOT NULL,
    endpoint      TEXT COLLATE "C" NOT NULL,
    method        TEXT COLLATE "C" NOT NULL,
    response_code BIGINT NOT NULL,
    status        TEXT COLLATE "C" NOT NULL,
    count         BIGINT NOT NULL,
    credits       BIGINT NOT NULL,
    duration_ms   DOUBLE PRECISION NOT NULL
);

-- The per-key counts in slots.
ALTER TABLE key_admitted_totals ADD COLUMN slot SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE key_admitted_totals DROP CONSTRAINT key_admitted_totals_pkey;
ALTER TABLE key_admitted_totals ADD PRIMARY KEY (key_id, slot);

ALTER TABLE key_admitted_minutes ADD COLUMN slot SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE key_admitted_minutes DROP CONSTRAINT key_admitted_minutes_pkey;
ALTER TABLE key_admitted_minutes ADD PRIMARY KEY (key_id, minute, slot);

ALTER TABLE key_admitted_hours ADD COLUMN slot SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE key_admitted_hours DROP CONSTRAINT key_admitted_hours_pkey;
ALTER TABLE key_admitted_hours ADD PRIMARY KEY (key_id, hour, slot);

ALTER TABLE key_credit_days ADD COLUMN slot SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE key_credit_days DROP CONSTRAINT key_credit_days_pkey;
ALTER TABLE key_credit_days ADD PRIMARY KEY (key_id, day, slot);

ALTER TABLE key_instance_buckets ADD COLUMN slot SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE key_instance_buckets DROP CONSTRAINT key_instance_buckets_pkey;
ALTER TABLE key_instance_buckets ADD PRIMARY KEY (key_id, instance, bucket, slot);

ALTER TABLE key_month_calls ADD COLUMN slot SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE key_month_calls DROP CONSTRAINT key_month_calls_pkey;
ALTER TABLE key_month_calls ADD PRIMARY KEY (key_id, month, slot);
