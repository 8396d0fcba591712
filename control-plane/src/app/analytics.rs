//! Usage reports and the request log, for the API and the dashboard. A report's scope must be
//! one the caller may see; the request log of a caller with a workspace is limited to it. An
//! `external_id` narrows either to the keys that carry it, resolved here to the keys of the
//! scope's workspace (every workspace for the admin's unscoped log).

use super::{AppError, AppState, Principal};
use crate::domain::{
    ExternalId, RequestCursor, RequestFilter, RequestPage, UsageQuery, UsageReport, UsageScope,
};
use crate::store::StoreError;

/// The report of `query`; with `external_id`, of the scope's keys that carry it only.
pub async fn usage_report(
    app: &AppState,
    principal: &Principal,
    query: &UsageQuery,
    external_id: Option<&str>,
) -> Result<UsageReport, AppError> {
    let external_id = external_id.map(ExternalId::parse).transpose()?;
    let narrowed = match (&query.scope, &external_id) {
        (UsageScope::Key(id), x) => {
            let key = principal.key(app, id).await?;
            match x {
                Some(x) if key.external_id.as_deref() != Some(x.as_str()) => {
                    Some(UsageScope::Keys(Vec::new()))
                }
                _ => None,
            }
        }
        (UsageScope::Workspace(id), None) => {
            principal.check_workspace(id)?;
            None
        }
        (UsageScope::Workspace(id), Some(x)) => {
            principal.check_workspace(id)?;
            let keys = app.store().keys_with_external_id(Some(id), x).await?;
            Some(UsageScope::Keys(keys.into_iter().map(|k| k.id).collect()))
        }
        (UsageScope::Keys(ids), _) => {
            for id in ids {
                principal.key(app, id).await?;
            }
            None
        }
    };
    match narrowed {
        Some(scope) => {
            let query = UsageQuery {
                scope,
                ..query.clone()
            };
            Ok(app.store().usage_report(&query).await?)
        }
        None => Ok(app.store().usage_report(query).await?),
    }
}

/// One page of the request log, newest first; with `external_id`, of the keys that carry it.
pub async fn requests(
    app: &AppState,
    principal: &Principal,
    filter: RequestFilter,
    external_id: Option<&str>,
) -> Result<RequestPage, AppError> {
    filter.check()?;
    let Some(filter) = scoped(principal, filter) else {
        return Ok(RequestPage::default());
    };
    let keys = external_keys(app, &filter, external_id).await?;
    page(app, &filter, keys.as_deref()).await
}

/// The keys an `external_id` narrows the (scoped) log `filter` to, within its workspace (or
/// every workspace) and its `key_id`; `None` without one.
pub(super) async fn external_keys(
    app: &AppState,
    filter: &RequestFilter,
    external_id: Option<&str>,
) -> Result<Option<Vec<String>>, AppError> {
    let Some(external_id) = external_id else {
        return Ok(None);
    };
    let external_id = ExternalId::parse(external_id)?;
    let keys = match app
        .store()
        .keys_with_external_id(filter.workspace_id.as_deref(), &external_id)
        .await
    {
        Ok(keys) => keys,
        // The log of a workspace that does not exist is empty, not missing.
        Err(StoreError::WorkspaceNotFound) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut ids: Vec<String> = keys.into_iter().map(|k| k.id).collect();
    if let Some(key_id) = &filter.key_id {
        ids.retain(|id| id == key_id);
    }
    Ok(Some(ids))
}

/// One page of `filter`, or with `keys` of those keys only: each key's page, merged newest
/// first (the cursor, a position in time, goes on in every key's log alike).
pub(super) async fn page(
    app: &AppState,
    filter: &RequestFilter,
    keys: Option<&[String]>,
) -> Result<RequestPage, AppError> {
    let Some(keys) = keys else {
        return Ok(app.store().requests(filter).await?);
    };
    let mut records = Vec::new();
    let mut more = false;
    for key in keys {
        let mut one = filter.clone();
        one.key_id = Some(key.clone());
        let page = app.store().requests(&one).await?;
        more |= page.next_cursor.is_some();
        records.extend(page.records);
    }
    records.sort_by_key(|r| std::cmp::Reverse((r.timestamp, r.id)));
    let limit = filter.limit.max(1) as usize;
    more |= records.len() > limit;
    records.truncate(limit);
    let next_cursor = if more {
        records.last().map(|r| RequestCursor {
            timestamp: r.timestamp,
            id: r.id,
        })
    } else {
        None
    };
    Ok(RequestPage {
        records,
        next_cursor,
    })
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
