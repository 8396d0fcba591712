//! Charts as SVG computed here: donuts, a stacked time series and endpoint bars. Each chart has a
//! text alternative (`role="img"` + `aria-label`, `<title>` per mark) and a visually-hidden data
//! table. Colours are presentation attributes, which the CSP allows (no `style`).

use std::f64::consts::PI;
use std::fmt::Write;

use maud::{html, Markup};

use super::data::{Bucket, EndpointRow};
use super::fmt;

pub const GREEN: &str = "#16a34a";
pub const RED: &str = "#dc2626";
pub const ORANGE: &str = "#f97316";

const PALETTE: [&str; 8] = [
    "#2563eb", "#16a34a", "#f59e0b", "#8b5cf6", "#dc2626", "#0891b2", "#db2777", "#64748b",
];

/// A stable colour per HTTP method.
pub fn method_color(method: &str, index: usize) -> &'static str {
    match method {
        "GET" => "#2563eb",
        "POST" => "#16a34a",
        "PUT" => "#f59e0b",
        "PATCH" => "#8b5cf6",
        "DELETE" => "#dc2626",
        "HEAD" => "#0891b2",
        "OPTIONS" => "#64748b",
        _ => PALETTE[index % PALETTE.len()],
    }
}

/// Response codes coloured by meaning: 2xx greens, 3xx blues, 429 orange, other 4xx purples and
/// ambers, 5xx reds.
pub fn code_color(code: u16, index: usize) -> &'static str {
    const GREENS: [&str; 3] = ["#16a34a", "#4ade80", "#15803d"];
    const BLUES: [&str; 2] = ["#2563eb", "#60a5fa"];
    const FOURS: [&str; 4] = ["#a855f7", "#eab308", "#64748b", "#d946ef"];
    const REDS: [&str; 3] = ["#dc2626", "#f87171", "#991b1b"];
    match code {
        200..=299 => GREENS[index % GREENS.len()],
        300..=399 => BLUES[index % BLUES.len()],
        429 => ORANGE,
        400..=499 => FOURS[index % FOURS.len()],
        500..=599 => REDS[index % REDS.len()],
        _ => "#94a3b8",
    }
}

pub struct Slice {
    pub label: String,
    pub count: u64,
    pub color: &'static str,
}

fn pct(part: u64, total: u64) -> String {
    if total == 0 {
        return "0%".to_owned();
    }
    let p = part as f64 * 100.0 / total as f64;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// A donut with its legend and a hidden table. `id` names the chart for tests and labels.
pub fn donut(id: &str, title: &str, what: &str, slices: &[Slice]) -> Markup {
    let total: u64 = slices.iter().map(|s| s.count).sum();
    let r = 60.0_f64;
    let circumference = 2.0 * PI * r;
    let mut offset = 0.0_f64;
    let arcs: Vec<(&Slice, f64, f64)> = slices
        .iter()
        .filter(|s| s.count > 0)
        .map(|slice| {
            let len = circumference * slice.count as f64 / total as f64;
            let start = offset;
            offset += len;
            (slice, len, start)
        })
        .collect();
    let summary = if total == 0 {
        format!("{title}: no requests in this period.")
    } else {
        let mut s = format!("{title}: ");
        for (i, slice) in slices.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let _ = write!(
                s,
                "{} {} ({})",
                slice.label,
                fmt::count(slice.count),
                pct(slice.count, total)
            );
        }
        s.push('.');
        s
    };
    html! {
        div.donut-chart #(id) {
            svg.donut viewBox="0 0 160 160" width="160" height="160" role="img" aria-label=(summary) {
                circle cx="80" cy="80" r=(r) fill="none" stroke="#eef2f7" stroke-width="22" {}
                @for (slice, len, offset) in &arcs {
                    circle.slice cx="80" cy="80" r=(r) fill="none" stroke=(slice.color) stroke-width="22"
                        stroke-dasharray={(format!("{len:.3}")) " " (format!("{circumference:.3}"))}
                        stroke-dashoffset=(format!("{:.3}", -offset))
                        transform="rotate(-90 80 80)" data-label=(slice.label) data-count=(slice.count) {
                        title { (slice.label) ": " (fmt::count(slice.count)) " (" (pct(slice.count, total)) ")" }
                    }
                }
                text.donut-total x="80" y="78" text-anchor="middle" { (fmt::count(total)) }
                text.donut-caption x="80" y="98" text-anchor="middle" { "requests" }
            }
            @if slices.is_empty() {
                p.muted.small { "No requests in this period." }
            } @else {
                ul.legend aria-hidden="true" {
                    @for slice in slices {
                        li {
                            svg width="10" height="10" aria-hidden="true" { rect width="10" height="10" rx="2" fill=(slice.color) {} }
                            span.legend-label { (slice.label) }
                            span.legend-value { (fmt::count(slice.count)) " · " (pct(slice.count, total)) }
                        }
                    }
                }
            }
            table.visually-hidden {
                caption { (title) }
                thead { tr { th scope="col" { (what) } th scope="col" { "Requests" } th scope="col" { "Share" } } }
                tbody {
                    @for slice in slices {
                        tr { td { (slice.label) } td { (slice.count) } td { (pct(slice.count, total)) } }
                    }
                }
            }
        }
    }
}

