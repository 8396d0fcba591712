//! The request log as CSV, for `GET /v1/requests.csv` and the dashboard's export alike: the
//! request log's JSON fields as columns, newest first, at most [`CSV_MAX_ROWS`] rows, read from
//! the store a page at a time.

use super::analytics::{external_keys, page as log_page, scoped};
use super::{AppError, AppState, Principal};
use crate::clock;
use crate::domain::{RequestFilter, RequestRecord};

/// Rows an export holds at most.
pub const CSV_MAX_ROWS: usize = 100_000;
/// Rows read from the store per query (the request log's largest page).
const PAGE_ROWS: u32 = 500;

pub const CSV_HEADER: &str = "request_id,timestamp,key_id,workspace_id,method,endpoint,\
resource_id,response_code,status,duration_ms,client_ip,credits\n";

/// Every row `filter` (and `external_id`) matches that `principal` may see (its `limit` and
/// `cursor` are the export's own), up to the bound.
pub async fn requests_csv(
    app: &AppState,
    principal: &Principal,
    filter: RequestFilter,
    external_id: Option<&str>,
) -> Result<String, AppError> {
    filter.check()?;
    let mut out = String::from(CSV_HEADER);
    let Some(mut filter) = scoped(principal, filter) else {
        return Ok(out);
    };
    let keys = external_keys(app, &filter, external_id).await?;
    filter.limit = PAGE_ROWS;
    filter.cursor = None;
    let mut rows = 0;
    loop {
        let page = log_page(app, &filter, keys.as_deref()).await?;
        for record in &page.records {
            if rows == CSV_MAX_ROWS {
                return Ok(out);
            }
            rows += 1;
            push_row(&mut out, record);
        }
        match page.next_cursor {
            Some(cursor) if !page.records.is_empty() => filter.cursor = Some(cursor),
            _ => return Ok(out),
        }
    }
}

fn push_row(out: &mut String, r: &RequestRecord) {
    let fields = [
        r.request_id.clone(),
        clock::format_rfc3339_millis(r.timestamp),
        r.key_id.clone(),
        r.workspace_id.clone(),
        r.method.clone(),
        r.endpoint.clone(),
        r.resource_id.clone().unwrap_or_default(),
        r.response_code.to_string(),
        r.status.as_str().to_owned(),
        r.duration_ms.to_string(),
        r.client_ip.clone(),
        r.credits.to_string(),
    ];
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push('\n');
}

/// RFC 4180 quoting, plus a leading `'` for values a spreadsheet would run as a formula.
fn csv_field(out: &mut String, value: &str) {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = formula || value.contains([',', '"', '\n', '\r']);
    if quote {
        out.push('"');
        if formula {
            out.push('\'');
        }
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let mut out = String::new();
        csv_field(&mut out, "plain");
        out.push('|');
        csv_field(&mut out, "a,b\"c");
        out.push('|');
        csv_field(&mut out, "=cmd()");
        assert_eq!(out, "plain|\"a,b\"\"c\"|\"'=cmd()\"");
    }
}
