//! Usage reports and the request log, for the API and the dashboard. A report's scope must be
//! one the caller may see; a request-log filter arrives already limited to the caller's
//! workspace by its adapter (which knows whether another one was asked for).

use super::{AppError, AppState, Principal};
use crate::domain::{RequestFilter, RequestPage, UsageQuery, UsageReport, UsageScope};

pub async fn usage_report(
    app: &AppState,
    principal: &Principal,
    query: &UsageQuery,
) -> Result<UsageReport, AppError> {
    match &query.scope {
        UsageScope::Key(id) => {
            principal.key(app, id).await?;
        }
        UsageScope::Workspace(id) => principal.check_workspace(id)?,
    }
    Ok(app.store().usage_report(query).await?)
}

/// One page of the request log, newest first.
pub async fn requests(app: &AppState, filter: &RequestFilter) -> Result<RequestPage, AppError> {
    Ok(app.store().requests(filter).await?)
}
