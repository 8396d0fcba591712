-- Resource references are split into generations of 2^17 record ids (gen = id >> 17), each a
-- small B-tree of its own inside usage_resource_refs (gen leads the key).
--
-- Resource ids are many (every order, user, document...): in one table keyed by resource, each
-- record's reference lands at the end of its own resource's range, on a page of its own, so
-- once the table is larger than a tail step a step of 10,000 records dirtied about 10,000 pages
-- (sustained ingest: 85,600 records/s with the references, 122,500 without). Within the newest
-- generation, a few hundred pages take a whole step. A resource's request log reads each
-- generation that overlaps its time range, newest first, and stops once a page is complete;
-- usage_resource_gens holds each generation's time range for that.
--
-- The ingest writer (RESOURCE_GEN_SHIFT in sqlite_ingest.rs) and the delete trigger below must
-- agree on the shift.

CREATE TABLE usage_resource_refs_by_gen (
    gen         INTEGER NOT NULL,           -- id >> 17
    resource_id TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    id          INTEGER NOT NULL,           -- usage_records.id
    PRIMARY KEY (gen, resource_id, timestamp, id)
) WITHOUT ROWID;

INSERT INTO usage_resource_refs_by_gen (gen, resource_id, timestamp, id)
SELECT id >> 17, resource_id, timestamp, id FROM usage_resource_refs
ORDER BY id >> 17, resource_id, timestamp, id;

CREATE TABLE usage_resource_gens (
    gen    INTEGER PRIMARY KEY,
    min_ts INTEGER NOT NULL,                -- oldest and newest timestamp referenced in it
    max_ts INTEGER NOT NULL
);

INSERT INTO usage_resource_gens (gen, min_ts, max_ts)
SELECT gen, min(timestamp), max(timestamp) FROM usage_resource_refs_by_gen GROUP BY gen;

DROP TRIGGER usage_records_resource_ref_delete;
DROP TABLE usage_resource_refs;
ALTER TABLE usage_resource_refs_by_gen RENAME TO usage_resource_refs;

-- Whatever deletes a record (retention) deletes its reference.
CREATE TRIGGER usage_records_resource_ref_delete AFTER DELETE ON usage_records
WHEN old.resource_id IS NOT NULL
BEGIN
    DELETE FROM usage_resource_refs
    WHERE gen = old.id >> 17 AND resource_id = old.resource_id
      AND timestamp = old.timestamp AND id = old.id;
END;
