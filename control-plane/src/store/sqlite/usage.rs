//! SQLite: the request log (ingest: `ingest/`), read on one reader connection in one read
//! transaction (one snapshot), on a blocking thread; and the rollup rows a usage report reads
//! (the report itself is shared: `store/sql/report.rs`).

use rusqlite::Connection;

use crate::domain::{RequestFilter, RequestPage, RequestRecord, UsageQuery, UsageReport};
use crate::store::rows::page_of;
use crate::store::sql::report::{self, ReportSource};
use crate::store::sql::{QueryBuilder, Row};
use crate::store::sqlite::ingest::{status_code, status_from_code};
use crate::store::sqlite::statement::{self, sqlite_error};
use crate::store::sqlite::SqliteStore;
use crate::store::{StoreError, StoreResult};

struct RecordRow {
    id: i64,
    request_id: String,
    timestamp: i64,
    key_id: String,
    workspace_id: String,
    method: String,
    endpoint: String,
    resource_id: Option<String>,
    response_code: i64,
    status: i64,
    duration_ms: f64,
    client_ip: String,
    credits: i64,
    admitted: bool,
    instance: String,
}

impl RecordRow {
    fn from_row(r: &Row) -> StoreResult<Self> {
        Ok(Self {
            id: r.get("id")?,
            request_id: r.get("request_id")?,
            timestamp: r.get("timestamp")?,
            key_id: r.get("key_id")?,
            workspace_id: r.get("workspace_id")?,
            method: r.get("method")?,
            endpoint: r.get("endpoint")?,
            resource_id: r.get("resource_id")?,
            response_code: r.get("response_code")?,
            status: r.get("status")?,
            duration_ms: r.get("duration_ms")?,
            client_ip: r.get("client_ip")?,
            credits: r.get("credits")?,
            admitted: r.get("admitted")?,
            instance: r.get("instance")?,
        })
    }
}

/// `work` on a reader connection inside one read transaction.
fn in_snapshot<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.execute_batch("BEGIN").map_err(sqlite_error)?;
    let result = work(conn);
    // A read transaction ends at once whichever way it went.
    conn.execute_batch("COMMIT").map_err(sqlite_error)?;
    result
}

/// The rows of a built query.
fn fetch(conn: &Connection, q: QueryBuilder) -> StoreResult<Vec<RecordRow>> {
    let (sql, values) = q.build();
    statement::rows(conn, &sql, values)?
        .iter()
        .map(RecordRow::from_row)
        .collect()
}

impl TryFrom<RecordRow> for RequestRecord {
    type Error = StoreError;

    fn try_from(r: RecordRow) -> StoreResult<Self> {
        let status = status_from_code(r.status).ok_or_else(|| {
            StoreError::Backend(format!("unknown status {} in usage_records", r.status).into())
        })?;
        Ok(RequestRecord {
            id: r.id,
            request_id: r.request_id,
            timestamp: r.timestamp,
            key_id: r.key_id,
            workspace_id: r.workspace_id,
            method: r.method,
            endpoint: r.endpoint,
            resource_id: r.resource_id,
            response_code: u16::try_from(r.response_code).unwrap_or(0),
            status,
            duration_ms: r.duration_ms,
            client_ip: r.client_ip,
            credits: u32::try_from(r.credits).unwrap_or(0),
            admitted: r.admitted,
            instance: r.instance,
        })
    }
}

impl SqliteStore {
    pub(super) async fn report(&self, query: &UsageQuery) -> StoreResult<UsageReport> {
        report::usage_report(&*self.db, query, rollup_rows).await
    }

    pub(super) async fn request_page(&self, filter: &RequestFilter) -> StoreResult<RequestPage> {
        let filter = filter.clone();
        let mut reader = self.db.readers.lease().await?;
        reader
            .run(move |conn| in_snapshot(conn, |conn| request_page(conn, &filter)))
            .await
    }
}

