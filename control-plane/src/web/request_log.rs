//! The request log of a usage page: its filters, the table of requests newest first and its
//! pages (cursor links), for a key or a whole workspace.

use maud::{html, Markup};

use super::data::{RequestFilter, RequestPage};
use super::fmt;
use super::layout::{self};
use super::page_query::{page_query, UsageQuery};
use crate::clock;
use crate::domain::{ApiKey, Workspace};

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
pub(super) const STATUSES: [(&str, &str); 3] = [
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("rate_limited", "Rate limited"),
];

/// Columns of the request log: `(data-col, heading)`.
const COLUMNS: [(&str, &str); 10] = [
    ("request_id", "Request ID"),
    ("timestamp", "Timestamp"),
    ("key", "API key"),
    ("method", "Method"),
    ("endpoint", "Endpoint"),
    ("status", "Status"),
    ("response", "Response"),
    ("duration", "Duration"),
    ("ip", "IP"),
    ("credits", "Credits"),
];

fn status_badge(status: &str) -> Markup {
    let (class, label) = match status {
        "completed" => ("badge badge-success", "Completed"),
        "failed" => ("badge badge-danger", "Failed"),
        "rate_limited" => ("badge badge-orange", "Rate limited"),
        other => ("badge badge-neutral", other),
    };
    html! { span class=(class) { (label) } }
}

/// The first 8 characters of a request id, for the table (the full id is copied on click).
fn short_id(id: &str) -> String {
    match id.char_indices().nth(8) {
        Some((i, _)) => format!("{}…", &id[..i]),
        None => id.to_owned(),
    }
}

