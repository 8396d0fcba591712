//! API Keys page: list, generate (secret shown once), rotate (with grace), activate/deactivate,
//! delete. Creation and rotation are the application layer's use cases (`app/keys.rs`), the
//! API's own, so validation and its messages are exactly the API's; an error names its field as
//! data, which puts its message beside that input.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{self, field, Nav, Shell};
use super::{
    data, fmt, html_response, parse_form, see_other, visible_key, visible_workspace, Auth,
    PageError, WebState,
};
use crate::app::keys::{self as key_cases, AllowInput, CreateKey, PatchKey, QuotasInput};
use crate::app::{AppError, ErrorKind};
use crate::clock;
use crate::domain::names::BUILTIN_CATEGORIES;
use crate::domain::validate::GRACE_SECONDS_MAX;
use crate::domain::ValidationError;
use crate::domain::{ApiKey, KeyStatus, Workspace};

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
    let keys = key_cases::list(&*state.app.store, auth.principal(), &ws.id).await?;
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
                div.muted.small { code { (key.prefix) "…" } }
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

/// The "Generate API Key" form's fields, named after the API's.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeyForm {
    csrf: String,
    alias: String,
    description: String,
    category: String,
    custom_category: String,
    expires_at: String,
    tz: String,
    quota_total: String,
    quota_daily: String,
    quota_weekly: String,
    quota_monthly: String,
    allowed: String,
}

/// A quota as typed: a number when it is one (so `0` and `-1` get the API's number message),
/// else the raw text (which the API rejects as not a positive integer).
fn quota_value(text: &str) -> Option<Value> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(
        serde_json::from_str::<serde_json::Number>(text)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(text.to_owned())),
    )
}

impl KeyForm {
    fn category_value(&self) -> &str {
        if self.category == "custom" {
            self.custom_category.as_str()
        } else {
            self.category.as_str()
        }
    }

    /// The key this form asks for, as the API's `POST /v1/workspaces/{ws}/keys` body would.
    fn to_input(&self) -> CreateKey {
        let description = self.description.trim();
        let expires_at = self.expires_at.trim();
        let quotas = QuotasInput {
            total: quota_value(&self.quota_total),
            daily: quota_value(&self.quota_daily),
            weekly: quota_value(&self.quota_weekly),
            monthly: quota_value(&self.quota_monthly),
        };
        let any_quota = [
            &quotas.total,
            &quotas.daily,
            &quotas.weekly,
            &quotas.monthly,
        ]
        .iter()
        .any(|q| q.is_some());
        let rules: Vec<AllowInput> = self
            .allowed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|line| match line.split_once(char::is_whitespace) {
                Some((method, path)) => AllowInput {
                    method: method.to_owned(),
                    path: path.trim().to_owned(),
                },
                None => AllowInput {
                    method: "*".to_owned(),
                    path: line.to_owned(),
                },
            })
            .collect();
        CreateKey {
            alias: self.alias.clone(),
            description: (!description.is_empty()).then(|| self.description.clone()),
            category: Some(self.category_value().to_owned()),
            expires_at: (!expires_at.is_empty())
                .then(|| fmt::local_to_rfc3339(&self.expires_at, fmt::tz_minutes(&self.tz))),
            quotas: any_quota.then_some(quotas),
            allowed: (!rules.is_empty()).then_some(rules),
        }
    }
}