fn request_page(conn: &Connection, filter: &RequestFilter) -> StoreResult<RequestPage> {
    let limit = filter.limit.max(1);
    // The most selective reference table the filter has: resource, key, workspace, else
    // the idempotency keys (every record, by time).
    let refs = match (&filter.resource_id, &filter.key_id, &filter.workspace_id) {
        (Some(resource_id), _, _) => Refs::Resource(resource_id.as_str()),
        (None, Some(key_id), _) => Refs::Key(key_id.as_str()),
        (None, None, Some(workspace_id)) => Refs::Workspace(workspace_id.as_str()),
        (None, None, None) => Refs::Time,
    };
    let rows = referenced_rows(conn, filter, refs, limit)?;
    let records = rows
        .into_iter()
        .map(RequestRecord::try_from)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(page_of(records, limit))
}

/// The request log through a reference table, newest first, at most `limit + 1` rows: the
/// records it references (in key order) and the records above its `through_id` (the ingest
/// writer's bounded tail, scanned by id), read in the caller's snapshot and merged.
fn referenced_rows(
    conn: &Connection,
    filter: &RequestFilter,
    refs: Refs<'_>,
    limit: u32,
) -> StoreResult<Vec<RecordRow>> {
    let page = limit as usize + 1;
    let mut referenced = match refs {
        Refs::Resource(_) => {
            // By generation (0011), newest first, in groups of 1, 2, 4... generations (a
            // resource found in every generation fills its page from the first; a rare one
            // takes a few queries, not one per generation). Once a page is complete and its
            // oldest row is newer than everything the next generation holds, done.
            let (sql, values) = resource_gens(filter).build();
            let gens = statement::rows(conn, &sql, values)?
                .iter()
                .map(|r| Ok((r.get("gen")?, r.get("max_ts")?)))
                .collect::<StoreResult<Vec<(i64, i64)>>>()?;
            let mut rows: Vec<RecordRow> = Vec::new();
            let (mut next, mut group) = (0, 1);
            while let Some(&(_, max_ts)) = gens.get(next) {
                if rows.len() >= page && rows.last().is_some_and(|r| r.timestamp > max_ts) {
                    break;
                }
                let these = &gens[next..gens.len().min(next + group)];
                let mut q = referenced_query(refs);
                q.push(" AND x.gen IN (")
                    .push_list(these.iter().map(|&(gen, _)| gen))
                    .push(")");
                push_filters(&mut q, filter, "x");
                push_page(&mut q, "x", limit);
                rows = merge_newest_first(rows, fetch(conn, q)?, page);
                next += these.len();
                group = (group * 2).min(RESOURCE_GENS_PER_QUERY);
            }
            rows
        }
        Refs::Key(_) | Refs::Workspace(_) | Refs::Time => {
            let mut q = referenced_query(refs);
            push_filters(&mut q, filter, "x");
            push_page(&mut q, "x", limit);
            fetch(conn, q)?
        }
    };
    if let Refs::Time = refs {
        // Rows migrated by 0004 get their idempotency key once the writer has hashed them;
        // until then they are found by the partial index of rows without a hash.
        let mut unhashed = select_records(
            "FROM usage_records r INDEXED BY usage_records_unhashed \
             WHERE r.rid_hash IS NULL \
             AND r.id <= coalesce((SELECT through_id FROM usage_tail_state), 0)",
        );
        push_filters(&mut unhashed, filter, "r");
        push_page(&mut unhashed, "r", limit);
        referenced = merge_newest_first(referenced, fetch(conn, unhashed)?, page);
    }
    // NOT INDEXED: the tail is found by its id range (the rowid), never through an index
    // that would walk older records. Key and workspace are among the filters. The page's
    // ids first, then its rows: names are read for the page only, not for every tail row
    // the sort looks at (an unfiltered tail of 50,000 rows: ~100 ms -> a few ms).
    let mut tail = select_records(
        "FROM usage_records r WHERE r.id IN (SELECT r.id FROM usage_records r NOT INDEXED \
         WHERE r.id > coalesce((SELECT through_id FROM usage_tail_state), 0)",
    );
    if let Refs::Resource(resource_id) = refs {
        tail.push(" AND r.resource_id = ").push_bind(resource_id);
    }
    push_filters(&mut tail, filter, "r");
    push_page(&mut tail, "r", limit);
    tail.push(") ORDER BY r.timestamp DESC, r.id DESC");
    Ok(merge_newest_first(referenced, fetch(conn, tail)?, page))
}

