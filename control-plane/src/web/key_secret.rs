//! A new secret, shown once (after creation or rotation), and the rotation page with its grace
//! period.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use serde::Deserialize;

use super::layout::{self, field, Nav, Shell};
use super::{
    fmt, html_response, parse_form, see_other, visible_key, visible_workspace, Auth, FormBody,
    PageError, WebState,
};
use crate::app::keys::{self as key_cases};
use crate::app::AppError;
use crate::clock;
use crate::domain::validate::GRACE_SECONDS_MAX;
use crate::domain::ApiKey;
use crate::domain::ValidationError;

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
    FormBody(body): FormBody,
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
    let app = &state.app;
    let result = match grace {
        Ok(seconds) => key_cases::rotate(app, auth.principal(), &key.id, seconds)
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
