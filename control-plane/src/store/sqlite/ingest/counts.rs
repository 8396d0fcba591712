//! What one ingest transaction adds to the count tables: records that count alike summed once
//! (a combination and its sums), then the rows of each rollup and count table.

use super::*;

/// Per-minute (hour, day) rollup row: key x bucket x endpoint x method x code x status.
pub(super) type RollupKey<'a> = (&'a str, i64, &'a str, &'a str, u16, UsageStatus);

#[derive(Default)]
pub(super) struct RollupValue<'a> {
    pub(super) workspace_id: &'a str,
    pub(super) count: i64,
    pub(super) credits: i64,
    pub(super) duration_ms: f64,
}

/// Records that count alike in every count table: a transaction sums its records per
/// combination first (one hash per record, none for a run of alike records), then derives the
/// rows of each table from these sums.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Combination<'a> {
    pub(super) key_id: &'a str,
    pub(super) workspace_id: &'a str,
    /// Start of the record's minute: its hour, day and month too.
    pub(super) bucket: i64,
    pub(super) endpoint: &'a str,
    pub(super) method: &'a str,
    pub(super) response_code: u16,
    pub(super) status: UsageStatus,
    pub(super) admitted: bool,
}

#[derive(Clone, Copy, Default)]
pub(super) struct Sums {
    pub(super) count: i64,
    pub(super) credits: i64,
    pub(super) duration_ms: f64,
    pub(super) newest: i64,
}

impl Sums {
    pub(super) fn add(&mut self, r: &UsageRecord) {
        self.count += 1;
        self.credits += i64::from(r.credits);
        self.duration_ms += r.duration_ms;
        self.newest = self.newest.max(r.timestamp);
    }
}

/// The sums of one transaction's stored records.
#[derive(Default)]
pub(super) struct Aggregates<'a> {
    pub(super) combinations: HashMap<Combination<'a>, Sums>,
    /// The combination of the last record added and its sums, not yet in `combinations`.
    pub(super) run: Option<(Combination<'a>, Sums)>,
}

impl<'a> Aggregates<'a> {
    pub(super) fn add(&mut self, r: &'a UsageRecord) {
        let c = Combination {
            key_id: &r.key_id,
            workspace_id: &r.workspace_id,
            bucket: floor_to(r.timestamp, MINUTE_MS),
            endpoint: &r.endpoint,
            method: &r.method,
            response_code: r.response_code,
            status: r.status,
            admitted: r.admitted,
        };
        match &mut self.run {
            Some((run, sums)) if *run == c => sums.add(r),
            _ => {
                self.end_run();
                let mut sums = Sums::default();
                sums.add(r);
                self.run = Some((c, sums));
            }
        }
    }

    pub(super) fn end_run(&mut self) {
        if let Some((c, s)) = self.run.take() {
            let e = self.combinations.entry(c).or_default();
            e.count += s.count;
            e.credits += s.credits;
            e.duration_ms += s.duration_ms;
            e.newest = e.newest.max(s.newest);
        }
    }

    /// The count rows; hour and day rollups only for minutes before `rolled_through` (the
    /// later ones are rolled from the minutes, see [`Writer::roll_up_step`]).
    pub(super) fn into_rows(mut self, rolled_through: i64) -> CountRows<'a> {
        self.end_run();
        let mut rows = CountRows::default();
        for (c, s) in &self.combinations {
            rows.add(c, s, rolled_through);
        }
        rows
    }
}

/// Everything one transaction adds to the count tables, in key order: each table is written
/// in its primary key's order, so consecutive upserts land on the same or adjacent pages.
#[derive(Default)]
pub(super) struct CountRows<'a> {
    /// Per key: minutes, hours, days.
    pub(super) keys: [BTreeMap<RollupKey<'a>, RollupValue<'a>>; 3],
    /// Per workspace (the key slot holds the workspace id): minutes, hours, days.
    pub(super) workspaces: [BTreeMap<RollupKey<'a>, RollupValue<'a>>; 3],
    /// Per key and calendar month (`YYYYMM`): records, and credits of the admitted ones.
    pub(super) month_calls: BTreeMap<(&'a str, i64), (i64, i64)>,
    pub(super) last_used: BTreeMap<&'a str, i64>,
}

pub(super) const BUCKETS: [i64; 3] = [MINUTE_MS, HOUR_MS, DAY_MS];

pub(super) const KEY_TABLES: [(&str, &str); 3] = [
    ("usage_minutes", "minute"),
    ("usage_hours", "hour"),
    ("usage_days", "day"),
];

pub(super) const WORKSPACE_TABLES: [(&str, &str); 3] = [
    ("usage_ws_minutes", "minute"),
    ("usage_ws_hours", "hour"),
    ("usage_ws_days", "day"),
];

impl<'a> CountRows<'a> {
    pub(super) fn add(&mut self, c: &Combination<'a>, s: &Sums, rolled_through: i64) {
        // Only admitted requests spend credits: the rollups' credits are those spent.
        let credits = if c.admitted { s.credits } else { 0 };
        // Hours and days of a minute not rolled yet are left to the roll-up.
        let rollups = if floor_to(c.bucket, MINUTE_MS) < rolled_through {
            BUCKETS.len()
        } else {
            1
        };
        for (i, step) in BUCKETS.iter().enumerate().take(rollups) {
            let bucket = floor_to(c.bucket, *step);
            for (map, scope) in [
                (&mut self.keys[i], c.key_id),
                (&mut self.workspaces[i], c.workspace_id),
            ] {
                let v = map
                    .entry((
                        scope,
                        bucket,
                        c.endpoint,
                        c.method,
                        c.response_code,
                        c.status,
                    ))
                    .or_default();
                v.workspace_id = c.workspace_id;
                v.count += s.count;
                v.credits += credits;
                v.duration_ms += s.duration_ms;
            }
        }
        // Months start at a UTC midnight, so the bucket is in the record's month.
        let month = self
            .month_calls
            .entry((c.key_id, clock::utc_month(c.bucket)))
            .or_default();
        month.0 += s.count;
        month.1 += credits;
        let last = self.last_used.entry(c.key_id).or_insert(s.newest);
        *last = (*last).max(s.newest);
    }
}

pub(super) fn upsert_rollups(
    conn: &Connection,
    table: &str,
    scope_column: &str,
    bucket_column: &str,
    with_workspace: bool,
    rows: &BTreeMap<RollupKey<'_>, RollupValue<'_>>,
) -> rusqlite::Result<()> {
    let (ws_column, ws_value) = if with_workspace {
        (", workspace_id", ", ?10")
    } else {
        ("", "")
    };
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO {table} ({scope_column}, {bucket_column}, endpoint, method, response_code, \
         status, count, credits, duration_ms{ws_column}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9{ws_value}) \
         ON CONFLICT ({scope_column}, {bucket_column}, endpoint, method, response_code, status) \
         DO UPDATE SET count = count + excluded.count, credits = credits + excluded.credits, \
         duration_ms = duration_ms + excluded.duration_ms"
    ))?;
    for (k, v) in rows {
        let base = params![
            k.0,
            k.1,
            k.2,
            k.3,
            k.4,
            k.5.as_str(),
            v.count,
            v.credits,
            v.duration_ms
        ];
        if with_workspace {
            let mut all: Vec<&dyn rusqlite::ToSql> = base.to_vec();
            all.push(&v.workspace_id);
            stmt.execute(all.as_slice())?;
        } else {
            stmt.execute(base)?;
        }
    }
    Ok(())
}