/// The records a reference table names for `refs`, before the filters and the page. CROSS JOIN:
/// walk the references in key order (newest first) and stop at the limit (a group of resource
/// generations is sorted instead).
fn referenced_query(refs: Refs<'_>) -> QueryBuilder {
    let (table, column) = refs.table();
    let from = format!("FROM {table} x CROSS JOIN usage_records r ON r.id = x.id WHERE ");
    let mut q = select_records(&from);
    match refs {
        Refs::Resource(resource_id) => {
            q.push(format!("x.{column} = ")).push_bind(resource_id);
        }
        Refs::Key(name) | Refs::Workspace(name) => {
            q.push(format!(
                "x.{column} = (SELECT id FROM usage_names WHERE name = "
            ))
            .push_bind(name)
            .push(")");
        }
        Refs::Time => {
            q.push("1 = 1");
        }
    }
    q
}

/// At most this many generations in one request-log query (SQLite's bound parameters).
const RESOURCE_GENS_PER_QUERY: usize = 256;

/// The resource reference generations (0011) that may hold records in the filter's time range
/// (and before its cursor): `(gen, max_ts)`, newest first.
fn resource_gens(filter: &RequestFilter) -> QueryBuilder {
    let mut q = QueryBuilder::new("SELECT gen, max_ts FROM usage_resource_gens WHERE 1 = 1");
    if let Some(v) = filter.from_ms {
        q.push(" AND max_ts >= ").push_bind(v);
    }
    if let Some(v) = filter.to_ms {
        q.push(" AND min_ts < ").push_bind(v);
    }
    if let Some(c) = filter.cursor {
        q.push(" AND min_ts <= ").push_bind(c.timestamp);
    }
    q.push(" ORDER BY max_ts DESC, gen DESC");
    q
}

/// A report's rollup rows (see [`report::RollupRows`]). An hour or day table holds the minutes before
/// `through_minute` (migration 0009); the minutes from there on are read from the minute
/// rollup, in the same statement, so the sum is exact.
fn rollup_rows(source: &ReportSource) -> String {
    let scope_column = source.scope_column;
    let scope = source.scope_condition("SELECT value FROM json_each($1)");
    let rows = |table: &str, column: &str, since: &str| {
        format!(
            "SELECT {column} AS bucket, endpoint, method, response_code, status, count, credits \
             FROM {table} WHERE {scope} AND {column} >= {since} AND {column} < $3"
        )
    };
    if source.column == "minute" {
        return format!("({})", rows(source.table, source.column, "$2"));
    }
    let minutes = if scope_column == "workspace_id" {
        "usage_ws_minutes"
    } else {
        "usage_minutes"
    };
    format!(
        "({} UNION ALL {})",
        rows(source.table, source.column, "$2"),
        rows(
            minutes,
            "minute",
            "max($2, (SELECT through_minute FROM usage_rollup_state))"
        )
    )
}

/// The request log's reference tables (filled by the ingest writer up to `through_id`).
#[derive(Clone, Copy)]
enum Refs<'a> {
    /// `usage_request_keys` (0007), every record by time (no scope).
    Time,
    /// `usage_resource_refs` (0006).
    Resource(&'a str),
    /// `usage_key_refs` (0008), by key id.
    Key(&'a str),
    /// `usage_workspace_refs` (0008), by workspace id.
    Workspace(&'a str),
}

impl Refs<'_> {
    /// The table and its leading column.
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Refs::Resource(_) => ("usage_resource_refs", "resource_id"),
            Refs::Key(_) => ("usage_key_refs", "key_ref"),
            Refs::Workspace(_) => ("usage_workspace_refs", "workspace_ref"),
            Refs::Time => ("usage_request_keys", "timestamp"),
        }
    }
}

