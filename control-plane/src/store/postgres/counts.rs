//! What a group of records adds beside the records themselves: per-minute aggregates appended
//! to `usage_tail` (rolled into the analytics rollups by `rollup.rs`), the per-key month counts
//! of one slot (`calls_this_month` and the month's credits) and `last_used_at`. Each is summed in
//! memory first, so a group writes one row per distinct combination, not per record. Usage
//! records charge no budget (the leases do, `store/sql/leases.rs`).

use std::collections::BTreeMap;

use sqlx::PgConnection;

use crate::clock;
use crate::domain::{floor_to, UsageRecord, LAST_USED_RESOLUTION_MS, MINUTE_MS};
use crate::store::StoreResult;

/// (key, workspace, minute, endpoint, method, response code, status) of a tail row.
type TailKey<'a> = (&'a str, &'a str, i64, &'a str, &'a str, i64, &'static str);

/// What a group of batches adds to the tail and to one slot of the per-key month counts, each map
/// in the order its rows are written.
#[derive(Default)]
pub(super) struct BatchCounts<'a> {
    tail: BTreeMap<TailKey<'a>, (i64, i64, f64)>,
    /// Per key and calendar month (`YYYYMM`): records, and credits of the admitted ones.
    month_calls: BTreeMap<(&'a str, i64), (i64, i64)>,
    last_used: BTreeMap<&'a str, i64>,
}

impl<'a> BatchCounts<'a> {
    pub(super) fn add(&mut self, r: &'a UsageRecord) {
        let key = r.key_id.as_str();
        // Only admitted requests spend credits: the rollups' credits are those spent.
        let credits = if r.admitted { i64::from(r.credits) } else { 0 };
        let tail = self
            .tail
            .entry((
                key,
                &r.workspace_id,
                floor_to(r.timestamp, MINUTE_MS),
                &r.endpoint,
                &r.method,
                i64::from(r.response_code),
                r.status.as_str(),
            ))
            .or_default();
        tail.0 += 1;
        tail.1 += credits;
        tail.2 += r.duration_ms;
        let month = self
            .month_calls
            .entry((key, clock::utc_month(r.timestamp)))
            .or_default();
        month.0 += 1;
        month.1 += credits;
        let last = self.last_used.entry(key).or_insert(r.timestamp);
        *last = (*last).max(r.timestamp);
    }
}

/// A table a group adds rows or sums to: its key columns and its summed columns, each with its
/// SQL array type, in the order [`Columns`] binds them.
struct SumTable {
    table: &'static str,
    keys: &'static [(&'static str, &'static str)],
    sums: &'static [(&'static str, &'static str)],
    /// The sums are added to the group's slot of an existing row (false: rows are appended, as
    /// to the tail).
    upsert: bool,
}

const KEY: (&str, &str) = ("key_id", "text");

/// Every table a group writes beside the records, in the order of the statement's CTEs (table
/// then key order for the row locks, see `ingest.rs`).
const SUM_TABLES: [SumTable; 2] = [
    SumTable {
        table: "usage_tail",
        keys: &[
            KEY,
            ("workspace_id", "text"),
            ("minute", "int8"),
            ("endpoint", "text"),
            ("method", "text"),
            ("response_code", "int8"),
            ("status", "text"),
        ],
        sums: &[
            ("count", "int8"),
            ("credits", "int8"),
            ("duration_ms", "float8"),
        ],
        upsert: false,
    },
    SumTable {
        table: "key_month_calls",
        keys: &[KEY, ("month", "int8")],
        sums: &[("calls", "int8"), ("credits", "int8")],
        upsert: true,
    },
];