/// Top endpoints as a ranked list with proportional bars.
pub fn endpoint_bars(rows: &[EndpointRow]) -> Markup {
    let max = rows.iter().map(|r| r.count).max().unwrap_or(0).max(1);
    html! {
        @if rows.is_empty() {
            p.muted.small #top-endpoints { "No requests in this period." }
        } @else {
            ol.endpoints #top-endpoints {
                @for row in rows {
                    li {
                        div.endpoint-line {
                            span.method-badge { (row.method) }
                            span.endpoint.mono title=(row.endpoint) { (row.endpoint) }
                            span.endpoint-count { (fmt::count(row.count)) }
                            span.endpoint-credits.muted.small title="Credits spent (admitted requests)" { (fmt::count(row.credits)) " cr" }
                        }
                        svg.bar viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true" {
                            rect width="100" height="6" rx="3" fill="#eef2f7" {}
                            rect width=(format!("{:.2}", row.count as f64 * 100.0 / max as f64)) height="6" rx="3" fill="#2563eb" {}
                        }
                    }
                }
            }
        }
    }
}

fn nice_max(max: u64) -> u64 {
    if max <= 4 {
        return 4;
    }
    let magnitude = 10_u64.pow((max as f64).log10().floor() as u32);
    for step in [1, 2, 5, 10] {
        let candidate = step * magnitude;
        if candidate >= max {
            return candidate;
        }
    }
    10 * magnitude
}