/// Errors of the form: per field (keyed like the form's inputs) and for the whole form.
#[derive(Debug, Default)]
struct FormErrors {
    fields: Vec<(&'static str, String)>,
    general: Option<String>,
}

impl FormErrors {
    fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    /// Places the error beside the input it names; others are for the whole form.
    fn from_error(error: &AppError) -> Self {
        let general = |message: String| Self {
            fields: Vec::new(),
            general: Some(message),
        };
        let AppError::Invalid(ValidationError { field, message }) = error else {
            return match error.field() {
                Some("alias") => Self {
                    fields: vec![("alias", error.to_string())],
                    general: None,
                },
                _ => general(error.to_string()),
            };
        };
        let input = match field.as_str() {
            "alias" => "alias",
            "description" => "description",
            "category" => "category",
            "expires_at" => "expires_at",
            "quotas.total" => "quota_total",
            "quotas.daily" => "quota_daily",
            "quotas.weekly" => "quota_weekly",
            "quotas.monthly" => "quota_monthly",
            "allowed" => "allowed",
            f if f.starts_with("allowed[") => {
                // `allowed[2].path` → line 3.
                let line = f
                    .trim_start_matches("allowed[")
                    .split(']')
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .map_or(0, |n| n + 1);
                let what = if f.ends_with(".method") {
                    "method"
                } else {
                    "path"
                };
                return Self {
                    fields: vec![("allowed", format!("line {line}: {what} {message}"))],
                    general: None,
                };
            }
            _ => return general(error.to_string()),
        };
        Self {
            fields: vec![(input, message.clone())],
            general: None,
        }
    }
}

pub async fn new_form(
    State(state): State<WebState>,
    auth: Auth,
    Path(ws): Path<String>,
) -> Result<Response, PageError> {
    let ws = visible_workspace(&state, &auth, &ws).await?;
    let form = KeyForm {
        category: "production".into(),
        ..KeyForm::default()
    };
    render_form(
        &state,
        &auth,
        &ws,
        &form,
        &FormErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn render_form(
    state: &WebState,
    auth: &Auth,
    ws: &Workspace,
    form: &KeyForm,
    errors: &FormErrors,
    status: StatusCode,
) -> Result<Response, PageError> {
    let shell = Shell::load(state, auth, Some(ws)).await?;
    let custom = !BUILTIN_CATEGORIES.contains(&form.category.as_str());
    let err = |f: &str| errors.get(f);
    let invalid = |f: &str| errors.get(f).map(|_| "true");
    let described = |f: &str, hint: bool| -> Option<String> {
        match (errors.get(f).is_some(), hint) {
            (true, true) => Some(format!("{f}-hint {f}-error")),
            (true, false) => Some(format!("{f}-error")),
            (false, true) => Some(format!("{f}-hint")),
            (false, false) => None,
        }
    };
    let content = html! {
        a.back-link href={"/ui/w/" (ws.id) "/keys"} { (layout::icon_back()) "Back to API Keys" }
        div.page-header {
            div {
                h1 { "Generate API Key" }
                p.muted { "The secret is shown once after you save. Only the fields marked optional may be left blank." }
            }
        }
        @if let Some(general) = &errors.general {
            div.alert.alert-error role="alert" { (general) }
        }
        form.card.form-card method="post" action={"/ui/w/" (ws.id) "/keys"} novalidate data-tz {
            input type="hidden" name="csrf" value=(auth.session.csrf());
            input type="hidden" name="tz" value="0";
            (field("alias", "Name", Some("A unique label, e.g. “Zapier Integration”. Letters, digits, spaces and _ . : -"), err("alias"), html! {
                input #alias type="text" name="alias" value=(form.alias) required maxlength="64" autocomplete="off"
                    aria-invalid=[invalid("alias")] aria-describedby=[described("alias", true)];
            }))
            (field("description", "Description (optional)", None, err("description"), html! {
                textarea #description name="description" rows="2" maxlength="500"
                    aria-invalid=[invalid("description")] aria-describedby=[described("description", false)] { (form.description) }
            }))
            div.field-row {
                (field("category", "Category", None, err("category"), html! {
                    select #category name="category" data-custom-toggle="custom-category-field"
                        aria-invalid=[invalid("category")] aria-describedby=[described("category", false)] {
                        @for c in BUILTIN_CATEGORIES {
                            option value=(c) selected[form.category == c] { (c) }
                        }
                        option value="custom" selected[custom] { "custom label…" }
                    }
                }))
                div #custom-category-field .field .hidden-unless-custom[!custom] {
                    label for="custom_category" { "Custom label" }
                    input #custom_category type="text" name="custom_category"
                        value=(if custom { form.custom_category.as_str() } else { "" })
                        maxlength="32" placeholder="e.g. sandbox, partner-acme" autocomplete="off";
                    p.hint { "Lower-case letters, digits, _ and -." }
                }
                (field("expires_at", "Expires (optional)", Some("In your local time. Leave blank for no expiry."), err("expires_at"), html! {
                    input #expires_at type="datetime-local" name="expires_at" value=(form.expires_at)
                        aria-invalid=[invalid("expires_at")] aria-describedby=[described("expires_at", true)];
                }))
            }
            fieldset.quotas {
                legend { "Quotas (optional)" }
                p.hint { "Hard caps on rolling windows: total (all time), daily (24 h), weekly (7 days), monthly (30 days). Blank = no cap." }
                div.quota-grid {
                    @for (name, label, value) in [("quota_total", "Total", &form.quota_total), ("quota_daily", "Daily", &form.quota_daily), ("quota_weekly", "Weekly", &form.quota_weekly), ("quota_monthly", "Monthly", &form.quota_monthly)] {
                        (field(name, label, None, err(name), html! {
                            input id=(name) type="text" inputmode="numeric" name=(name) value=(value) autocomplete="off"
                                aria-invalid=[invalid(name)] aria-describedby=[described(name, false)];
                        }))
                    }
                }
            }
            (field("allowed", "Allowed endpoints (optional)", Some("One per line: METHOD /path or /path (any method). * is one segment, a final /** anything below. Blank = every endpoint."), err("allowed"), html! {
                textarea #allowed.mono name="allowed" rows="3" placeholder="GET /v1/candidates/**\n/health" spellcheck="false"
                    aria-invalid=[invalid("allowed")] aria-describedby=[described("allowed", true)] { (form.allowed) }
            }))
            div.form-actions {
                a.btn.btn-ghost href={"/ui/w/" (ws.id) "/keys"} { "Cancel" }
                button.btn.btn-primary type="submit" { "Generate key" }
            }
        }
    };
    Ok(html_response(
        status,
        shell.render("Generate API Key", Nav::Keys, content),
    ))
}

pub async fn create(
    State(state): State<WebState>,
    auth: Auth,
    Path(ws): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let ws = visible_workspace(&state, &auth, &ws).await?;
    let form: KeyForm = parse_form(&body)?;
    auth.check_csrf(&form.csrf)?;
    let store = &*state.app.store;
    match key_cases::create(store, auth.principal(), &ws.id, form.to_input()).await {
        Ok(created) => {
            let id = created.key.id;
            let secret = created.secret.expose().to_owned();
            let reveal =
                state
                    .sessions
                    .put_reveal(&auth.session, &id, secret, None, clock::now_ms());
            Ok(see_other(&format!("/ui/keys/{id}/secret?r={reveal}")))
        }
        Err(error) if matches!(error.kind(), ErrorKind::Invalid | ErrorKind::Conflict) => {
            let errors = FormErrors::from_error(&error);
            render_form(
                &state,
                &auth,
                &ws,
                &form,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(other) => Err(other.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RevealQuery {
    #[serde(default)]
    r: String,
}

/// Shows a new secret exactly once: the reveal is consumed by this request.
pub async fn reveal(
    State(state): State<WebState>,
    auth: Auth,
    Path(id): Path<String>,
    Query(q): Query<RevealQuery>,
) -> Result<Response, PageError> {
    let key = visible_key(&state, &auth, &id).await?;
    let ws = visible_workspace(&state, &auth, &key.workspace_id).await?;
    let now = clock::now_ms();
    let reveal = state
        .sessions
        .take_reveal(&auth.session, &q.r, &key.id, now);
    let shell = Shell::load(&state, &auth, Some(&ws)).await?;
    let content = html! {
        a.back-link href={"/ui/w/" (ws.id) "/keys"} { (layout::icon_back()) "Back to API Keys" }
        @match &reveal {
            Some(reveal) => {
                div.card.secret-card {
                    h1 {
                        @if reveal.rotated_grace_until.is_some() { "API key rotated" } @else { "API key created" }
                    }
                    p { "Name: " strong { (key.alias) } " · ID: " code { (key.id) } }
                    div.alert.alert-warning role="alert" {
                        (layout::icon_warning())
                        div {
                            strong { "Copy this secret now. " }
                            "For your security it is shown only once: after you leave or reload this page it can never be seen again. Store it in a secret manager or an environment variable."
                        }
                    }
                    label for="secret-value" { "Secret" }
                    div.secret-row {
                        input #secret-value.mono type="text" readonly value=(reveal.secret) spellcheck="false" autocomplete="off";
                        button.btn.btn-primary type="button" data-copy-target="secret-value" { (layout::icon_copy()) "Copy" }
                    }
                    @if let Some(grace) = reveal.rotated_grace_until {
                        p.muted {
                            @match grace {
                                Some(until) => { "The previous secret keeps working until " (fmt::time(until)) "." }
                                None => { "The previous secret stopped working immediately." }
                            }
                        }
                    }
                    p.muted.small { "Send it as " code { "x-api-key: <secret>" } " or " code { "Authorization: Bearer <secret>" } "." }
                    div.form-actions {
                        a.btn.btn-primary #secret-done href={"/ui/w/" (ws.id) "/keys"} { "I have copied the secret" }
                    }
                }
            }
            None => {
                div.card.secret-card #secret-gone {
                    h1 { "Secret no longer available" }
                    p { "The secret of " strong { (key.alias) } " was shown once and can never be displayed again. If you did not save it, rotate the key to get a new secret." }
                    div.form-actions {
                        a.btn.btn-ghost href={"/ui/w/" (ws.id) "/keys"} { "Back to API Keys" }
                        a.btn.btn-primary href={"/ui/keys/" (key.id) "/rotate"} { "Rotate key" }
                    }
                }
            }
        }
    };
    Ok(html_response(
        StatusCode::OK,
        shell.render("API key secret", Nav::Keys, content),
    ))
}

const GRACE_CHOICES: [(i64, &str); 5] = [
    (0, "No grace: the current secret stops working now"),
    (300, "5 minutes"),
    (3600, "1 hour"),
    (86_400, "24 hours"),
    (604_800, "7 days"),
];

pub async fn rotate_form(
    State(state): State<WebState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let key = visible_key(&state, &auth, &id).await?;
    render_rotate(&state, &auth, &key, None, StatusCode::OK).await
}

async fn render_rotate(
    state: &WebState,
    auth: &Auth,
    key: &ApiKey,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let ws = visible_workspace(state, auth, &key.workspace_id).await?;
    let shell = Shell::load(state, auth, Some(&ws)).await?;
    let content = html! {
        a.back-link href={"/ui/w/" (ws.id) "/keys"} { (layout::icon_back()) "Back to API Keys" }
        div.page-header { div { h1 { "Rotate “" (key.alias) "”" } p.muted { "Generates a new secret for the same key: its ID, settings and usage history stay." } } }
        form.card.form-card method="post" action={"/ui/keys/" (key.id) "/rotate"} {
            input type="hidden" name="csrf" value=(auth.session.csrf());
            (field("grace_seconds", "Grace period for the current secret", Some("Keep the current secret working for a while so you can deploy the new one without downtime."), error, html! {
                select #grace_seconds name="grace_seconds" aria-describedby="grace_seconds-hint" {
                    @for (seconds, label) in GRACE_CHOICES {
                        option value=(seconds) selected[seconds == 3600] { (label) }
                    }
                }
            }))
            div.form-actions {
                a.btn.btn-ghost href={"/ui/w/" (ws.id) "/keys"} { "Cancel" }
                button.btn.btn-primary type="submit" { (layout::icon_rotate()) "Rotate key" }
            }
        }
    };
    Ok(html_response(
        status,
        shell.render("Rotate API key", Nav::Keys, content),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RotateForm {
    csrf: String,
    grace_seconds: String,
}

pub async fn rotate(
    State(state): State<WebState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let key = visible_key(&state, &auth, &id).await?;
    let form: RotateForm = parse_form(&body)?;
    auth.check_csrf(&form.csrf)?;
    // The form offers a choice of periods; anything else posted is refused like an API value
    // out of range.
    let grace = form.grace_seconds.trim().parse::<i64>().map_err(|_| {
        AppError::from(ValidationError::new(
            "grace_seconds",
            format!("must be between 0 and {GRACE_SECONDS_MAX}"),
        ))
    });
    let store = &*state.app.store;
    let result = match grace {
        Ok(seconds) => key_cases::rotate(store, auth.principal(), &key.id, seconds)
            .await
            .map(|rotated| (rotated, seconds)),
        Err(e) => Err(e),
    };
    match result {
        Ok((rotated, seconds)) => {
            let now = rotated.now_ms;
            let until = (seconds > 0).then(|| now + seconds * 1000);
            let id = rotated.key.id;
            let secret = rotated.secret.expose().to_owned();
            let reveal = state
                .sessions
                .put_reveal(&auth.session, &id, secret, Some(until), now);
            Ok(see_other(&format!("/ui/keys/{id}/secret?r={reveal}")))
        }
        Err(AppError::Invalid(e)) => {
            render_rotate(
                &state,
                &auth,
                &key,
                Some(&e.message),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(other) => Err(other.into()),
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
    key_cases::update(&*state.app.store, auth.principal(), &key.id, patch).await?;
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
    body: Bytes,
) -> Result<Response, PageError> {
    set_active(state, auth, id, body, true).await
}

pub async fn deactivate(
    State(state): State<WebState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    set_active(state, auth, id, body, false).await
}

pub async fn delete(
    State(state): State<WebState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let key = visible_key(&state, &auth, &id).await?;
    let form: CsrfForm = parse_form(&body)?;
    auth.check_csrf(&form.csrf)?;
    let done = match key_cases::delete(&*state.app.store, auth.principal(), &key.id).await {
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
