//! API Keys page: the list, activate/deactivate and delete. Generating a key is `key_form.rs`;
//! showing a new secret and rotating one, `key_secret.rs`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, Nav, Shell};
use super::{
    data, fmt, html_response, parse_form, see_other, visible_key, visible_workspace, Auth,
    FormBody, PageError, WebState,
};
use crate::app::keys::{self as key_cases, PatchKey};
use crate::app::ErrorKind;
use crate::clock;
use crate::domain::{ApiKey, KeyStatus};

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    done: String,
    #[serde(default)]
    key: String,
}

pub async fn list(
    State(state): State<WebState>,
    auth: Auth,
    Path(ws): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    let ws = visible_workspace(&state, &auth, &ws).await?;
    let keys = key_cases::list(&state.app, auth.principal(), &ws.id).await?;
    let calls = data::calls_this_month(&state, &keys).await?;
    let shell = Shell::load(&state, &auth, Some(&ws)).await?;
    let now = clock::now_ms();
    let alias_of = |id: &str| {
        keys.iter()
            .find(|k| k.id == id)
            .map_or_else(|| "The key".to_owned(), |k| format!("“{}”", k.alias))
    };
    let notice: Option<(&str, String)> = match q.done.as_str() {
        "activated" => Some(("success", format!("{} is active again.", alias_of(&q.key)))),
        "deactivated" => Some((
            "success",
            format!(
                "{} is deactivated. The edge rejects it within the key cache TTL.",
                alias_of(&q.key)
            ),
        )),
        "deleted" => Some(("success", "The API key was deleted.".to_owned())),
        "has_history" => Some((
            "error",
            "This key has request history and cannot be deleted; deactivate it instead.".to_owned(),
        )),
        _ => None,
    };
    let csrf = auth.session.csrf();
    let content = html! {
        div.page-header {
            div {
                h1 { "API Keys" }
                p.muted { "Keys authenticate calls to your API at the edge. Each key tracks its own usage." }
            }
            a.btn.btn-primary href={"/ui/w/" (ws.id) "/keys/new"} { (layout::icon_plus()) "Generate API Key" }
        }
        @if let Some((kind, text)) = &notice {
            div class={"alert alert-" (kind)} role="status" { (text) }
        }
        div.card {
            @if keys.is_empty() {
                div.empty {
                    (layout::icon_key())
                    p { strong { "No API keys yet" } }
                    p.muted { "Generate a key to start calling the API through Tollgate." }
                }
            } @else {
                div.table-wrap {
                    table.table #keys-table {
                        caption.visually-hidden { "API keys of " (ws.name) }
                        thead {
                            tr {
                                th scope="col" { "Name" }
                                th scope="col" { "Description" }
                                th scope="col" { "Category" }
                                th scope="col" { "Status" }
                                th scope="col" { "Created" }
                                th scope="col" { "Last used" }
                                th.num.wrap scope="col" { "Calls this month" }
                                th.actions-col scope="col" { "Actions" }
                            }
                        }
                        tbody {
                            @for (key, calls) in keys.iter().zip(&calls) {
                                (key_row(key, *calls, now, csrf))
                            }
                        }
                    }
                }
            }
        }
        p.muted.small { "Calls this month count every request of the calendar month (UTC), admitted or not." }
    };
    Ok(html_response(
        StatusCode::OK,
        shell.render("API Keys", Nav::Keys, content),
    ))
}

pub(super) fn status_badge(status: KeyStatus) -> Markup {
    let class = match status {
        KeyStatus::Active => "badge badge-success",
        KeyStatus::Inactive => "badge badge-neutral",
        KeyStatus::Expired => "badge badge-warning",
    };
    html! { span class=(class) { (status.as_str()) } }
}

