//! Credit budgets: how many credits a key's admitted requests may spend per calendar period
//! (`docs/protocol.md`), and the period arithmetic every part shares (calendar days and months,
//! UTC).

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, Time};

use super::usage::{floor_to, DAY_MS};

/// How long per-key credit days are kept: a month budget (or a key without a budget, which shows
/// its calendar month) reads back to the 1st, at most 31 days ago.
pub const CREDIT_DAYS_KEPT_MS: i64 = 32 * DAY_MS;

/// The period a budget is spent in; it starts again at the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditPeriod {
    /// A UTC day.
    Day,
    /// A calendar month, UTC: it starts again on the 1st at 00:00.
    Month,
    /// Ever: the budget never starts again.
    Total,
}

impl CreditPeriod {
    pub const ALL: [CreditPeriod; 3] = [Self::Day, Self::Month, Self::Total];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::Total => "total",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The period holding `now_ms`: its start and the next one's (`None` for `total`).
    pub fn bounds(self, now_ms: i64) -> PeriodBounds {
        match self {
            Self::Day => {
                let start = floor_to(now_ms, DAY_MS);
                PeriodBounds {
                    start_ms: start,
                    resets_at_ms: Some(start + DAY_MS),
                }
            }
            Self::Month => {
                let (start, next) = month_bounds(now_ms);
                PeriodBounds {
                    start_ms: start,
                    resets_at_ms: Some(next),
                }
            }
            Self::Total => PeriodBounds {
                start_ms: 0,
                resets_at_ms: None,
            },
        }
    }
}

/// A period's start and the next period's start, Unix ms (UTC midnights, so multiples of
/// 10,000 as the protocol says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodBounds {
    pub start_ms: i64,
    pub resets_at_ms: Option<i64>,
}

/// A key's credit budget: at most `limit` credits per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditBudget {
    pub limit: u64,
    pub period: CreditPeriod,
}

/// The start of the calendar month (UTC) holding `now_ms`, and of the next one.
pub fn month_bounds(now_ms: i64) -> (i64, i64) {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000) else {
        // Beyond what `time` supports (±9999): no real clock gets here; a day then.
        let start = floor_to(now_ms, DAY_MS);
        return (start, start + DAY_MS);
    };
    let (year, month) = (t.year(), t.month());
    let (next_year, next_month) = match month {
        Month::December => (year + 1, Month::January),
        m => (year, m.next()),
    };
    let midnight = |y: i32, m: Month| {
        Date::from_calendar_date(y, m, 1)
            .map(|d| d.with_time(Time::MIDNIGHT).assume_utc())
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
    };
    match (midnight(year, month), midnight(next_year, next_month)) {
        (Ok(start), Ok(next)) => (start, next),
        _ => {
            let start = floor_to(now_ms, DAY_MS);
            (start, start + DAY_MS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_rfc3339;

    fn at(s: &str) -> i64 {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn days_are_utc_days() {
        let b = CreditPeriod::Day.bounds(at("2026-12-02T13:45:10.123Z"));
        assert_eq!(b.start_ms, at("2026-12-02T00:00:00Z"));
        assert_eq!(b.resets_at_ms, Some(at("2026-12-03T00:00:00Z")));
        let b = CreditPeriod::Day.bounds(at("2026-12-03T00:00:00Z"));
        assert_eq!(b.start_ms, at("2026-12-03T00:00:00Z"));
    }

    #[test]
    fn months_are_calendar_months() {
        let b = CreditPeriod::Month.bounds(at("2026-12-31T23:59:59.999Z"));
        assert_eq!(b.start_ms, at("2026-12-01T00:00:00Z"));
        assert_eq!(b.resets_at_ms, Some(at("2027-01-01T00:00:00Z")));
        let b = CreditPeriod::Month.bounds(at("2028-02-01T00:00:00Z"));
        assert_eq!(b.start_ms, at("2028-02-01T00:00:00Z"));
        assert_eq!(b.resets_at_ms, Some(at("2028-03-01T00:00:00Z")));
        let b = CreditPeriod::Month.bounds(at("2028-02-29T12:00:00Z"));
        assert_eq!(b.resets_at_ms, Some(at("2028-03-01T00:00:00Z")));
        assert_eq!(b.start_ms % 10_000, 0);
    }

    #[test]
    fn total_never_resets() {
        let b = CreditPeriod::Total.bounds(at("2026-12-02T13:45:10Z"));
        assert_eq!(b.start_ms, 0);
        assert_eq!(b.resets_at_ms, None);
    }

    #[test]
    fn periods_parse_by_name_only() {
        for p in CreditPeriod::ALL {
            assert_eq!(CreditPeriod::parse(p.as_str()), Some(p));
        }
        assert_eq!(CreditPeriod::parse("week"), None);
        assert_eq!(CreditPeriod::parse("Month"), None);
    }
}
