-- Per-key rate limits, credit budgets and who a key belongs to (issue 16), and the counts of
-- credits spent behind the budgets.
--
-- Credits spent = credits of admitted records (only admitted requests spend them). Per key:
-- all time in key_admitted_totals.credits, per UTC day in key_credit_days (a `day` budget reads
-- one row, a `month` budget at most 31, the calendar month a key without a budget shows too),
-- and per key x Envoy instance x 10 s in key_instance_buckets.credits (the lookup's
-- `recent.credits`). They are filled from what is stored already (the raw records kept by
-- retention), so budgets count what the control plane has: one scan of usage_records here.
--
-- From here on the rollups' `credits` (usage_minutes ... usage_ws_days) sum admitted records
-- only, as the usage report shows them; rows written before this migration summed every
-- record's credits and are left as they are (nothing stored tells them apart).

ALTER TABLE api_keys ADD COLUMN rate_limit_per_second INTEGER;  -- NULL = no limit
ALTER TABLE api_keys ADD COLUMN rate_limit_per_minute INTEGER;
ALTER TABLE api_keys ADD COLUMN rate_limit_per_hour INTEGER;
ALTER TABLE api_keys ADD COLUMN credits_limit INTEGER;          -- NULL = no budget
ALTER TABLE api_keys ADD COLUMN credits_period TEXT             -- NULL = no budget
    CHECK (credits_period IN ('day', 'month', 'total'));
ALTER TABLE api_keys ADD COLUMN external_id TEXT;               -- NULL = none
ALTER TABLE api_keys ADD COLUMN meta TEXT NOT NULL DEFAULT '{}'; -- JSON object of strings

-- GET /v1/workspaces/{ws}/keys?external_id=, and the request log's external_id filter.
CREATE INDEX api_keys_external_id ON api_keys (workspace_id, external_id)
    WHERE external_id IS NOT NULL;

ALTER TABLE key_admitted_totals ADD COLUMN credits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE key_instance_buckets ADD COLUMN credits INTEGER NOT NULL DEFAULT 0;

CREATE TABLE key_credit_days (
    key_id  TEXT NOT NULL,
    day     INTEGER NOT NULL,                -- start (UTC midnight), Unix ms
    credits INTEGER NOT NULL,
    PRIMARY KEY (key_id, day)
) WITHOUT ROWID;

INSERT INTO key_credit_days (key_id, day, credits)
SELECT n.name, d.day, d.credits
FROM (SELECT key_ref, timestamp - timestamp % 86400000 AS day, sum(credits) AS credits
      FROM usage_records WHERE admitted = 1 GROUP BY key_ref, 2) AS d
JOIN usage_names n ON n.id = d.key_ref
WHERE d.credits > 0;

UPDATE key_admitted_totals SET credits = coalesce(
    (SELECT sum(credits) FROM key_credit_days d WHERE d.key_id = key_admitted_totals.key_id), 0);

UPDATE key_instance_buckets SET credits = s.credits
FROM (SELECT k.name AS key_id, i.name AS instance, r.timestamp - r.timestamp % 10000 AS bucket,
             sum(r.credits) AS credits
      FROM usage_records r
      JOIN usage_names k ON k.id = r.key_ref
      JOIN usage_names i ON i.id = r.instance_ref
      WHERE r.admitted = 1 AND r.timestamp >= (SELECT min(bucket) FROM key_instance_buckets)
      GROUP BY r.key_ref, r.instance_ref, 3) AS s
WHERE key_instance_buckets.key_id = s.key_id AND key_instance_buckets.instance = s.instance
  AND key_instance_buckets.bucket = s.bucket;
