-- Idempotency on (timestamp, request_id) through a time-ordered index.
--
-- A record the filter delivers again is byte-identical, so it has the timestamp of the original:
-- a record is a duplicate when a stored record has the same request_id AND the same timestamp.
-- The unique index leads with the timestamp, so new records land at the right edge of the
-- B-tree (a few pages per transaction) instead of on a random page each, as the 64-bit hash of a
-- random request_id did alone. The hash still decides nothing alone: a record whose
-- (timestamp, hash) is taken by another request_id is stored with rid_hash NULL and found by
-- its text and timestamp through the partial index (empty unless there was a collision, or
-- while rows migrated by 0004 wait for their hash).
--
-- Existing rows keep their hashes: unique on rid_hash implies unique on (timestamp, rid_hash),
-- so building the new index cannot fail.

DROP INDEX usage_records_request;
DROP INDEX usage_records_unhashed;
CREATE UNIQUE INDEX usage_records_time_request ON usage_records (timestamp, rid_hash);
CREATE INDEX usage_records_unhashed ON usage_records (request_id, timestamp)
    WHERE rid_hash IS NULL;
