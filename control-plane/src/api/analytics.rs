//! Usage analytics and the request log (`docs/analytics-api.md`), for the admin token and, within
//! their workspace, console tokens.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{AppState, PathParam};
use crate::app::requests_csv as export;
use crate::app::{analytics, Principal};
use crate::clock;
use crate::domain::{interval_name, parse_interval, DAY_MS};
use crate::domain::{
    EndpointCount, MethodCount, RequestCursor, RequestFilter, RequestRecord, ResponseCodeCount,
    StatusTotals, UsageQuery, UsageReport, UsageScope, UsageStatus,
};
use crate::error::ApiError;

pub const REQUESTS_LIMIT_DEFAULT: u32 = 50;
pub const REQUESTS_LIMIT_MAX: u32 = 500;

fn bad(param: &str, message: &str) -> ApiError {
    ApiError::invalid(param, message)
}

fn query<T: for<'de> Deserialize<'de>>(raw: Option<&str>) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|e| ApiError::malformed(format!("invalid query string: {e}")))
}

/// An empty parameter (`?key_id=`, as HTML forms send) counts as absent.
fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

fn time_param(param: &str, v: Option<String>) -> Result<Option<i64>, ApiError> {
    given(v)
        .map(|s| {
            clock::parse_rfc3339(&s).ok_or_else(|| {
                bad(
                    param,
                    "must be an RFC 3339 timestamp (2026-11-23T20:00:00Z)",
                )
            })
        })
        .transpose()
}

#[derive(Debug, Deserialize)]
struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    interval: Option<String>,
    external_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UsageView {
    from: String,
    to: String,
    interval: &'static str,
    totals: StatusTotals,
    by_method: Vec<MethodCount>,
    by_response_code: Vec<ResponseCodeCount>,
    top_endpoints: Vec<EndpointCount>,
    series: Vec<SeriesView>,
}

#[derive(Debug, Serialize)]
struct SeriesView {
    start: String,
    completed: u64,
    failed: u64,
    rate_limited: u64,
}

impl From<UsageReport> for UsageView {
    fn from(r: UsageReport) -> Self {
        Self {
            from: clock::format_rfc3339(r.from_ms),
            to: clock::format_rfc3339(r.to_ms),
            interval: interval_name(r.interval_ms),
            totals: r.totals,
            by_method: r.by_method,
            by_response_code: r.by_response_code,
            top_endpoints: r.top_endpoints,
            series: r
                .series
                .into_iter()
                .map(|b| SeriesView {
                    start: clock::format_rfc3339(b.start_ms),
                    completed: b.completed,
                    failed: b.failed,
                    rate_limited: b.rate_limited,
                })
                .collect(),
        }
    }
}

/// `from`/`to` default to the last 24 hours; the range is aligned outwards to the interval.
/// With it, the `external_id` filter.
pub(super) fn usage_query(
    scope: UsageScope,
    raw: Option<&str>,
) -> Result<(UsageQuery, Option<String>), ApiError> {
    let p: UsageParams = query(raw)?;
    let to = time_param("to", p.to)?.unwrap_or_else(clock::now_ms);
    let from = time_param("from", p.from)?.unwrap_or(to - DAY_MS);
    let interval = given(p.interval)
        .map(|s| parse_interval(&s).ok_or_else(|| bad("interval", "must be 1m, 5m, 1h or 1d")))
        .transpose()?;
    Ok((
        UsageQuery::new(scope, from, to, interval)?,
        given(p.external_id),
    ))
}

pub async fn key_usage(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
    RawQuery(raw): RawQuery,
) -> Result<Json<UsageView>, ApiError> {
    let (query, external_id) = usage_query(UsageScope::Key(id), raw.as_deref())?;
    let report =
        analytics::usage_report(&state, &principal, &query, external_id.as_deref()).await?;
    Ok(Json(report.into()))
}

pub async fn workspace_usage(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
    RawQuery(raw): RawQuery,
) -> Result<Json<UsageView>, ApiError> {
    principal.check_workspace(&id)?;
    let (query, external_id) = usage_query(UsageScope::Workspace(id), raw.as_deref())?;
    let report =
        analytics::usage_report(&state, &principal, &query, external_id.as_deref()).await?;
    Ok(Json(report.into()))
}

