-- Per-key rate limits, credit budgets and who a key belongs to (issue 16), and the counts of
-- credits spent behind the budgets: the same as SQLite's 0012 (see there).

ALTER TABLE api_keys
    ADD COLUMN rate_limit_per_second BIGINT,   -- NULL = no limit
    ADD COLUMN rate_limit_per_minute BIGINT,
    ADD COLUMN rate_limit_per_hour BIGINT,
    ADD COLUMN credits_limit BIGINT,           -- NULL = no budget
    ADD COLUMN credits_period TEXT             -- NULL = no budget
        CHECK (credits_period IN ('day', 'month', 'total')),
    ADD COLUMN external_id TEXT COLLATE "C",   -- NULL = none
    ADD COLUMN meta TEXT NOT NULL DEFAULT '{}'; -- JSON object of strings

CREATE INDEX api_keys_external_id ON api_keys (workspace_id, external_id)
    WHERE external_id IS NOT NULL;

ALTER TABLE key_admitted_totals ADD COLUMN credits BIGINT NOT NULL DEFAULT 0;
ALTER TABLE key_instance_buckets ADD COLUMN credits BIGINT NOT NULL DEFAULT 0;

CREATE TABLE key_credit_days (
    key_id  TEXT COLLATE "C" NOT NULL,
    day     BIGINT NOT NULL,                 -- start (UTC midnight), Unix ms
    credits BIGINT NOT NULL,
    PRIMARY KEY (key_id, day)
);

CREATE INDEX key_credit_days_time ON key_credit_days (day);

INSERT INTO key_credit_days (key_id, day, credits)
SELECT key_id, "timestamp" - "timestamp" % 86400000, sum(credits)
FROM usage_records WHERE admitted
GROUP BY 1, 2
HAVING sum(credits) > 0;

UPDATE key_admitted_totals t SET credits = d.credits
FROM (SELECT key_id, sum(credits) AS credits FROM key_credit_days GROUP BY key_id) AS d
WHERE d.key_id = t.key_id;

UPDATE key_instance_buckets b SET credits = s.credits
FROM (SELECT key_id, instance, "timestamp" - "timestamp" % 10000 AS bucket,
             sum(credits) AS credits
      FROM usage_records
      WHERE admitted AND "timestamp" >= (SELECT min(bucket) FROM key_instance_buckets)
      GROUP BY 1, 2, 3) AS s
WHERE b.key_id = s.key_id AND b.instance = s.instance AND b.bucket = s.bucket;
