-- The time indexes of the per-key count tables and of the rollups serve retention
-- (`DELETE … WHERE minute < $1`), but the planner also took them for one key's or workspace's
-- rows: the lookup's per-key sums and the usage reports read every key's rows of the range and
-- kept one key's (4.7k lookups/s in `make bench`; a key's 7-day report read 8,931 hour rows for
-- its 459). BRIN indexes instead (rows arrive in time order): retention still finds old rows by
-- block range, reads of one key or workspace take the primary key (scope, time, …), and an
-- ingest or a roll-up that adds a row maintains one b-tree fewer.
DROP INDEX key_admitted_minutes_time, key_admitted_hours_time, key_instance_buckets_time,
    key_credit_days_time;
CREATE INDEX key_admitted_minutes_time ON key_admitted_minutes USING brin (minute);
CREATE INDEX key_admitted_hours_time ON key_admitted_hours USING brin (hour);
CREATE INDEX key_instance_buckets_time ON key_instance_buckets USING brin (bucket);
CREATE INDEX key_credit_days_time ON key_credit_days USING brin (day);

DROP INDEX usage_minutes_time, usage_hours_time, usage_days_time, usage_ws_minutes_time,
    usage_ws_hours_time, usage_ws_days_time;
CREATE INDEX usage_minutes_time ON usage_minutes USING brin (minute);
CREATE INDEX usage_hours_time ON usage_hours USING brin (hour);
CREATE INDEX usage_days_time ON usage_days USING brin (day);
CREATE INDEX usage_ws_minutes_time ON usage_ws_minutes USING brin (minute);
CREATE INDEX usage_ws_hours_time ON usage_ws_hours USING brin (hour);
CREATE INDEX usage_ws_days_time ON usage_ws_days USING brin (day);
