-- The request log without a scope and retention read records by time through the idempotency
-- keys (usage_request_keys, 0007: timestamp, rid_hash, id), which the ingest writer fills in
-- large sorted batches with the tail; the records above through_id are found by their id range
-- as for every other reference table (0006, 0008), and rows migrated by 0004 without a hash by
-- usage_records_unhashed until the writer has hashed them.
--
-- usage_records_time took every record on one of the pages of the last second or two of the
-- B-tree (several Envoys' batches overlap in time): with realistic traffic about 15 % of the
-- ingest writer's time, mostly pages written to the WAL again by every transaction.

DROP INDEX usage_records_time;
