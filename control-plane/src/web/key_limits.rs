//! A key's own rate limits, credit budget and owner (`external_id`, `meta`) on the dashboard:
//! the form fields the create page ("Generate API Key") and the edit page share, how the
//! application layer's field errors land beside them, the edit page, and the summary on the
//! key's page.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::layout::{self, field, Nav, Shell};
use super::{
    fmt, html_response, parse_form, see_other, visible_key, visible_workspace, Auth, FormBody,
    PageError, WebState,
};
use crate::app::keys::{self as key_cases, CreditsInput, Object, PatchKey, RateLimitsInput};
use crate::app::{AppError, ErrorKind};
use crate::domain::{ApiKey, CreditPeriod, ValidationError};

/// The fields as typed (every one may be blank).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct LimitsForm {
    pub rate_limit_per_second: String,
    pub rate_limit_per_minute: String,
    pub rate_limit_per_hour: String,
    pub credits_limit: String,
    /// `""` = no budget, else a period's name.
    pub credits_period: String,
    pub external_id: String,
    /// `name=value` lines.
    pub meta: String,
}

/// A number as typed: a JSON number when it is one (so `0` and `-1` get the API's number
/// message), else the raw text (which the API refuses as not a positive integer).
pub fn number_value(text: &str) -> Option<Value> {
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

impl LimitsForm {
    /// The form showing `key`'s current values.
    pub fn from_key(key: &ApiKey) -> Self {
        let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        Self {
            rate_limit_per_second: n(key.rate_limits.per_second),
            rate_limit_per_minute: n(key.rate_limits.per_minute),
            rate_limit_per_hour: n(key.rate_limits.per_hour),
            credits_limit: n(key.credits.map(|c| c.limit)),
            credits_period: key
                .credits
                .map(|c| c.period.as_str().to_owned())
                .unwrap_or_default(),
            external_id: key.external_id.clone().unwrap_or_default(),
            meta: key.meta.iter().map(|(k, v)| format!("{k}={v}\n")).collect(),
        }
    }

    /// Every window as typed; blank ones are `None` (no limit).
    pub fn rate_limits(&self) -> RateLimitsInput {
        RateLimitsInput {
            per_second: number_value(&self.rate_limit_per_second),
            per_minute: number_value(&self.rate_limit_per_minute),
            per_hour: number_value(&self.rate_limit_per_hour),
        }
    }

    /// `None` when both the limit and the period are blank (no budget).
    pub fn credits(&self) -> Option<CreditsInput> {
        let limit = number_value(&self.credits_limit);
        let period = Some(self.credits_period.trim())
            .filter(|p| !p.is_empty())
            .map(|p| Value::String(p.to_owned()));
        (limit.is_some() || period.is_some()).then_some(CreditsInput { limit, period })
    }

    pub fn external_id(&self) -> Option<String> {
        Some(self.external_id.trim())
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
    }

    /// The `name=value` lines as the API's object (blank lines skipped); a line without `=` is
    /// refused here, naming its line, since no object could say it.
    pub fn meta(&self) -> Result<Value, ValidationError> {
        let mut meta = serde_json::Map::new();
        let lines = self.meta.lines().map(str::trim).enumerate();
        for (i, line) in lines.filter(|(_, l)| !l.is_empty()) {
            let Some((name, value)) = line.split_once('=') else {
                return Err(ValidationError::new(
                    "meta",
                    format!("line {}: must be name=value", i + 1),
                ));
            };
            meta.insert(
                name.trim().to_owned(),
                Value::String(value.trim().to_owned()),
            );
        }
        Ok(Value::Object(meta))
    }

    /// The edit page's merge-patch: every field as the form shows it (a blank one clears).
    fn to_patch(&self) -> Result<PatchKey, ValidationError> {
        Ok(PatchKey {
            rate_limits: Some(Some(Object(self.rate_limits_or_null()))),
            credits: Some(self.credits().map(Object)),
            external_id: Some(self.external_id()),
            meta: Some(self.meta()?),
            ..PatchKey::default()
        })
    }

    /// Blank windows as `null`, so a patch clears them.
    fn rate_limits_or_null(&self) -> RateLimitsInput {
        let r = self.rate_limits();
        RateLimitsInput {
            per_second: Some(r.per_second.unwrap_or(Value::Null)),
            per_minute: Some(r.per_minute.unwrap_or(Value::Null)),
            per_hour: Some(r.per_hour.unwrap_or(Value::Null)),
        }
    }
}

/// The input beside which the error of API field `field` goes, and its message there; `None`
/// for a field this form does not have.
pub fn input_for(field: &str, message: &str) -> Option<(&'static str, String)> {
    let input = match field {
        "rate_limits.per_second" => "rate_limit_per_second",
        "rate_limits.per_minute" => "rate_limit_per_minute",
        "rate_limits.per_hour" => "rate_limit_per_hour",
        "credits" | "credits.limit" => "credits_limit",
        "credits.period" => "credits_period",
        "external_id" => "external_id",
        "meta" => "meta",
        f => {
            // `meta.Bad Name`: the entry's name leads the message.
            let name = f.strip_prefix("meta.")?;
            return Some(("meta", format!("{name}: {message}")));
        }
    };
    Some((input, message.to_owned()))
}

/// The fieldsets: rate limits, credit budget, owner. `err` gives an input's error message.
pub fn fields<'e>(form: &LimitsForm, err: impl Fn(&str) -> Option<&'e str>) -> Markup {
    let invalid = |f: &str| err(f).map(|_| "true");
    let described = |f: &str| err(f).map(|_| format!("{f}-error"));
    html! {
        fieldset.quotas #rate-limits {
            legend { "Rate limits (optional)" }
            p.hint { "The key's own limits per fixed second, minute and hour, on top of its plan's: a request must pass both. Blank = no limit." }
            div.quota-grid {
                @for (name, label, value) in [("rate_limit_per_second", "Per second", &form.rate_limit_per_second), ("rate_limit_per_minute", "Per minute", &form.rate_limit_per_minute), ("rate_limit_per_hour", "Per hour", &form.rate_limit_per_hour)] {
                    (field(name, label, None, err(name), html! {
                        input id=(name) type="text" inputmode="numeric" name=(name) value=(value) autocomplete="off"
                            aria-invalid=[invalid(name)] aria-describedby=[described(name)];
                    }))
                }
            }
        }
        fieldset.quotas #credit-budget {
            legend { "Credit budget (optional)" }
            p.hint { "Credits the key's admitted requests may spend (each route costs its credits, 1 by default) per UTC day, calendar month (UTC) or ever. Blank = no budget." }
            div.quota-grid {
                (field("credits_limit", "Credits", None, err("credits_limit"), html! {
                    input #credits_limit type="text" inputmode="numeric" name="credits_limit" value=(form.credits_limit) autocomplete="off"
                        aria-invalid=[invalid("credits_limit")] aria-describedby=[described("credits_limit")];
                }))
                (field("credits_period", "Per", None, err("credits_period"), html! {
                    select #credits_period name="credits_period"
                        aria-invalid=[invalid("credits_period")] aria-describedby=[described("credits_period")] {
                        option value="" selected[form.credits_period.is_empty()] { "no budget" }
                        @for p in CreditPeriod::ALL {
                            option value=(p.as_str()) selected[form.credits_period == p.as_str()] { (period_label(p)) }
                        }
                        @if !form.credits_period.is_empty() && CreditPeriod::parse(&form.credits_period).is_none() {
                            option value=(form.credits_period) selected { (form.credits_period) }
                        }
                    }
                }))
            }
        }
        (field("external_id", "External ID (optional)", Some("Whom the key belongs to in your system, e.g. a customer id; sent to your API as x-tollgate-external-id. Up to 128 printable ASCII characters, no spaces."), err("external_id"), html! {
            input #external_id.mono type="text" name="external_id" value=(form.external_id) maxlength="128" autocomplete="off" spellcheck="false"
                aria-invalid=[invalid("external_id")] aria-describedby=[Some(match err("external_id") { Some(_) => "external_id-hint external_id-error", None => "external_id-hint" })];
        }))
        (field("meta", "Meta (optional)", Some("One name=value per line, at most 16; names of a-z, 0-9, _ and -; 1 KiB in all. Entries the filter's forward_meta lists reach your API as x-tollgate-meta-<name>."), err("meta"), html! {
            textarea #meta.mono name="meta" rows="3" placeholder="tier=gold\nregion=eu" spellcheck="false"
                aria-invalid=[invalid("meta")] aria-describedby=[Some(match err("meta") { Some(_) => "meta-hint meta-error", None => "meta-hint" })] { (form.meta) }
        }))
    }
}

