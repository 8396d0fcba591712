-- The per-key count tables' time indexes serve retention only (`DELETE … WHERE minute < $1`),
-- but the planner also took them for the lookup's per-key sums, reading every key's rows of the
-- window and keeping one key's (4.7k lookups/s in `make bench`). BRIN indexes instead: retention
-- still finds old rows by block range, the lookup can only take the primary key (key, time,
-- slot), and an ingest that adds a row maintains one b-tree fewer.
DROP INDEX key_admitted_minutes_time, key_admitted_hours_time, key_instance_buckets_time,
    key_credit_days_time;
CREATE INDEX key_admitted_minutes_time ON key_admitted_minutes USING brin (minute);
CREATE INDEX key_admitted_hours_time ON key_admitted_hours USING brin (hour);
CREATE INDEX key_instance_buckets_time ON key_instance_buckets USING brin (bucket);
CREATE INDEX key_credit_days_time ON key_credit_days USING brin (day);
