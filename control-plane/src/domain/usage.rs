//! Usage records, analytics and console tokens as the store and the API see them, plus the
//! arithmetic every backend shares (interval choice, bucket alignment, rolling windows, cursors).

use serde::Serialize;

use super::names::ValidationError;

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// Longest quota window (`monthly` = 30 days); per-key minute counts older than this plus an
/// hour can be dropped.
pub const LONGEST_WINDOW_MS: i64 = 30 * DAY_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageStatus {
    Completed,
    RateLimited,
    Failed,
}

impl UsageStatus {
    pub const ALL: [UsageStatus; 3] = [Self::Completed, Self::RateLimited, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::RateLimited => "rate_limited",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A validated usage record (`validate::usage_record` builds it from the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub request_id: String,
    pub timestamp: i64,
    pub key_id: String,
    pub workspace_id: String,
    pub method: String,
    pub endpoint: String,
    pub resource_id: Option<String>,
    pub response_code: u16,
    pub status: UsageStatus,
    pub duration_ms: f64,
    pub client_ip: String,
    pub credits: u32,
    pub admitted: bool,
    pub instance: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: Vec<IngestRejection>,
}

/// A record the store refused; `position` indexes the slice given to `ingest_usage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRejection {
    pub position: usize,
    pub request_id: Option<String>,
    pub error: ValidationError,
}

/// Start of the rolling window of length `window_ms` at `now_ms`, at minute granularity: the
/// minute containing `now_ms - window_ms` counts whole (a window may count up to a minute more,
/// never less).
pub fn window_start(now_ms: i64, window_ms: i64) -> i64 {
    floor_to(now_ms - window_ms, MINUTE_MS)
}

pub fn floor_to(t: i64, step: i64) -> i64 {
    t - t.rem_euclid(step)
}

pub fn ceil_to(t: i64, step: i64) -> i64 {
    let r = t.rem_euclid(step);
    if r == 0 {
        t
    } else {
        t - r + step
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageScope {
    Key(String),
    Workspace(String),
    /// These keys together (those of an `external_id`; existing keys, none = an empty report).
    Keys(Vec<String>),
}

/// `from_ms`/`to_ms` are multiples of `interval_ms` (see [`UsageQuery::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub scope: UsageScope,
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval_ms: i64,
}

/// The intervals a series can use, finest first.
pub const INTERVALS: [(&str, i64); 4] = [
    ("1m", MINUTE_MS),
    ("5m", 5 * MINUTE_MS),
    ("1h", HOUR_MS),
    ("1d", DAY_MS),
];
/// Points of an automatically chosen series.
pub const AUTO_MAX_POINTS: i64 = 200;
/// Points of a series whose interval the caller chose.
pub const MAX_POINTS: i64 = 2000;

pub fn interval_name(interval_ms: i64) -> &'static str {
    INTERVALS
        .iter()
        .find(|(_, ms)| *ms == interval_ms)
        .map_or("1d", |(name, _)| name)
}

pub fn parse_interval(s: &str) -> Option<i64> {
    INTERVALS
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, ms)| *ms)
}

fn points(from_ms: i64, to_ms: i64, interval_ms: i64) -> i64 {
    (ceil_to(to_ms, interval_ms) - floor_to(from_ms, interval_ms)) / interval_ms
}

