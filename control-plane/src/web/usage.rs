//! Key usage and workspace overview: summary cards, donuts by method and response code, top
//! endpoints, requests over time, and the filterable request log (`request_log.rs`, its links in
//! `page_query.rs`) with CSV export. Everything is read through the analytics Store methods
//! (rollups for the charts, an indexed, cursor-paginated log), never by scanning raw records
//! here.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use super::charts::{self, Slice};
use super::data::{self, RequestFilter, RequestPage, Scope, UsageReport};
use super::layout::{self, Nav, Shell};
use super::page_query::UsageQuery;
use super::request_log::{request_log, STATUSES};
use super::session::Principal;
use super::{fmt, html_response, visible_key, visible_workspace, Auth, PageError, WebState};
use crate::app::keys as key_cases;
use crate::clock;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const PAGE_SIZE: u32 = 50;

const RANGES: [(&str, &str, i64); 4] = [
    ("1h", "Last hour", HOUR),
    ("24h", "Last 24 hours", DAY),
    ("7d", "Last 7 days", 7 * DAY),
    ("30d", "Last 30 days", 30 * DAY),
];

/// The period a page covers.
struct Period {
    range: &'static str,
    label: String,
    from_ms: i64,
    to_ms: i64,
    error: Option<String>,
}

fn period(q: &UsageQuery, now: i64) -> Period {
    let to_ms = now - now.rem_euclid(MINUTE) + MINUTE;
    if q.range == "custom" {
        let tz = fmt::tz_minutes(&q.tz);
        let from = clock::parse_rfc3339(&fmt::local_to_rfc3339(&q.from, tz));
        let to = clock::parse_rfc3339(&fmt::local_to_rfc3339(&q.to, tz));
        match (from, to) {
            (Some(f), Some(t)) if f < t && t - f <= 366 * DAY => {
                return Period {
                    range: "custom",
                    label: format!("{} – {}", fmt::utc_text(f), fmt::utc_text(t)),
                    from_ms: f,
                    to_ms: t,
                    error: None,
                }
            }
            (Some(f), Some(t)) if f >= t => {
                return fallback(to_ms, "The custom range must end after it starts.")
            }
            (Some(_), Some(_)) => return fallback(to_ms, "The custom range is at most 366 days."),
            _ => return fallback(to_ms, "Enter both a start and an end for the custom range."),
        }
    }
    let (key, label, len) = RANGES
        .iter()
        .find(|(k, _, _)| *k == q.range)
        .copied()
        .unwrap_or(RANGES[1]);
    Period {
        range: key,
        label: label.to_owned(),
        from_ms: to_ms - len,
        to_ms,
        error: None,
    }
}

fn fallback(to_ms: i64, error: &str) -> Period {
    Period {
        range: "24h",
        label: RANGES[1].1.to_owned(),
        from_ms: to_ms - DAY,
        to_ms,
        error: Some(error.to_owned()),
    }
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// The log filter from the query, or the message of the first bad filter value.
fn log_filter(
    q: &UsageQuery,
    workspace_id: &str,
    fixed_key: Option<&str>,
    period: &Period,
) -> (RequestFilter, Option<String>) {
    let mut error = None;
    let mut filter = RequestFilter {
        workspace_id: workspace_id.to_owned(),
        key_id: fixed_key
            .map(str::to_owned)
            .or_else(|| non_empty(&q.key_id)),
        // A key's own page shows that key: an owner id cannot narrow it further.
        external_id: non_empty(&q.external_id).filter(|_| fixed_key.is_none()),
        resource_id: non_empty(&q.resource_id),
        from_ms: Some(period.from_ms),
        to_ms: Some(period.to_ms),
        status: non_empty(&q.status).filter(|s| STATUSES.iter().any(|(v, _)| v == s)),
        method: non_empty(&q.method).map(|m| m.to_ascii_uppercase()),
        endpoint: non_empty(&q.endpoint),
        response_code: None,
        limit: PAGE_SIZE,
        cursor: non_empty(&q.cursor),
    };
    if let Some(code) = non_empty(&q.response_code) {
        match code.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => filter.response_code = Some(c),
            _ => error = Some("Response status must be an HTTP status code (100–599).".to_owned()),
        }
    }
    if let Some(date) = non_empty(&q.date) {
        let tz = fmt::tz_minutes(&q.tz);
        match clock::parse_rfc3339(&fmt::local_to_rfc3339(&format!("{date}T00:00"), tz)) {
            Some(start) => {
                filter.from_ms = Some(start);
                filter.to_ms = Some(start + DAY);
            }
            None => error = Some("Date must be a calendar date (YYYY-MM-DD).".to_owned()),
        }
    }
    (filter, error)
}

