-- Budget leases: the same as SQLite's 0013 (see there). The per-key count tables keep their
-- slots; charges are written to slot 0 (the column's default) under the key's row lock.

CREATE TABLE key_leases (
    id         TEXT COLLATE "C" PRIMARY KEY,       -- `{instance}.{suffix}`, chosen by the filter
    key_id     TEXT COLLATE "C" NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    meter      TEXT NOT NULL CHECK (meter IN ('calls', 'credits')),
    instance   TEXT COLLATE "C" NOT NULL,
    units      BIGINT NOT NULL,
    granted_at BIGINT NOT NULL,                    -- Unix ms
    expires_at BIGINT NOT NULL                     -- Unix ms
);

CREATE INDEX key_leases_key ON key_leases (key_id, meter);
CREATE INDEX key_leases_expiry ON key_leases (expires_at);

DROP TABLE key_instance_buckets;

ALTER TABLE key_month_calls ADD COLUMN credits BIGINT NOT NULL DEFAULT 0;

INSERT INTO key_month_calls (key_id, month, slot, calls, credits)
SELECT key_id,
       CAST(to_char(to_timestamp(day / 1000) AT TIME ZONE 'UTC', 'YYYYMM') AS BIGINT),
       0, 0, sum(credits)
FROM key_credit_days
GROUP BY 1, 2
ON CONFLICT (key_id, month, slot) DO UPDATE SET credits = excluded.credits;
