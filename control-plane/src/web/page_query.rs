//! The query string of a usage page: its parameters as the page reads them, and the links that
//! change one of them (the request log's pages, its filters).

use serde::Deserialize;

use super::fmt;

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct UsageQuery {
    pub(super) range: String,
    pub(super) from: String,
    pub(super) to: String,
    pub(super) tz: String,
    pub(super) resource_id: String,
    pub(super) key_id: String,
    pub(super) external_id: String,
    pub(super) date: String,
    pub(super) status: String,
    pub(super) method: String,
    pub(super) endpoint: String,
    pub(super) response_code: String,
    pub(super) cursor: String,
}

/// The page's query string with some parameters replaced (empty values dropped).
pub(super) fn page_query(q: &UsageQuery, overrides: &[(&str, &str)]) -> String {
    let base = [
        ("range", q.range.as_str()),
        ("from", q.from.as_str()),
        ("to", q.to.as_str()),
        ("tz", q.tz.as_str()),
        ("resource_id", q.resource_id.as_str()),
        ("key_id", q.key_id.as_str()),
        ("external_id", q.external_id.as_str()),
        ("date", q.date.as_str()),
        ("status", q.status.as_str()),
        ("method", q.method.as_str()),
        ("endpoint", q.endpoint.as_str()),
        ("response_code", q.response_code.as_str()),
        ("cursor", q.cursor.as_str()),
    ];
    let pairs: Vec<(&str, &str)> = base
        .iter()
        .map(|(k, v)| {
            overrides
                .iter()
                .find(|(ok, _)| ok == k)
                .map_or((*k, *v), |(ok, ov)| (*ok, *ov))
        })
        .collect();
    fmt::query(&pairs)
}
