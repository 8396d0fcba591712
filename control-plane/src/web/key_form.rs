//! The "Generate API Key" page: the form, and the key it creates through the application layer
//! (`app/keys.rs`, the API's own use case), so validation and its messages are exactly the API's;
//! an error names its field as data, which puts its message beside that input.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use serde_json::Value;

use super::key_limits::{self, LimitsForm};
use super::layout::{self, field, Nav, Shell};
use super::{
    fmt, html_response, parse_form, see_other, visible_workspace, Auth, FormBody, PageError,
    WebState,
};
use crate::app::keys::{self as key_cases, AllowInput, CreateKey, Object, QuotasInput};
use crate::app::{AppError, ErrorKind};
use crate::clock;
use crate::domain::names::BUILTIN_CATEGORIES;
use crate::domain::ValidationError;
use crate::domain::Workspace;

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
    /// Rate limits, credit budget, external id and meta, as the edit page has them too.
    #[serde(flatten)]
    limits: LimitsForm,
}

/// A quota as typed (see [`key_limits::number_value`]).
fn quota_value(text: &str) -> Option<Value> {
    key_limits::number_value(text)
}

impl KeyForm {
    fn category_value(&self) -> &str {
        if self.category == "custom" {
            self.custom_category.as_str()
        } else {
            self.category.as_str()
        }
    }

    /// The key this form asks for, as the API's `POST /v1/workspaces/{ws}/keys` body would
    /// (or the meta line that no body could say).
    fn to_input(&self) -> Result<CreateKey, ValidationError> {
        let limits = &self.limits;
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
        let rules: Vec<Object<AllowInput>> = self
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
            .map(Object)
            .collect();
        Ok(CreateKey {
            alias: self.alias.clone(),
            description: (!description.is_empty()).then(|| self.description.clone()),
            category: Some(self.category_value().to_owned()),
            expires_at: (!expires_at.is_empty())
                .then(|| fmt::local_to_rfc3339(&self.expires_at, fmt::tz_minutes(&self.tz))),
            quotas: any_quota.then_some(Object(quotas)),
            allowed: (!rules.is_empty()).then_some(rules),
            rate_limits: Some(Object(limits.rate_limits())),
            credits: limits.credits().map(Object),
            external_id: limits.external_id(),
            meta: Some(limits.meta()?),
        })
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
            f => {
                return match key_limits::input_for(f, message) {
                    Some(placed) => Self {
                        fields: vec![placed],
                        general: None,
                    },
                    None => general(error.to_string()),
                }
            }
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
            (key_limits::fields(&form.limits, err))
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
    FormBody(body): FormBody,
) -> Result<Response, PageError> {
    let ws = visible_workspace(&state, &auth, &ws).await?;
    let form: KeyForm = parse_form(&body)?;
    auth.check_csrf(&form.csrf)?;
    let app = &state.app;
    let created = match form.to_input() {
        Ok(input) => key_cases::create(app, auth.principal(), &ws.id, input).await,
        Err(e) => Err(AppError::Invalid(e)),
    };
    match created {
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