/// The request log's columns (names resolved from usage_names) for `usage_records r`, then
/// `from_where` (which must end inside a WHERE clause).
fn select_records(from_where: &str) -> QueryBuilder {
    let mut qb = QueryBuilder::new(
        "SELECT r.id, r.request_id, r.timestamp, \
         (SELECT name FROM usage_names WHERE id = r.key_ref) AS key_id, \
         (SELECT name FROM usage_names WHERE id = r.workspace_ref) AS workspace_id, \
         (SELECT name FROM usage_names WHERE id = r.method_ref) AS method, \
         (SELECT name FROM usage_names WHERE id = r.endpoint_ref) AS endpoint, \
         r.resource_id, r.response_code, r.status, r.duration_ms, r.client_ip, r.credits, \
         r.admitted, (SELECT name FROM usage_names WHERE id = r.instance_ref) AS instance ",
    );
    qb.push(from_where);
    qb
}

/// Every filter but `resource_id` (the callers apply it), on `usage_records r`; time and
/// cursor on `order`'s `timestamp` and `id` (`r`, or the references `x`, so their key serves
/// the range).
fn push_filters(qb: &mut QueryBuilder, filter: &RequestFilter, order: &str) {
    // Names are stored as references into usage_names: filters compare references (a name
    // never stored matches nothing), the page reads the names of its rows only.
    let by_name = |qb: &mut QueryBuilder, column: &str, name: &Option<String>| {
        if let Some(v) = name {
            qb.push(format!(
                " AND r.{column} = (SELECT id FROM usage_names WHERE name = "
            ))
            .push_bind(v.as_str())
            .push(")");
        }
    };
    by_name(qb, "workspace_ref", &filter.workspace_id);
    by_name(qb, "key_ref", &filter.key_id);
    if let Some(v) = filter.from_ms {
        qb.push(format!(" AND {order}.timestamp >= ")).push_bind(v);
    }
    if let Some(v) = filter.to_ms {
        qb.push(format!(" AND {order}.timestamp < ")).push_bind(v);
    }
    if let Some(v) = filter.status {
        qb.push(" AND r.status = ").push_bind(status_code(v));
    }
    by_name(qb, "method_ref", &filter.method);
    by_name(qb, "endpoint_ref", &filter.endpoint);
    if let Some(v) = filter.response_code {
        qb.push(" AND r.response_code = ").push_bind(v);
    }
    if let Some(c) = filter.cursor {
        // The first term alone bounds an index range whose key has the timestamp but not the
        // id right after it (usage_request_keys: timestamp, rid_hash, id).
        qb.push(format!(" AND {order}.timestamp <= "))
            .push_bind(c.timestamp)
            .push(format!(" AND ({order}.timestamp, {order}.id) < ("))
            .push_bind(c.timestamp)
            .push(", ")
            .push_bind(c.id)
            .push(")");
    }
}

/// Newest first (then by storage order), one row more than the page to know if more follow.
fn push_page(qb: &mut QueryBuilder, order: &str, limit: u32) {
    qb.push(format!(
        " ORDER BY {order}.timestamp DESC, {order}.id DESC LIMIT "
    ))
    .push_bind(i64::from(limit) + 1);
}

/// The first `n` rows of two lists each sorted newest first (timestamp, then id, descending).
fn merge_newest_first(a: Vec<RecordRow>, b: Vec<RecordRow>, n: usize) -> Vec<RecordRow> {
    let mut out = Vec::with_capacity(n.min(a.len() + b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while out.len() < n {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => (x.timestamp, x.id) > (y.timestamp, y.id),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_a { a.next() } else { b.next() };
        out.extend(next);
    }
    out
}
