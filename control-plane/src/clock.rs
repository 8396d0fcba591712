//! Time as the storage sees it (integer Unix milliseconds) and as the API shows it
//! (RFC 3339 UTC, with milliseconds only when they are not zero).

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

pub fn now_ms() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    // i128 -> i64 cannot overflow for the years `time` supports (±9999).
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Parses any RFC 3339 timestamp (any offset); sub-millisecond digits are truncated. `None`
/// also for an instant outside the years 0000-9999 in UTC (`0000-01-01T00:00:00+01:00`), which
/// RFC 3339 cannot show: the API could not write it back.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let year = t.checked_to_offset(UtcOffset::UTC)?.year();
    (0..=9999).contains(&year).then(|| unix_ms(t))
}

/// The calendar month (UTC) of `ms` as `YYYYMM` (`202611`).
pub fn utc_month(ms: i64) -> i64 {
    match OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => i64::from(t.year()) * 100 + i64::from(u8::from(t.month())),
        // Beyond what `time` supports (±9999): no real record gets here.
        Err(_) => 0,
    }
}

/// RFC 3339 UTC with milliseconds always shown (`2026-11-23T19:59:58.000Z`), for records.
pub fn format_rfc3339_millis(ms: i64) -> String {
    let s = format_rfc3339(ms);
    match s.strip_suffix('Z') {
        Some(base) if !base.contains('.') => format!("{base}.000Z"),
        _ => s,
    }
}

pub fn format_rfc3339(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        // Only reachable for values this API never stores (beyond year 9999).
        return ms.to_string();
    };
    let t = t.to_offset(UtcOffset::UTC);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    match t.millisecond() {
        0 => format!("{base}Z"),
        millis => format!("{base}.{millis:03}Z"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_whole_seconds_and_millis() {
        assert_eq!(
            parse_rfc3339("2027-01-01T00:00:00Z"),
            Some(1_798_761_600_000)
        );
        assert_eq!(format_rfc3339(1_798_761_600_000), "2027-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(1_798_761_600_042),
            "2027-01-01T00:00:00.042Z"
        );
        assert_eq!(
            parse_rfc3339("2027-01-01T00:00:00.042Z"),
            Some(1_798_761_600_042)
        );
    }

    #[test]
    fn converts_offsets_to_utc_and_truncates_sub_millis() {
        assert_eq!(
            parse_rfc3339("2027-01-01T02:00:00.0429+02:00"),
            Some(1_798_761_600_042)
        );
    }

    #[test]
    fn rejects_non_rfc3339() {
        for s in [
            "",
            "2027-01-01",
            "2027-01-01T00:00:00",
            "tomorrow",
            "1798761600000",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
    }

    #[test]
    fn rejects_instants_rfc3339_cannot_show_in_utc() {
        // Found by the api_query fuzz target: an offset carried these past year 0000 or 9999
        // in UTC, and the API wrote them back as `-001-12-31T23:59:00Z` or a bare number.
        for s in [
            "0000-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59.999999999-23:59",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
        for s in ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"] {
            let ms = parse_rfc3339(s).unwrap();
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms), "{s}");
        }
    }

    #[test]
    fn months_change_at_utc_midnight_on_the_first() {
        let first = parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
        assert_eq!(utc_month(first), 202612);
        assert_eq!(utc_month(first - 1), 202611);
        assert_eq!(
            utc_month(parse_rfc3339("2026-12-01T00:30:00+01:00").unwrap()),
            202611
        );
    }

    #[test]
    fn now_is_recent() {
        assert!(now_ms() > 1_700_000_000_000);
    }
}