impl UsageQuery {
    /// Aligns `[from_ms, to_ms)` outwards to whole intervals (UTC: minutes, hours, days), so the
    /// series buckets tile the range and the totals equal their sum. Without `interval_ms` the
    /// finest interval giving at most 200 points is chosen.
    pub fn new(
        scope: UsageScope,
        from_ms: i64,
        to_ms: i64,
        interval_ms: Option<i64>,
    ) -> Result<Self, ValidationError> {
        if from_ms >= to_ms {
            return Err(ValidationError {
                field: "from".to_owned(),
                message: "must be before to".to_owned(),
            });
        }
        let interval_ms = match interval_ms {
            Some(i) => {
                if points(from_ms, to_ms, i) > MAX_POINTS {
                    return Err(ValidationError {
                        field: "interval".to_owned(),
                        message: format!(
                            "gives more than {MAX_POINTS} points for this range; use a longer one"
                        ),
                    });
                }
                i
            }
            None => INTERVALS
                .iter()
                .map(|(_, ms)| *ms)
                .find(|&i| points(from_ms, to_ms, i) <= AUTO_MAX_POINTS)
                .unwrap_or(DAY_MS),
        };
        if points(from_ms, to_ms, interval_ms) > MAX_POINTS {
            return Err(ValidationError {
                field: "from".to_owned(),
                message: format!("range is too long (at most {MAX_POINTS} days)"),
            });
        }
        Ok(Self {
            scope,
            from_ms: floor_to(from_ms, interval_ms),
            to_ms: ceil_to(to_ms, interval_ms),
            interval_ms,
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusTotals {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    pub rate_limited: u64,
    /// Credits spent: of admitted requests only.
    pub credits: u64,
}

impl StatusTotals {
    pub fn add(&mut self, status: UsageStatus, n: u64) {
        self.total += n;
        match status {
            UsageStatus::Completed => self.completed += n,
            UsageStatus::Failed => self.failed += n,
            UsageStatus::RateLimited => self.rate_limited += n,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MethodCount {
    pub method: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseCodeCount {
    pub response_code: u16,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointCount {
    pub method: String,
    pub endpoint: String,
    pub count: u64,
    /// Credits spent on it: of admitted requests only.
    pub credits: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeriesBucket {
    pub start_ms: i64,
    pub completed: u64,
    pub failed: u64,
    pub rate_limited: u64,
}

/// Counts sorted by count, largest first (ties by name); `series` zero-filled over the range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageReport {
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval_ms: i64,
    pub totals: StatusTotals,
    pub by_method: Vec<MethodCount>,
    pub by_response_code: Vec<ResponseCodeCount>,
    /// At most [`TOP_ENDPOINTS`].
    pub top_endpoints: Vec<EndpointCount>,
    pub series: Vec<SeriesBucket>,
}

pub const TOP_ENDPOINTS: usize = 10;

/// Position in the request log (newest first): the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCursor {
    pub timestamp: i64,
    pub id: i64,
}

impl RequestCursor {
    pub fn encode(&self) -> String {
        format!("{:x}.{:x}", self.timestamp, self.id)
    }

    pub fn parse(s: &str) -> Option<Self> {
        let (t, id) = s.split_once('.')?;
        let hex = |v: &str| {
            (!v.is_empty() && v.len() <= 16 && v.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| i64::from_str_radix(v, 16).ok())
                .flatten()
        };
        Some(Self {
            timestamp: hex(t)?,
            id: hex(id)?,
        })
    }
}

/// Every field narrows; `None` = any. `to_ms` is exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFilter {
    pub workspace_id: Option<String>,
    pub key_id: Option<String>,
    pub resource_id: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub status: Option<UsageStatus>,
    pub method: Option<String>,
    pub endpoint: Option<String>,
    pub response_code: Option<u16>,
    pub limit: u32,
    pub cursor: Option<RequestCursor>,
}

/// The longest text a request-log filter may hold: as long as what a usage record may store.
const FILTER_TEXT_MAX: [(&str, usize); 4] = [
    ("workspace_id", 64),
    ("key_id", 64),
    ("resource_id", 256),
    ("endpoint", 512),
];

impl RequestFilter {
    /// The filter's texts are what a record could hold (no control characters, not longer than
    /// a record's), else the error naming the parameter: such a filter could match nothing, and
    /// a NUL byte is not even text to PostgreSQL.
    pub fn check(&self) -> Result<(), ValidationError> {
        let texts = [
            &self.workspace_id,
            &self.key_id,
            &self.resource_id,
            &self.endpoint,
        ];
        for ((field, max), text) in FILTER_TEXT_MAX.into_iter().zip(texts) {
            let Some(text) = text else { continue };
            if text.chars().count() > max {
                return Err(ValidationError::new(
                    field,
                    format!("must be at most {max} characters"),
                ));
            }
            if text.chars().any(char::is_control) {
                return Err(ValidationError::new(
                    field,
                    "must not contain control characters",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// Storage order; with `timestamp` it makes the cursor.
    pub id: i64,
    pub request_id: String,
    pub timestamp: i64,
    pub key_id: String,
    pub workspace_id: String,
    pub method: String,
    pub endpoint: String,
    pub resource_id: Option<String>,
    pub response_code: u16,
    pub status: UsageStatus,
    pub duration_ms: f64,
    pub client_ip: String,
    pub credits: u32,
    pub admitted: bool,
    pub instance: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestPage {
    pub records: Vec<RequestRecord>,
    /// Set when more rows may follow.
    pub next_cursor: Option<RequestCursor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleToken {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewConsoleToken {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub created_at: i64,
    /// SHA-256 hex of the token.
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: i64, to: i64, interval: Option<i64>) -> UsageQuery {
        UsageQuery::new(UsageScope::Key("k".into()), from, to, interval).unwrap()
    }

    #[test]
    fn auto_interval_keeps_at_most_200_points() {
        let t = 1_800_000_000_000; // a whole hour
        assert_eq!(q(t, t + HOUR_MS, None).interval_ms, MINUTE_MS);
        assert_eq!(q(t, t + 200 * MINUTE_MS, None).interval_ms, MINUTE_MS);
        assert_eq!(
            q(t + 1, t + 200 * MINUTE_MS + 1, None).interval_ms,
            5 * MINUTE_MS
        );
        assert_eq!(q(t, t + DAY_MS, None).interval_ms, HOUR_MS);
        assert_eq!(q(t, t + 8 * DAY_MS, None).interval_ms, HOUR_MS);
        assert_eq!(q(t, t + 30 * DAY_MS, None).interval_ms, DAY_MS);
    }

    #[test]
    fn range_is_aligned_outwards() {
        let t = 1_800_000_000_000;
        let u = q(t + 90_000, t + 7 * HOUR_MS + 1, Some(HOUR_MS));
        assert_eq!((u.from_ms, u.to_ms), (t, t + 8 * HOUR_MS));
    }

    #[test]
    fn bad_ranges_name_the_parameter() {
        let err = UsageQuery::new(UsageScope::Key("k".into()), 10, 10, None).unwrap_err();
        assert_eq!(err.field, "from");
        let err = UsageQuery::new(UsageScope::Key("k".into()), 0, 30 * DAY_MS, Some(MINUTE_MS))
            .unwrap_err();
        assert_eq!(err.field, "interval");
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = RequestCursor {
            timestamp: 1_800_000_000_123,
            id: 42,
        };
        assert_eq!(RequestCursor::parse(&c.encode()), Some(c));
        for bad in ["", ".", "x.1", "1.", "1", "1.2.3", "-1.2"] {
            assert_eq!(RequestCursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn windows_start_on_a_minute() {
        assert_eq!(window_start(DAY_MS + 61_000, DAY_MS), 60_000);
        assert_eq!(ceil_to(1, 10), 10);
        assert_eq!(ceil_to(10, 10), 10);
        assert_eq!(floor_to(-1, 10), -10);
    }
}
