-- The request log's resource_id filter moves from an index on usage_records to a table of
-- references that the ingest writer fills in large sorted batches.
--
-- Resource ids are random keys: an index on them takes every record on a different page, and
-- a transaction writes each page it changed to the WAL, so a batch of 2,000 records wrote about
-- a thousand 4 KiB pages for that index alone (3.7 KB of WAL and checkpoint per record, half
-- the ingest writer's time). The references are written instead for tens of thousands of
-- records at once, each resource's page then taking many of them.
--
-- usage_resource_refs holds (resource_id, timestamp, id) of every record with a resource id
-- and id <= through_id; records above it (the tail, bounded by the writer) are found by a scan
-- of their id range. Both are read in one snapshot, so the filter stays exact at every moment.

CREATE TABLE usage_resource_refs (
    resource_id TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    id          INTEGER NOT NULL,           -- usage_records.id
    PRIMARY KEY (resource_id, timestamp, id)
) WITHOUT ROWID;

CREATE TABLE usage_resource_refs_state (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    through_id INTEGER NOT NULL             -- every record with id <= this has its reference
);

-- From the old index, already in key order.
INSERT INTO usage_resource_refs (resource_id, timestamp, id)
SELECT resource_id, timestamp, id FROM usage_records INDEXED BY usage_records_resource
WHERE resource_id IS NOT NULL
ORDER BY resource_id, timestamp, id;

INSERT INTO usage_resource_refs_state (singleton, through_id)
VALUES (1, coalesce((SELECT max(id) FROM usage_records), 0));

DROP INDEX usage_records_resource;

-- Whatever deletes a record (retention) deletes its reference.
CREATE TRIGGER usage_records_resource_ref_delete AFTER DELETE ON usage_records
WHEN old.resource_id IS NOT NULL
BEGIN
    DELETE FROM usage_resource_refs
    WHERE resource_id = old.resource_id AND timestamp = old.timestamp AND id = old.id;
END;