pub async fn key_usage(
    State(state): State<WebState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, PageError> {
    let key = visible_key(&state, &auth, &id).await?;
    let ws = visible_workspace(&state, &auth, &key.workspace_id).await?;
    let period = period(&q, clock::now_ms());
    let (filter, filter_error) = log_filter(&q, &ws.id, Some(&key.id), &period);
    // The report, the log page and the shell are independent reads: run them together.
    let (report, log, shell) = tokio::try_join!(
        data::usage(
            &state,
            auth.principal(),
            Scope::Key(&key.id),
            period.from_ms,
            period.to_ms
        ),
        log_page(&state, auth.principal(), &filter, filter_error.is_some()),
        Shell::load(&state, &auth, Some(&ws)),
    )?;
    let base = format!("/ui/keys/{}/usage", key.id);
    let now = clock::now_ms();
    let content = html! {
        a.back-link href={"/ui/w/" (ws.id) "/keys"} { (layout::icon_back()) "Back to API Keys" }
        div.page-header {
            div {
                h1 { (key.alias) }
                p.muted.key-meta {
                    (super::keys::status_badge(key.status(now)))
                    span.badge.badge-outline { (key.category) }
                    code { (key.id) }
                    button.icon-btn.icon-btn-small type="button" data-copy=(key.id) title="Copy key ID" aria-label="Copy key ID" { (layout::icon_copy()) }
                }
            }
            (range_picker(&base, &q, &period))
        }
        (super::key_limits::summary(&key))
        (dashboard(&report, &period))
        (request_log(&base, &q, &ws, Some(&key), &[], &filter, filter_error.as_deref(), &log))
    };
    Ok(html_response(
        StatusCode::OK,
        shell.render(&format!("{} usage", key.alias), Nav::Keys, content),
    ))
}

pub async fn overview(
    State(state): State<WebState>,
    auth: Auth,
    Path(ws): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, PageError> {
    let ws = visible_workspace(&state, &auth, &ws).await?;
    let keys = key_cases::list(&state.app, auth.principal(), &ws.id).await?;
    let period = period(&q, clock::now_ms());
    let (filter, filter_error) = log_filter(&q, &ws.id, None, &period);
    let (report, log, shell) = tokio::try_join!(
        data::usage(
            &state,
            auth.principal(),
            Scope::Workspace(&ws.id),
            period.from_ms,
            period.to_ms
        ),
        log_page(&state, auth.principal(), &filter, filter_error.is_some()),
        Shell::load(&state, &auth, Some(&ws)),
    )?;
    let base = format!("/ui/w/{}/overview", ws.id);
    let content = html! {
        div.page-header {
            div {
                h1 { "Overview" }
                p.muted { "Usage of every key of " strong { (ws.name) } "." }
            }
            (range_picker(&base, &q, &period))
        }
        (dashboard(&report, &period))
        (request_log(&base, &q, &ws, None, &keys, &filter, filter_error.as_deref(), &log))
    };
    Ok(html_response(
        StatusCode::OK,
        shell.render("Overview", Nav::Overview, content),
    ))
}

/// The log page, or an empty one when a filter value was rejected (its message is shown).
async fn log_page(
    state: &WebState,
    principal: &Principal,
    filter: &RequestFilter,
    rejected: bool,
) -> Result<RequestPage, PageError> {
    if rejected {
        Ok(RequestPage::default())
    } else {
        data::requests(state, principal, filter).await
    }
}

fn range_picker(base: &str, q: &UsageQuery, period: &Period) -> Markup {
    let custom = period.range == "custom";
    html! {
        div.range-picker {
            nav.segmented aria-label="Date range" {
                @for (key, label, _) in RANGES {
                    @let current = period.range == key;
                    a.seg.active[current] href={(base) "?range=" (key)} aria-current=[current.then_some("true")] title=(label) { (key) }
                }
                @if custom {
                    span.seg.active aria-current="true" { "Custom" }
                }
            }
            details.dropdown.custom-range open[period.error.is_some()] {
                summary.btn.btn-small { "Custom range" }
                form.dropdown-panel method="get" action=(base) data-tz {
                    input type="hidden" name="range" value="custom";
                    input type="hidden" name="tz" value=(q.tz);
                    div.field { label for="range-from" { "From" } input #range-from type="datetime-local" name="from" value=(if custom { q.from.as_str() } else { "" }); }
                    div.field { label for="range-to" { "To" } input #range-to type="datetime-local" name="to" value=(if custom { q.to.as_str() } else { "" }); }
                    @if let Some(e) = &period.error { p.field-error role="alert" { (e) } }
                    button.btn.btn-primary.btn-small type="submit" { "Apply range" }
                }
            }
            p.muted.small.range-label { (period.label) }
        }
    }
}

fn dashboard(report: &UsageReport, _period: &Period) -> Markup {
    let t = report.totals;
    let share = |n: u64| {
        if t.total == 0 {
            String::from("—")
        } else {
            format!("{:.1}% of requests", n as f64 * 100.0 / t.total as f64)
        }
    };
    let methods: Vec<Slice> = report
        .by_method
        .iter()
        .enumerate()
        .map(|(i, (m, c))| Slice {
            label: m.clone(),
            count: *c,
            color: charts::method_color(m, i),
        })
        .collect();
    let codes: Vec<Slice> = report
        .by_response_code
        .iter()
        .enumerate()
        .map(|(i, (code, c))| Slice {
            label: code.to_string(),
            count: *c,
            color: charts::code_color(*code, i),
        })
        .collect();
    html! {
        section.cards aria-label="Summary" {
            div.stat-card #card-total { p.stat-label { "Total Requests" } p.stat-value { (fmt::count(t.total)) } p.stat-sub { "All outcomes" } }
            div.stat-card.stat-green #card-completed { p.stat-label { "Completed" } p.stat-value { (fmt::count(t.completed)) } p.stat-sub { (share(t.completed)) } }
            div.stat-card.stat-red #card-failed { p.stat-label { "Failed" } p.stat-value { (fmt::count(t.failed)) } p.stat-sub { (share(t.failed)) } }
            div.stat-card.stat-orange #card-rate-limited { p.stat-label { "Rate Limited" } p.stat-value { (fmt::count(t.rate_limited)) } p.stat-sub { (share(t.rate_limited)) } }
            div.stat-card.stat-blue #card-credits { p.stat-label { "Credits" } p.stat-value { (fmt::count(t.credits)) } p.stat-sub { "Spent by admitted requests" } }
        }
        section.chart-grid aria-label="Charts" {
            div.card.chart-card {
                h2 { "By HTTP Method" }
                (charts::donut("chart-methods", "By HTTP method", "Method", &methods))
            }
            div.card.chart-card {
                h2 { "By Response Status" }
                (charts::donut("chart-codes", "By response status", "Response code", &codes))
            }
            div.card.chart-card {
                h2 { "Top Endpoints" }
                (charts::endpoint_bars(&report.top_endpoints))
            }
        }
        section.card.chart-card.series-card aria-label="Requests over time" {
            h2 { "Requests over time" }
            (charts::series(&report.series, report.interval_ms))
        }
    }
}

/// `GET /ui/w/{ws}/requests.csv?...`: the filtered log as CSV, for this session's workspace only.
pub async fn csv(
    State(state): State<WebState>,
    auth: Auth,
    Path(ws): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, PageError> {
    let ws = visible_workspace(&state, &auth, &ws).await?;
    let now = clock::now_ms();
    let from_ms = clock::parse_rfc3339(&q.from).unwrap_or(now - DAY);
    let to_ms = clock::parse_rfc3339(&q.to).unwrap_or(now);
    let p = Period {
        range: "custom",
        label: String::new(),
        from_ms,
        to_ms,
        error: None,
    };
    let (filter, error) = log_filter(&q, &ws.id, None, &p);
    if let Some(e) = error {
        return Err(PageError::BadRequest(e));
    }
    let body = data::requests_csv(&state, auth.principal(), &filter).await?;
    let disposition = format!("attachment; filename=\"tollgate-requests-{}.csv\"", ws.id);
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