/// Requests over time as stacked bars (completed, failed, rate limited). The plot is an SVG
/// stretched to the width (bars only, strokes not scaled); the axis labels are HTML around it,
/// so their text is never distorted at any width.
pub fn series(buckets: &[Bucket], interval_ms: i64) -> Markup {
    const W: f64 = 1000.0;
    const H: f64 = 200.0;
    let max_total = buckets
        .iter()
        .map(|b| b.completed + b.failed + b.rate_limited)
        .max()
        .unwrap_or(0);
    let y_max = nice_max(max_total);
    let n = buckets.len().max(1);
    let slot = W / n as f64;
    let bar_w = (slot * 0.72).max(1.0);
    let y = |v: u64| H - (v as f64 / y_max as f64) * H;
    let by_day = interval_ms >= 3_600_000 && n as i64 * interval_ms > 2 * 86_400_000;
    let total: u64 = buckets
        .iter()
        .map(|b| b.completed + b.failed + b.rate_limited)
        .sum();
    let summary = format!(
        "Requests over time: {} requests in {} intervals, at most {} in one interval.",
        fmt::count(total),
        buckets.len(),
        fmt::count(max_total)
    );
    // Five labels at 0, 1/4, 1/2, 3/4 and the end of the range.
    let first = buckets.first().map_or(0, |b| b.start_ms);
    let end = buckets.last().map_or(0, |b| b.start_ms + interval_ms);
    let ticks: Vec<i64> = (0..5).map(|k| first + (end - first) * k / 4).collect();
    html! {
        div.series-chart #series-chart {
            div.series-plot {
                div.y-axis aria-hidden="true" {
                    span { (fmt::count(y_max)) } span { (fmt::count(y_max / 2)) } span { "0" }
                }
                svg.series viewBox={"0 0 " (W) " " (H)} preserveAspectRatio="none" role="img" aria-label=(summary) {
                    @for tick in [0, y_max / 2, y_max] {
                        line x1="0" x2=(W) y1=(format!("{:.1}", y(tick))) y2=(format!("{:.1}", y(tick)))
                            stroke=(if tick == 0 { "#cbd5e1" } else { "#e5e7eb" }) stroke-width="1" vector-effect="non-scaling-stroke" {}
                    }
                    @for (i, b) in buckets.iter().enumerate() {
                        @let x = slot * i as f64 + (slot - bar_w) / 2.0;
                        @let total = b.completed + b.failed + b.rate_limited;
                        @if total > 0 {
                            g {
                                title { (fmt::utc_text(b.start_ms)) ": " (b.completed) " completed, " (b.failed) " failed, " (b.rate_limited) " rate limited" }
                                @for (base, value, color) in [(0, b.completed, GREEN), (b.completed, b.failed, RED), (b.completed + b.failed, b.rate_limited, ORANGE)] {
                                    @if value > 0 {
                                        rect x=(format!("{x:.2}")) y=(format!("{:.2}", y(base + value))) width=(format!("{bar_w:.2}"))
                                            height=(format!("{:.2}", y(base) - y(base + value))) fill=(color) {}
                                    }
                                }
                            }
                        }
                    }
                }
                div.x-axis aria-hidden="true" {
                    @for t in &ticks {
                        span.ts-label data-ts=(crate::clock::format_rfc3339(*t)) data-fmt=(if by_day { "date" } else { "time" }) {
                            (axis_label(*t, by_day))
                        }
                    }
                }
            }
            ul.legend.legend-inline aria-hidden="true" {
                @for (label, color) in [("Completed", GREEN), ("Failed", RED), ("Rate limited", ORANGE)] {
                    li { svg width="10" height="10" aria-hidden="true" { rect width="10" height="10" rx="2" fill=(color) {} } span { (label) } }
                }
            }
            table.visually-hidden {
                caption { "Requests over time (intervals without requests omitted)" }
                thead { tr { th scope="col" { "Interval start" } th scope="col" { "Completed" } th scope="col" { "Failed" } th scope="col" { "Rate limited" } } }
                tbody {
                    @for b in buckets.iter().filter(|b| b.completed + b.failed + b.rate_limited > 0) {
                        tr { td { (fmt::time(b.start_ms)) } td { (b.completed) } td { (b.failed) } td { (b.rate_limited) } }
                    }
                }
            }
        }
    }
}

/// UTC fallback text of an axis label (`app.js` shows local time).
fn axis_label(ms: i64, by_day: bool) -> String {
    let iso = crate::clock::format_rfc3339(ms);
    if by_day {
        iso.get(5..10).unwrap_or(&iso).to_owned()
    } else {
        iso.get(11..16).unwrap_or(&iso).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_maxima() {
        assert_eq!(nice_max(0), 4);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(480), 500);
        assert_eq!(nice_max(1000), 1000);
    }

    #[test]
    fn donut_has_text_alternative() {
        let html = donut(
            "m",
            "By HTTP method",
            "Method",
            &[
                Slice {
                    label: "GET".into(),
                    count: 3,
                    color: GREEN,
                },
                Slice {
                    label: "POST".into(),
                    count: 1,
                    color: RED,
                },
            ],
        )
        .into_string();
        assert!(html.contains("aria-label=\"By HTTP method: GET 3 (75%), POST 1 (25%).\""));
        assert!(html.contains("<title>GET: 3 (75%)</title>"));
        assert!(html.contains("<caption>By HTTP method</caption>"));
    }
}
