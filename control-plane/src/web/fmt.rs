//! Small formatting helpers shared by the pages.

use maud::{html, Markup};

use crate::clock;

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string (`?a=1&b=2`, or empty) from the non-empty pairs.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", url_encode(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A timestamp as `<time datetime="ISO">…UTC</time>`; `app.js` rewrites the text in the viewer's
/// time zone.
pub fn time(ms: i64) -> Markup {
    let iso = clock::format_rfc3339(ms);
    let text = utc_text(ms);
    html! { time datetime=(iso) title=(iso) { (text) } }
}

/// A date without the time of day (`app.js` shows it in the viewer's time zone).
pub fn date(ms: i64) -> Markup {
    let iso = clock::format_rfc3339(ms);
    let text = iso.get(..10).unwrap_or(&iso).to_owned();
    html! { time datetime=(iso) title=(iso) data-fmt="date" { (text) } }
}

/// `2026-11-23 19:59 UTC`.
pub fn utc_text(ms: i64) -> String {
    let iso = clock::format_rfc3339(ms);
    match (iso.get(..10), iso.get(11..16)) {
        (Some(date), Some(hm)) => format!("{date} {hm} UTC"),
        _ => iso,
    }
}

pub fn optional_time(ms: Option<i64>, none: &str) -> Markup {
    match ms {
        Some(ms) => time(ms),
        None => html! { span.muted { (none) } },
    }
}

/// Milliseconds with a sensible precision: `0.42 ms`, `12.3 ms`, `1,204 ms`.
pub fn duration_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{} ms", count(ms.round() as u64))
    }
}

/// `local` (`YYYY-MM-DDTHH:MM[:SS]`, from a `datetime-local` input) at `tz_minutes` east of UTC
/// as RFC 3339, for the API's own timestamp validation to judge. An RFC 3339 value is kept as is.
pub fn local_to_rfc3339(local: &str, tz_minutes: i32) -> String {
    let local = local.trim();
    if local.is_empty() || clock::parse_rfc3339(local).is_some() {
        return local.to_owned();
    }
    let with_seconds = if local.len() == 16 {
        format!("{local}:00")
    } else {
        local.to_owned()
    };
    let sign = if tz_minutes < 0 { '-' } else { '+' };
    let abs = tz_minutes.unsigned_abs();
    format!("{with_seconds}{sign}{:02}:{:02}", abs / 60, abs % 60)
}

/// The `tz` form field: minutes east of UTC, clamped to real offsets; 0 when absent.
pub fn tz_minutes(field: &str) -> i32 {
    field
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|m| (-14 * 60..=14 * 60).contains(m))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_queries() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(query(&[("a", "x y"), ("b", "")]), "?a=x%20y");
        assert_eq!(query(&[("b", "")]), "");
    }

    #[test]
    fn local_times() {
        assert_eq!(
            local_to_rfc3339("2027-01-01T10:30", 60),
            "2027-01-01T10:30:00+01:00"
        );
        assert_eq!(
            local_to_rfc3339("2027-01-01T10:30", -330),
            "2027-01-01T10:30:00-05:30"
        );
        assert_eq!(
            local_to_rfc3339("2027-01-01T00:00:00Z", 60),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(tz_minutes("120"), 120);
        assert_eq!(tz_minutes("99999"), 0);
    }
}