#[derive(Debug, Default, Deserialize)]
struct RequestParams {
    key_id: Option<String>,
    workspace_id: Option<String>,
    resource_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    status: Option<String>,
    method: Option<String>,
    endpoint: Option<String>,
    response_code: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    external_id: Option<String>,
}

/// The filter of a request-log query (`app::analytics` limits it to the caller's workspace),
/// and its `external_id` (which `app::analytics` resolves to keys).
pub(super) fn request_filter(
    raw: Option<&str>,
    csv: bool,
) -> Result<(RequestFilter, Option<String>), ApiError> {
    let p: RequestParams = query(raw)?;
    let external_id = given(p.external_id);
    let status = given(p.status)
        .map(|s| {
            UsageStatus::parse(&s)
                .ok_or_else(|| bad("status", "must be one of completed, rate_limited, failed"))
        })
        .transpose()?;
    let method = given(p.method)
        .map(|m| {
            let m = m.to_ascii_uppercase();
            let ok = m.len() <= 32
                && m.bytes().all(|b| {
                    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if ok {
                Ok(m)
            } else {
                Err(bad("method", "must be an HTTP method"))
            }
        })
        .transpose()?;
    let response_code = given(p.response_code)
        .map(|c| {
            c.parse::<u16>()
                .ok()
                .filter(|c| *c <= 999)
                .ok_or_else(|| bad("response_code", "must be an integer from 0 to 999"))
        })
        .transpose()?;
    // An export pages through the log itself (`app::requests_csv`).
    let limit = if csv {
        REQUESTS_LIMIT_MAX
    } else {
        given(p.limit)
            .map(|l| {
                l.parse::<u32>()
                    .ok()
                    .filter(|l| (1..=REQUESTS_LIMIT_MAX).contains(l))
                    .ok_or_else(|| bad("limit", "must be an integer from 1 to 500"))
            })
            .transpose()?
            .unwrap_or(REQUESTS_LIMIT_DEFAULT)
    };
    let cursor = if csv {
        None
    } else {
        given(p.cursor)
            .map(|c| {
                RequestCursor::parse(&c)
                    .ok_or_else(|| bad("cursor", "is not a cursor from this API"))
            })
            .transpose()?
    };
    let to_ms = time_param("to", p.to)?;
    let from_ms = time_param("from", p.from)?;
    if let (Some(f), Some(t)) = (from_ms, to_ms) {
        if f >= t {
            return Err(bad("from", "must be before to"));
        }
    }
    let filter = RequestFilter {
        workspace_id: given(p.workspace_id),
        key_id: given(p.key_id),
        resource_id: given(p.resource_id),
        from_ms,
        to_ms,
        status,
        method,
        endpoint: given(p.endpoint),
        response_code,
        limit,
        cursor,
    };
    Ok((filter, external_id))
}

#[derive(Debug, Serialize)]
pub struct RequestView {
    request_id: String,
    timestamp: String,
    key_id: String,
    workspace_id: String,
    method: String,
    endpoint: String,
    resource_id: Option<String>,
    response_code: u16,
    status: UsageStatus,
    duration_ms: f64,
    client_ip: String,
    credits: u32,
}

impl From<RequestRecord> for RequestView {
    fn from(r: RequestRecord) -> Self {
        Self {
            request_id: r.request_id,
            timestamp: clock::format_rfc3339_millis(r.timestamp),
            key_id: r.key_id,
            workspace_id: r.workspace_id,
            method: r.method,
            endpoint: r.endpoint,
            resource_id: r.resource_id,
            response_code: r.response_code,
            status: r.status,
            duration_ms: r.duration_ms,
            client_ip: r.client_ip,
            credits: r.credits,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RequestsView {
    data: Vec<RequestView>,
    next_cursor: Option<String>,
}

pub async fn requests(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> Result<Json<RequestsView>, ApiError> {
    let (filter, external_id) = request_filter(raw.as_deref(), false)?;
    let page = analytics::requests(&state, &principal, filter, external_id.as_deref()).await?;
    Ok(Json(RequestsView {
        data: page.records.into_iter().map(RequestView::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

pub async fn requests_csv(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (filter, external_id) = request_filter(raw.as_deref(), true)?;
    let body = export::requests_csv(&state, &principal, filter, external_id.as_deref()).await?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"requests.csv\""),
    );
    Ok(response)
}