fn key_row(key: &ApiKey, calls: u64, now: i64, csrf: &str) -> Markup {
    let status = key.status(now);
    let has_history = key.last_used_at.is_some() || calls > 0;
    html! {
        tr data-key-id=(key.id) {
            td {
                div.key-name { (key.alias) }
                div.muted.small {
                    code { (key.prefix) "…" }
                    @if let Some(x) = &key.external_id { " · " span.external-id title="External ID" { (x) } }
                }
            }
            td.desc { @if let Some(d) = &key.description { (d) } @else { span.muted { "—" } } }
            td.badge-cell { span.badge.badge-outline { (key.category) } }
            td.status-cell.badge-cell { (status_badge(status)) }
            td.date data-label="Created" { (fmt::date(key.created_at)) }
            td.date data-label="Last used" { (fmt::optional_time(key.last_used_at, "Never")) }
            td.num.calls data-label="Calls this month" { (fmt::count(calls)) }
            td.actions {
                div.row-actions {
                    a.icon-btn href={"/ui/keys/" (key.id) "/usage"} title="Usage"
                        aria-label={"Usage of " (key.alias)} { (layout::icon_chart()) }
                    button.icon-btn type="button" data-copy=(key.id) title="Copy key ID"
                        aria-label={"Copy key ID of " (key.alias)} { (layout::icon_copy()) }
                    form.inline method="post" action={"/ui/keys/" (key.id) "/" (if key.active { "deactivate" } else { "activate" })} {
                        input type="hidden" name="csrf" value=(csrf);
                        @if key.active {
                            button.icon-btn type="submit" title="Deactivate" data-action="deactivate"
                                aria-label={"Deactivate " (key.alias)} { (layout::icon_power()) }
                        } @else {
                            button.icon-btn.icon-btn-on type="submit" title="Activate" data-action="activate"
                                aria-label={"Activate " (key.alias)} { (layout::icon_power()) }
                        }
                    }
                    a.icon-btn href={"/ui/keys/" (key.id) "/rotate"} title="Rotate"
                        aria-label={"Rotate " (key.alias)} { (layout::icon_rotate()) }
                    @if has_history {
                        span.tooltip-wrap {
                            button.icon-btn type="button" disabled
                                title="Cannot delete: this key has request history. Deactivate it instead."
                                aria-label={"Delete " (key.alias) " (unavailable: the key has request history; deactivate it instead)"}
                                data-action="delete" { (layout::icon_trash()) }
                        }
                    } @else {
                        form.inline method="post" action={"/ui/keys/" (key.id) "/delete"}
                            data-confirm={"Delete “" (key.alias) "”? Integrations using it stop working immediately. This cannot be undone."} {
                            input type="hidden" name="csrf" value=(csrf);
                            button.icon-btn.icon-btn-danger type="submit" title="Delete" data-action="delete"
                                aria-label={"Delete " (key.alias)} { (layout::icon_trash()) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CsrfForm {
    csrf: String,
}

async fn set_active(
    state: WebState,
    auth: Auth,
    id: String,
    body: Bytes,
    active: bool,
) -> Result<Response, PageError> {
    let key = visible_key(&state, &auth, &id).await?;
    let form: CsrfForm = parse_form(&body)?;
    auth.check_csrf(&form.csrf)?;
    let patch = PatchKey {
        active: Some(Some(active)),
        ..PatchKey::default()
    };
    key_cases::update(&state.app, auth.principal(), &key.id, patch).await?;
    let done = if active { "activated" } else { "deactivated" };
    Ok(see_other(&format!(
        "/ui/w/{}/keys{}",
        key.workspace_id,
        fmt::query(&[("done", done), ("key", &key.id)])
    )))
}

pub async fn activate(
    State(state): State<WebState>,
    auth: Auth,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Response, PageError> {
    set_active(state, auth, id, body, true).await
}

pub async fn deactivate(
    State(state): State<WebState>,
    auth: Auth,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Response, PageError> {
    set_active(state, auth, id, body, false).await
}

pub async fn delete(
    State(state): State<WebState>,
    auth: Auth,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Response, PageError> {
    let key = visible_key(&state, &auth, &id).await?;
    let form: CsrfForm = parse_form(&body)?;
    auth.check_csrf(&form.csrf)?;
    let done = match key_cases::delete(&state.app, auth.principal(), &key.id).await {
        Ok(()) => "deleted",
        // The one conflict of a delete: the key was seen at the edge.
        Err(e) if e.kind() == ErrorKind::Conflict => "has_history",
        Err(e) => return Err(e.into()),
    };
    Ok(see_other(&format!(
        "/ui/w/{}/keys{}",
        key.workspace_id,
        fmt::query(&[("done", done), ("key", &key.id)])
    )))
}