fn period_label(p: CreditPeriod) -> &'static str {
    match p {
        CreditPeriod::Day => "day (UTC)",
        CreditPeriod::Month => "calendar month (UTC)",
        CreditPeriod::Total => "ever (total)",
    }
}

/// The key page's summary of its limits, budget and owner, with a link to change them.
pub fn summary(key: &ApiKey) -> Markup {
    let r = key.rate_limits;
    let limits: Vec<String> = [
        ("second", r.per_second),
        ("minute", r.per_minute),
        ("hour", r.per_hour),
    ]
    .iter()
    .filter_map(|(w, n)| n.map(|n| format!("{} / {w}", fmt::count(n))))
    .collect();
    html! {
        section.card.key-limits #key-limits aria-label="Limits and owner" {
            dl.details-list {
                div { dt { "Rate limits" } dd #key-rate-limits { @if limits.is_empty() { span.muted { "None (plan limits only)" } } @else { (limits.join(", ")) } } }
                div {
                    dt { "Credits" }
                    dd #key-credits {
                        @match key.credits {
                            Some(b) => {
                                (fmt::count(key.credits_used)) " used of " (fmt::count(b.limit)) " per " (period_label(b.period))
                                " · " strong #key-credits-remaining { (fmt::count(key.credits_remaining().unwrap_or(0))) } " remaining"
                            }
                            None => { span.muted { "No budget" } " · " (fmt::count(key.credits_used)) " used this month" }
                        }
                    }
                }
                div {
                    dt { "Budget leases" }
                    dd #key-leased {
                        @if key.leased.is_empty() { span.muted { "Nothing leased out" } }
                        @else { "Leased out: " (key.leased) }
                    }
                }
                div { dt { "External ID" } dd #key-external-id { @match &key.external_id { Some(x) => { code { (x) } } None => { span.muted { "—" } } } } }
                div {
                    dt { "Meta" }
                    dd #key-meta {
                        @if key.meta.is_empty() { span.muted { "—" } }
                        @for (name, value) in &key.meta { code { (name) "=" (value) } " " }
                    }
                }
            }
            a.btn.btn-small href={"/ui/keys/" (key.id) "/edit"} { "Edit limits and owner" }
        }
    }
}

