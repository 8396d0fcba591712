-- Idempotency keys move from the unique (timestamp, rid_hash) index of usage_records to a table
-- the ingest writer fills in the same large sorted batches as the resource references (0006).
--
-- Records delivered together span about a second of timestamps (a filter flushes every second;
-- the benchmark's records share one timestamp per second), so a time-leading index still takes
-- each record on a random page of that second's part of the index: some 500 pages per
-- transaction at 100,000 records/s, 2.5 us of writer CPU per record. The writer now checks the
-- records above through_id (the tail) in memory and the older ones here, and adds the tail's
-- keys in key order every 50,000 records.
--
-- usage_request_keys holds (timestamp, rid_hash, id) of every record with id <= through_id and
-- a hash; a hash never decides alone (the writer compares the record's text), so colliding
-- hashes are simply two entries. Rows without a hash (migrated by 0004, not yet backfilled) are
-- still found by their text through usage_records_unhashed, and get their entry with their hash.

CREATE TABLE usage_request_keys (
    timestamp INTEGER NOT NULL,
    rid_hash  INTEGER NOT NULL,
    id        INTEGER NOT NULL,             -- usage_records.id
    PRIMARY KEY (timestamp, rid_hash, id)
) WITHOUT ROWID;

-- through_id now covers both deferred tables.
ALTER TABLE usage_resource_refs_state RENAME TO usage_tail_state;

-- From the old index, already in key order. Rows above through_id (none unless 0006's writer
-- ran) get theirs with the rest of the tail.
INSERT INTO usage_request_keys (timestamp, rid_hash, id)
SELECT timestamp, rid_hash, id FROM usage_records INDEXED BY usage_records_time_request
WHERE rid_hash IS NOT NULL AND id <= (SELECT through_id FROM usage_tail_state)
ORDER BY timestamp, rid_hash, id;

DROP INDEX usage_records_time_request;

CREATE TRIGGER usage_records_request_key_delete AFTER DELETE ON usage_records
WHEN old.rid_hash IS NOT NULL
BEGIN
    DELETE FROM usage_request_keys
    WHERE timestamp = old.timestamp AND rid_hash = old.rid_hash AND id = old.id;
END;
