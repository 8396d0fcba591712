-- Budget leases (docs/protocol.md, "Filter → control plane: budget leases"). Every per-key
-- budget (the quotas on meter `calls`, the credit budget on meter `credits`) is spent against
-- leases: units the control plane reserves for one Envoy until it settles them (charging what it
-- spent) or they expire (charged in full).
--
-- From here on key_admitted_totals, key_admitted_minutes, key_admitted_hours and key_credit_days
-- hold charges, written only when a lease is settled or swept; usage ingest no longer writes
-- them (usage records are analytics only). What ingest counted before stays as charges, so a
-- budget carries on from what it had spent.
--
-- key_instance_buckets (per-instance counts behind the lookup's `recent`) goes: leases replace
-- that split.
--
-- key_month_calls gains the credits of the month's admitted records, so a key without a budget
-- still shows the credits of its calendar month (`credits_used`); filled from the per-day
-- credits kept (32 days: the current month whole).

CREATE TABLE key_leases (
    id         TEXT PRIMARY KEY NOT NULL,          -- `{instance}.{suffix}`, chosen by the filter
    key_id     TEXT NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    meter      TEXT NOT NULL CHECK (meter IN ('calls', 'credits')),
    instance   TEXT NOT NULL,
    units      INTEGER NOT NULL,
    granted_at INTEGER NOT NULL,                   -- Unix ms
    expires_at INTEGER NOT NULL                    -- Unix ms
);

CREATE INDEX key_leases_key ON key_leases (key_id, meter);
CREATE INDEX key_leases_expiry ON key_leases (expires_at);

DROP TABLE key_instance_buckets;

ALTER TABLE key_month_calls ADD COLUMN credits INTEGER NOT NULL DEFAULT 0;

UPDATE key_month_calls SET credits = coalesce(
    (SELECT sum(d.credits) FROM key_credit_days d
     WHERE d.key_id = key_month_calls.key_id
       AND CAST(strftime('%Y%m', d.day / 1000, 'unixepoch') AS INTEGER) = key_month_calls.month),
    0);
