//! The analytics and console-token reads the pages need, in the shapes of
//! `docs/analytics-api.md`, in one place over the application layer.

use super::session::Principal;
use super::{PageError, WebState};
use crate::app;
use crate::domain;
use crate::domain::{ApiKey, RequestCursor, RequestRecord, UsageQuery, UsageScope, UsageStatus};

/// What a usage page covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Key(&'a str),
    Workspace(&'a str),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
    pub rate_limited: u64,
    /// Credits spent (admitted requests).
    pub credits: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Bucket {
    pub start_ms: i64,
    pub completed: u64,
    pub failed: u64,
    pub rate_limited: u64,
}

#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub method: String,
    pub endpoint: String,
    pub count: u64,
    /// Credits spent on it (admitted requests).
    pub credits: u64,
}

#[derive(Debug, Clone, Default)]
pub struct UsageReport {
    pub interval_ms: i64,
    pub totals: Totals,
    pub by_method: Vec<(String, u64)>,
    pub by_response_code: Vec<(u16, u64)>,
    /// At most 10.
    pub top_endpoints: Vec<EndpointRow>,
    pub series: Vec<Bucket>,
}

/// Request-log filters; `workspace_id` is always set (the page's workspace).
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub workspace_id: String,
    pub key_id: Option<String>,
    /// The keys that carry this owner id (`external_id`).
    pub external_id: Option<String>,
    pub resource_id: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub status: Option<String>,
    pub method: Option<String>,
    pub endpoint: Option<String>,
    pub response_code: Option<u16>,
    pub limit: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RequestRow {
    pub request_id: String,
    pub timestamp_ms: i64,
    pub key_id: String,
    pub method: String,
    pub endpoint: String,
    pub resource_id: Option<String>,
    pub response_code: u16,
    pub status: String,
    pub duration_ms: f64,
    pub client_ip: String,
    pub credits: u64,
}

#[derive(Debug, Clone, Default)]
pub struct RequestPage {
    pub rows: Vec<RequestRow>,
    pub next_cursor: Option<String>,
}

/// Calls of each key this calendar month (UTC), in the order of `keys`.
pub async fn calls_this_month(_state: &WebState, keys: &[ApiKey]) -> Result<Vec<u64>, PageError> {
    Ok(keys.iter().map(|k| k.calls_this_month).collect())
}

/// The report of `[from_ms, to_ms)` from the rollups, with an interval chosen by the store.
pub async fn usage(
    state: &WebState,
    principal: &Principal,
    scope: Scope<'_>,
    from_ms: i64,
    to_ms: i64,
) -> Result<UsageReport, PageError> {
    let scope = match scope {
        Scope::Key(id) => UsageScope::Key(id.to_owned()),
        Scope::Workspace(id) => UsageScope::Workspace(id.to_owned()),
    };
    let query = UsageQuery::new(scope, from_ms, to_ms, None)
        .map_err(|e| PageError::BadRequest(e.to_string()))?;
    let r = app::analytics::usage_report(&state.app, principal, &query, None).await?;
    Ok(UsageReport {
        interval_ms: r.interval_ms,
        totals: Totals {
            total: r.totals.total,
            completed: r.totals.completed,
            failed: r.totals.failed,
            rate_limited: r.totals.rate_limited,
            credits: r.totals.credits,
        },
        by_method: r
            .by_method
            .into_iter()
            .map(|m| (m.method, m.count))
            .collect(),
        by_response_code: r
            .by_response_code
            .into_iter()
            .map(|c| (c.response_code, c.count))
            .collect(),
        top_endpoints: r
            .top_endpoints
            .into_iter()
            .map(|e| EndpointRow {
                method: e.method,
                endpoint: e.endpoint,
                count: e.count,
                credits: e.credits,
            })
            .collect(),
        series: r
            .series
            .into_iter()
            .map(|b| Bucket {
                start_ms: b.start_ms,
                completed: b.completed,
                failed: b.failed,
                rate_limited: b.rate_limited,
            })
            .collect(),
    })
}

fn store_filter(filter: &RequestFilter) -> Result<domain::RequestFilter, PageError> {
    let cursor = match &filter.cursor {
        Some(c) => Some(
            RequestCursor::parse(c)
                .ok_or_else(|| PageError::BadRequest("cursor: invalid".to_owned()))?,
        ),
        None => None,
    };
    Ok(domain::RequestFilter {
        // Always the page's workspace: a key id of another workspace matches nothing.
        workspace_id: Some(filter.workspace_id.clone()),
        key_id: filter.key_id.clone(),
        resource_id: filter.resource_id.clone(),
        from_ms: filter.from_ms,
        to_ms: filter.to_ms,
        status: filter.status.as_deref().and_then(UsageStatus::parse),
        method: filter.method.clone(),
        endpoint: filter.endpoint.clone(),
        response_code: filter.response_code,
        limit: filter.limit,
        cursor,
    })
}

fn row(r: RequestRecord) -> RequestRow {
    RequestRow {
        request_id: r.request_id,
        timestamp_ms: r.timestamp,
        key_id: r.key_id,
        method: r.method,
        endpoint: r.endpoint,
        resource_id: r.resource_id,
        response_code: r.response_code,
        status: r.status.as_str().to_owned(),
        duration_ms: r.duration_ms,
        client_ip: r.client_ip,
        credits: u64::from(r.credits),
    }
}

/// One page of the request log, newest first.
pub async fn requests(
    state: &WebState,
    principal: &Principal,
    filter: &RequestFilter,
) -> Result<RequestPage, PageError> {
    let external_id = filter.external_id.as_deref();
    let page =
        app::analytics::requests(&state.app, principal, store_filter(filter)?, external_id).await?;
    Ok(RequestPage {
        rows: page.records.into_iter().map(row).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    })
}

/// The CSV export of the filtered log, as `GET /v1/requests.csv` writes it.
pub async fn requests_csv(
    state: &WebState,
    principal: &Principal,
    filter: &RequestFilter,
) -> Result<String, PageError> {
    let external_id = filter.external_id.as_deref();
    let store = store_filter(filter)?;
    Ok(app::requests_csv::requests_csv(&state.app, principal, store, external_id).await?)
}