/// The one statement of [`write_sums`]: a CTE per table of [`SUM_TABLES`], each inserting from
/// `unnest` of its columns' arrays; `$1` is the slot.
fn sums_sql() -> String {
    let mut param = 1;
    let mut ctes = Vec::with_capacity(SUM_TABLES.len());
    for (i, t) in SUM_TABLES.iter().enumerate() {
        let columns: Vec<&(&str, &str)> = t.keys.iter().chain(t.sums).collect();
        let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        let arrays: Vec<String> = columns
            .iter()
            .map(|(_, ty)| {
                param += 1;
                format!("${param}::{ty}[]")
            })
            .collect();
        let from = format!("unnest({}) AS u({})", arrays.join(", "), names.join(", "));
        let cte = if t.upsert {
            let keys: Vec<&str> = t.keys.iter().map(|(name, _)| *name).collect();
            let adds: Vec<String> = t
                .sums
                .iter()
                .map(|(c, _)| format!("{c} = {table}.{c} + excluded.{c}", table = t.table))
                .collect();
            format!(
                "s{i} AS (INSERT INTO {table} ({names}, slot) SELECT {names}, $1 FROM {from} \
                 ON CONFLICT ({keys}, slot) DO UPDATE SET {adds})",
                table = t.table,
                names = names.join(", "),
                keys = keys.join(", "),
                adds = adds.join(", "),
            )
        } else {
            format!(
                "s{i} AS (INSERT INTO {table} ({names}) SELECT {names} FROM {from})",
                table = t.table,
                names = names.join(", "),
            )
        };
        ctes.push(cte);
    }
    format!("WITH {} SELECT 1", ctes.join(", "))
}

/// The arrays bound to [`sums_sql`], one per column of [`SUM_TABLES`], in order.
#[derive(Default)]
struct Columns<'a> {
    query: Vec<Column<'a>>,
}

enum Column<'a> {
    Text(Vec<&'a str>),
    Int(Vec<i64>),
    Float(Vec<f64>),
}

impl<'a> Columns<'a> {
    fn text(&mut self, values: impl Iterator<Item = &'a str>) {
        self.query.push(Column::Text(values.collect()));
    }

    fn int(&mut self, values: impl Iterator<Item = i64>) {
        self.query.push(Column::Int(values.collect()));
    }

    fn float(&mut self, values: impl Iterator<Item = f64>) {
        self.query.push(Column::Float(values.collect()));
    }
}

/// Appends the group's aggregates to the tail and adds its month counts to `slot`'s rows, in one
/// statement (one round trip and one plan, whatever the group's size).
pub(super) async fn write_sums(
    conn: &mut PgConnection,
    counts: &BatchCounts<'_>,
    slot: i16,
) -> StoreResult<()> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(sums_sql);
    let mut c = Columns::default();
    let tail = &counts.tail;
    c.text(tail.keys().map(|k| k.0));
    c.text(tail.keys().map(|k| k.1));
    c.int(tail.keys().map(|k| k.2));
    c.text(tail.keys().map(|k| k.3));
    c.text(tail.keys().map(|k| k.4));
    c.int(tail.keys().map(|k| k.5));
    c.text(tail.keys().map(|k| k.6));
    c.int(tail.values().map(|v| v.0));
    c.int(tail.values().map(|v| v.1));
    c.float(tail.values().map(|v| v.2));
    let months = &counts.month_calls;
    c.text(months.keys().map(|k| k.0));
    c.int(months.keys().map(|k| k.1));
    c.int(months.values().map(|v| v.0));
    c.int(months.values().map(|v| v.1));

    let mut query = sqlx::query(&SQL).bind(slot);
    for column in &c.query {
        query = match column {
            Column::Text(v) => query.bind(v),
            Column::Int(v) => query.bind(v),
            Column::Float(v) => query.bind(v),
        };
    }
    query.execute(&mut *conn).await?;
    Ok(())
}

/// `last_used_at` of the keys whose stored value (as locked at the start) is missing or older
/// than [`LAST_USED_RESOLUTION_MS`] before their newest record: rarely any, so batches rarely
/// wait for each other here. The first record of a key always sets it, before `delete_key` can
/// see the key without it. `stored` is a key's `last_used_at` as locked (`None`: not a key of
/// the group).
pub(super) async fn write_last_used(
    conn: &mut PgConnection,
    counts: &BatchCounts<'_>,
    stored: impl Fn(&str) -> Option<Option<i64>>,
) -> StoreResult<()> {
    let (ids, times): (Vec<&str>, Vec<i64>) = counts
        .last_used
        .iter()
        .filter(|(id, t)| {
            stored(id).is_some_and(|at| at.is_none_or(|at| at <= **t - LAST_USED_RESOLUTION_MS))
        })
        .map(|(id, t)| (*id, *t))
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    // Row locks in key order first (an UPDATE … FROM takes them in plan order).
    sqlx::query("SELECT 1 FROM api_keys WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE api_keys k SET last_used_at = u.t \
         FROM unnest($1::text[], $2::int8[]) AS u(id, t) \
         WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.t)",
    )
    .bind(&ids)
    .bind(&times)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
