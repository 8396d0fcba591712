//! Usage reports and the request log, for the API and the dashboard. A report's scope must be
//! one the caller may see; the request log of a caller with a workspace is limited to it.

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
pub async fn requests(
    app: &AppState,
    principal: &Principal,
    filter: RequestFilter,
) -> Result<RequestPage, AppError> {
    match scoped(principal, filter) {
        Some(filter) => Ok(app.store().requests(&filter).await?),
        None => Ok(RequestPage::default()),
    }
}

/// `filter` limited to what `principal` may see: its own workspace when it has one. `None`
/// when it asked for another workspace (nothing there can match).
pub(super) fn scoped(principal: &Principal, mut filter: RequestFilter) -> Option<RequestFilter> {
    if let Some(own) = principal.scope() {
        match &filter.workspace_id {
            Some(asked) if asked != own => return None,
            _ => filter.workspace_id = Some(own.to_owned()),
        }
    }
    Some(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(workspace_id: Option<&str>) -> RequestFilter {
        RequestFilter {
            workspace_id: workspace_id.map(str::to_owned),
            ..RequestFilter::default()
        }
    }

    #[test]
    fn a_console_token_reads_its_own_workspace_only() {
        let console = Principal::Console {
            workspace_id: "ws_a".into(),
            token_id: "ct_1".into(),
        };
        let own = |f: Option<RequestFilter>| f.and_then(|f| f.workspace_id);
        assert_eq!(own(scoped(&console, asking(None))).as_deref(), Some("ws_a"));
        assert_eq!(
            own(scoped(&console, asking(Some("ws_a")))).as_deref(),
            Some("ws_a")
        );
        assert_eq!(scoped(&console, asking(Some("ws_b"))), None);
        // The admin reads what it asks for, every workspace included.
        assert_eq!(own(scoped(&Principal::Admin, asking(None))), None);
        assert_eq!(
            own(scoped(&Principal::Admin, asking(Some("ws_b")))).as_deref(),
            Some("ws_b")
        );
    }
}