/// The edit form's fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EditForm {
    csrf: String,
    #[serde(flatten)]
    limits: LimitsForm,
}

pub async fn edit_form(
    State(state): State<WebState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let key = visible_key(&state, &auth, &id).await?;
    let form = LimitsForm::from_key(&key);
    render_edit(&state, &auth, &key, &form, None, StatusCode::OK).await
}

pub async fn edit(
    State(state): State<WebState>,
    auth: Auth,
    Path(id): Path<String>,
    FormBody(body): FormBody,
) -> Result<Response, PageError> {
    let key = visible_key(&state, &auth, &id).await?;
    let form: EditForm = parse_form(&body)?;
    auth.check_csrf(&form.csrf)?;
    let limits = form.limits;
    let result = match limits.to_patch() {
        Ok(patch) => key_cases::update(&state.app, auth.principal(), &key.id, patch).await,
        Err(e) => Err(AppError::Invalid(e)),
    };
    match result {
        Ok(_) => Ok(see_other(&format!("/ui/keys/{}/usage", key.id))),
        Err(error) if error.kind() == ErrorKind::Invalid => {
            render_edit(
                &state,
                &auth,
                &key,
                &limits,
                Some(&error),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(other) => Err(other.into()),
    }
}

async fn render_edit(
    state: &WebState,
    auth: &Auth,
    key: &ApiKey,
    form: &LimitsForm,
    error: Option<&AppError>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let ws = visible_workspace(state, auth, &key.workspace_id).await?;
    let shell = Shell::load(state, auth, Some(&ws)).await?;
    let placed = match error {
        Some(AppError::Invalid(ValidationError { field, message })) => input_for(field, message),
        _ => None,
    };
    let general = match (error, &placed) {
        (Some(e), None) => Some(e.to_string()),
        _ => None,
    };
    let err = |f: &str| {
        placed
            .as_ref()
            .filter(|(input, _)| *input == f)
            .map(|(_, m)| m.as_str())
    };
    let content = html! {
        a.back-link href={"/ui/keys/" (key.id) "/usage"} { (layout::icon_back()) "Back to " (key.alias) }
        div.page-header {
            div {
                h1 { "Limits and owner of " (key.alias) }
                p.muted { "Changes reach the edge within the key cache TTL. Blank fields remove the limit, budget, external ID or meta." }
            }
        }
        @if let Some(general) = &general {
            div.alert.alert-error role="alert" { (general) }
        }
        form.card.form-card method="post" action={"/ui/keys/" (key.id) "/edit"} novalidate {
            input type="hidden" name="csrf" value=(auth.session.csrf());
            (fields(form, err))
            div.form-actions {
                a.btn.btn-ghost href={"/ui/keys/" (key.id) "/usage"} { "Cancel" }
                button.btn.btn-primary type="submit" { "Save" }
            }
        }
    };
    Ok(html_response(
        status,
        shell.render(&format!("Edit {}", key.alias), Nav::Keys, content),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_land_beside_their_input() {
        assert_eq!(
            input_for("rate_limits.per_hour", "must be a positive integer"),
            Some((
                "rate_limit_per_hour",
                "must be a positive integer".to_owned()
            ))
        );
        assert_eq!(
            input_for("credits.period", "x").map(|(i, _)| i),
            Some("credits_period")
        );
        assert_eq!(
            input_for("meta.Bad Name", "name must be 1-32 characters [a-z0-9_-]"),
            Some((
                "meta",
                "Bad Name: name must be 1-32 characters [a-z0-9_-]".to_owned()
            ))
        );
        assert_eq!(input_for("alias", "x"), None);
    }

    #[test]
    fn meta_lines_become_an_object() {
        let form = LimitsForm {
            meta: "tier = gold\n\nregion=eu=west\n".to_owned(),
            ..LimitsForm::default()
        };
        assert_eq!(
            form.meta().unwrap(),
            serde_json::json!({"tier": "gold", "region": "eu=west"})
        );
        let bad = LimitsForm {
            meta: "tier=gold\nnothing".to_owned(),
            ..LimitsForm::default()
        };
        let e = bad.meta().unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("meta", "line 2: must be name=value")
        );
    }

    #[test]
    fn blank_budget_is_none_and_half_a_budget_is_sent() {
        assert!(LimitsForm::default().credits().is_none());
        let half = LimitsForm {
            credits_limit: "100".to_owned(),
            ..LimitsForm::default()
        };
        let c = half.credits().unwrap();
        assert_eq!(c.limit, Some(serde_json::json!(100)));
        assert_eq!(c.period, None);
    }
}