fn code_class(code: u16) -> &'static str {
    match code {
        200..=399 => "code code-ok",
        429 => "code code-limited",
        400..=499 => "code code-client",
        _ => "code code-server",
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn request_log(
    base: &str,
    q: &UsageQuery,
    ws: &Workspace,
    key: Option<&ApiKey>,
    keys: &[ApiKey],
    filter: &RequestFilter,
    filter_error: Option<&str>,
    log: &RequestPage,
) -> Markup {
    let overview = key.is_none();
    let columns: Vec<(&str, &str)> = COLUMNS
        .iter()
        .copied()
        .filter(|(c, _)| overview || *c != "key")
        .collect();
    let alias_of = |id: &str| {
        keys.iter()
            .find(|k| k.id == id)
            .map_or_else(|| id.to_owned(), |k| k.alias.clone())
    };
    let active_filters = [
        &q.resource_id,
        &q.external_id,
        &q.date,
        &q.status,
        &q.method,
        &q.endpoint,
        &q.response_code,
    ]
    .iter()
    .any(|v| !v.trim().is_empty())
        || (overview && !q.key_id.is_empty());
    let clear = format!(
        "{base}{}",
        fmt::query(&[
            ("range", q.range.as_str()),
            ("from", q.from.as_str()),
            ("to", q.to.as_str()),
            ("tz", q.tz.as_str())
        ])
    );
    let mut csv_pairs = vec![
        ("from", clock::format_rfc3339(filter.from_ms.unwrap_or(0))),
        ("to", clock::format_rfc3339(filter.to_ms.unwrap_or(0))),
    ];
    for (name, value) in [
        ("key_id", filter.key_id.clone()),
        ("external_id", filter.external_id.clone()),
        ("resource_id", filter.resource_id.clone()),
        ("status", filter.status.clone()),
        ("method", filter.method.clone()),
        ("endpoint", filter.endpoint.clone()),
        ("response_code", filter.response_code.map(|c| c.to_string())),
    ] {
        if let Some(v) = value {
            csv_pairs.push((name, v));
        }
    }
    let csv_refs: Vec<(&str, &str)> = csv_pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let csv_url = format!("/ui/w/{}/requests.csv{}", ws.id, fmt::query(&csv_refs));
    html! {
        section.card.log-card aria-labelledby="log-title" {
            div.log-header {
                h2 #log-title { "Request Log" }
                div.log-tools {
                    details.dropdown.columns-menu {
                        summary.btn.btn-small { (layout::icon_columns()) "Edit columns" }
                        fieldset.dropdown-panel {
                            legend { "Visible columns" }
                            @for (col, label) in &columns {
                                label.check { input type="checkbox" data-col-toggle=(col) checked; (label) }
                            }
                        }
                    }
                    a.btn.btn-small #csv-export href=(csv_url) download { (layout::icon_download()) "Export CSV" }
                }
            }
            form.filters method="get" action=(base) data-tz aria-label="Filter requests" {
                input type="hidden" name="range" value=(q.range);
                input type="hidden" name="from" value=(q.from);
                input type="hidden" name="to" value=(q.to);
                input type="hidden" name="tz" value=(q.tz);
                div.filter-grid {
                    div.field {
                        label for="f-resource" { "Resource ID" }
                        input #f-resource type="text" name="resource_id" value=(q.resource_id) placeholder="e.g. c-42" autocomplete="off";
                    }
                    div.field {
                        label for="f-key" { "API key ID" }
                        @if let Some(key) = key {
                            input #f-key type="text" value=(key.id) readonly aria-describedby="f-key-hint";
                            span.visually-hidden #f-key-hint { "Pre-applied: this page shows one key." }
                        } @else {
                            select #f-key name="key_id" {
                                option value="" { "All keys" }
                                @for k in keys {
                                    option value=(k.id) selected[q.key_id == k.id] { (k.alias) " (" (k.id) ")" }
                                }
                            }
                        }
                    }
                    @if key.is_none() {
                        div.field {
                            label for="f-external" { "External ID" }
                            input #f-external type="text" name="external_id" value=(q.external_id) placeholder="e.g. cus_42" autocomplete="off";
                        }
                    }
                    div.field {
                        label for="f-date" { "Date" }
                        input #f-date type="date" name="date" value=(q.date);
                    }
                    div.field {
                        label for="f-status" { "Status" }
                        select #f-status name="status" {
                            option value="" { "Any" }
                            @for (v, l) in STATUSES { option value=(v) selected[q.status == v] { (l) } }
                        }
                    }
                    div.field {
                        label for="f-method" { "HTTP method" }
                        select #f-method name="method" {
                            option value="" { "Any" }
                            @for m in METHODS { option value=(m) selected[q.method.eq_ignore_ascii_case(m)] { (m) } }
                        }
                    }
                    div.field {
                        label for="f-endpoint" { "API endpoint" }
                        input #f-endpoint type="text" name="endpoint" value=(q.endpoint) placeholder="/v1/candidates/{id}" autocomplete="off" spellcheck="false";
                    }
                    div.field {
                        label for="f-code" { "Response status" }
                        input #f-code type="text" inputmode="numeric" name="response_code" value=(q.response_code) placeholder="e.g. 429" autocomplete="off"
                            aria-invalid=[filter_error.map(|_| "true")];
                    }
                }
                @if let Some(e) = filter_error { p.field-error role="alert" { (e) } }
                div.filter-actions {
                    button.btn.btn-primary.btn-small type="submit" #apply-filters { "Apply" }
                    @if active_filters {
                        a.btn.btn-ghost.btn-small href=(clear) #clear-filters { "Clear filters" }
                    } @else {
                        a.btn.btn-ghost.btn-small href=(clear) #clear-filters aria-disabled="true" { "Clear filters" }
                    }
                }
            }
            div.table-wrap {
                table.table.log #request-log {
                    caption.visually-hidden { "Requests, newest first" }
                    thead {
                        tr {
                            @for (col, label) in &columns {
                                th scope="col" data-col=(col) .num[matches!(*col, "duration" | "credits" | "response")] { (label) }
                            }
                        }
                    }
                    tbody {
                        @if log.rows.is_empty() {
                            tr.empty-row { td colspan=(columns.len()) { "No requests match these filters." } }
                        }
                        @for row in &log.rows {
                            tr data-request-id=(row.request_id) {
                                td data-col="request_id" {
                                    button.id-chip type="button" data-copy=(row.request_id) title={"Copy request ID " (row.request_id)} {
                                        code { (short_id(&row.request_id)) }
                                        span.visually-hidden { " (full ID: " (row.request_id) ")" }
                                    }
                                }
                                td data-col="timestamp" { (fmt::time(row.timestamp_ms)) }
                                @if overview {
                                    td data-col="key" { a href={"/ui/keys/" (row.key_id) "/usage"} { (alias_of(&row.key_id)) } }
                                }
                                td data-col="method" { span.method-badge { (row.method) } }
                                td data-col="endpoint" { span.mono { (row.endpoint) } @if let Some(r) = &row.resource_id { span.muted.small.resource { " · " (r) } } }
                                td data-col="status" { (status_badge(&row.status)) }
                                td.num data-col="response" { span class=(code_class(row.response_code)) { (row.response_code) } }
                                td.num data-col="duration" { (fmt::duration_ms(row.duration_ms)) }
                                td data-col="ip" { span.mono { (row.client_ip) } }
                                td.num data-col="credits" { (row.credits) }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Request log pages" {
                @if !q.cursor.is_empty() {
                    a.btn.btn-small href={(base) (page_query(q, &[("cursor", "")]))} { "First page" }
                }
                @if let Some(next) = &log.next_cursor {
                    a.btn.btn-small #next-page href={(base) (page_query(q, &[("cursor", next)]))} rel="next" { "Next page" }
                }
                span.muted.small { (log.rows.len()) " shown · newest first" }
            }
        }
    }
}
