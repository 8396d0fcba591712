-- The request log's key and workspace lookups move from indexes on usage_records to tables the
-- ingest writer fills with the tail, in the same large sorted batches as the resource
-- references (0006) and idempotency keys (0007).
--
-- Real traffic gives every record its own millisecond timestamp, a batch covers about a second
-- of its Envoy's requests, and several Envoys' batches overlap, with hundreds of keys: an index
-- (key_ref, timestamp) or (workspace_ref, timestamp) then takes each record on a random page of
-- the last second or two of each key's or workspace's part of the B-tree, hundreds of pages per
-- transaction written to the WAL for a few thousand records (about 3.7 us of the writer's 12.8 us
-- per record). Written for tens of thousands of records at once, in key order, each page takes
-- many entries per write.
--
-- usage_key_refs and usage_workspace_refs hold (scope, timestamp, id) of every record with
-- id <= through_id (usage_tail_state); the records above it (the tail, bounded by the writer)
-- are found by a scan of their id range, in the same snapshot, so the request log stays exact
-- at every moment. usage_records_time stays: retention and the lookup's `recent` count (an
-- empty or short time range) read it.

CREATE TABLE usage_key_refs (
    key_ref   INTEGER NOT NULL,             -- usage_names
    timestamp INTEGER NOT NULL,
    id        INTEGER NOT NULL,             -- usage_records.id
    PRIMARY KEY (key_ref, timestamp, id)
) WITHOUT ROWID;

CREATE TABLE usage_workspace_refs (
    workspace_ref INTEGER NOT NULL,         -- usage_names
    timestamp     INTEGER NOT NULL,
    id            INTEGER NOT NULL,         -- usage_records.id
    PRIMARY KEY (workspace_ref, timestamp, id)
) WITHOUT ROWID;

-- From the old indexes, already in key order. Rows above through_id get theirs with the rest of
-- the tail.
INSERT INTO usage_key_refs (key_ref, timestamp, id)
SELECT key_ref, timestamp, id FROM usage_records INDEXED BY usage_records_key_time
WHERE id <= coalesce((SELECT through_id FROM usage_tail_state), 0)
ORDER BY key_ref, timestamp, id;

INSERT INTO usage_workspace_refs (workspace_ref, timestamp, id)
SELECT workspace_ref, timestamp, id FROM usage_records INDEXED BY usage_records_workspace_time
WHERE id <= coalesce((SELECT through_id FROM usage_tail_state), 0)
ORDER BY workspace_ref, timestamp, id;

DROP INDEX usage_records_key_time;
DROP INDEX usage_records_workspace_time;

-- Whatever deletes a record (retention) deletes its references.
CREATE TRIGGER usage_records_scope_refs_delete AFTER DELETE ON usage_records
BEGIN
    DELETE FROM usage_key_refs
    WHERE key_ref = old.key_ref AND timestamp = old.timestamp AND id = old.id;
    DELETE FROM usage_workspace_refs
    WHERE workspace_ref = old.workspace_ref AND timestamp = old.timestamp AND id = old.id;
END;
