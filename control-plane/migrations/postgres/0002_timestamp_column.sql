-- The raw records' time column takes SQLite's name, `timestamp` (it was `ts`), so both schemas
-- and the store code use one name. Its indexes follow the column.
ALTER TABLE usage_records RENAME COLUMN ts TO "timestamp";
