//! Sign-in/out, the `/ui` entry point and the admin's workspace list and switcher. Sign-in is
//! throttled per client IP (`signin_throttle.rs`), and its refusal is the same whatever the
//! wrong token was (unknown, or a real one's prefix with the wrong secret).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use maud::{html, DOCTYPE};
use serde::Deserialize;

use super::layout::{self, Nav, Shell};
use super::session::{self, Principal, SESSION_COOKIE, SIGNIN_COOKIE};
use super::{fmt, html_response, parse_form, see_other, Auth, FormBody, PageError, WebState};
use crate::app;
use crate::clock;

/// `/ui`: a console session goes to its workspace; an admin to the first workspace (or the
/// workspace list when there is none).
pub async fn home(State(state): State<WebState>, auth: Auth) -> Result<Response, PageError> {
    match auth.principal() {
        Principal::Console { workspace_id, .. } => {
            Ok(see_other(&format!("/ui/w/{workspace_id}/keys")))
        }
        Principal::Admin => {
            let workspaces = app::workspaces::list(&state.app, auth.principal()).await?;
            Ok(match workspaces.first() {
                Some(ws) => see_other(&format!("/ui/w/{}/keys", ws.id)),
                None => see_other("/ui/workspaces"),
            })
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    error: String,
}

/// Only local dashboard paths, so the sign-in form cannot be used as an open redirect.
fn safe_next(next: &str) -> &str {
    let local = next.starts_with("/ui")
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.starts_with("/ui/signin")
        && next.chars().all(|c| !c.is_control());
    if local {
        next
    } else {
        "/ui"
    }
}

pub async fn signin_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    // Already signed in: straight on.
    if state
        .sessions
        .from_headers(&headers, clock::now_ms())
        .is_some()
        && q.error.is_empty()
    {
        return see_other(safe_next(&q.next));
    }
    let error = match q.error.as_str() {
        "" => None,
        "expired" => Some("The sign-in form expired. Please try again."),
        _ => Some(WRONG_TOKEN),
    };
    signin_response(&state, &headers, safe_next(&q.next), error, StatusCode::OK)
}

fn signin_response(
    state: &WebState,
    headers: &HeaderMap,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let secure = session::is_https(headers);
    let (csrf, set_cookie) = state.sessions.signin_token(headers, secure);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head { (layout::head("Sign in")) }
            body.centered {
                main.auth-card {
                    (layout::logo())
                    h1 { "Sign in to the console" }
                    p.muted { "Use the admin token (every workspace) or a workspace console token." }
                    form method="post" action="/ui/signin" novalidate {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="next" value=(next);
                        (layout::field("token", "Token", None, error, html! {
                            input #token type="password" name="token" required autocomplete="current-password"
                                autofocus spellcheck="false" aria-invalid=[error.map(|_| "true")]
                                aria-describedby=[error.map(|_| "token-error")];
                        }))
                        button.btn.btn-primary.btn-block type="submit" { "Sign in" }
                    }
                }
            }
        }
    };
    let mut response = html_response(status, page);
    if let Some(value) = set_cookie.as_deref().and_then(session::header_value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(Debug, Default, Deserialize)]
struct SigninForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    token: String,
}

const WRONG_TOKEN: &str =
    "That token is not valid. Use the admin token or a workspace console token.";

/// The client's address: the TCP peer's (a proxy in front makes every client its own address).
/// Without one (a server not started by `serve`) every client shares one.
fn client_ip(connect: Option<Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    connect.map_or(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        |Extension(ConnectInfo(addr))| addr.ip(),
    )
}

pub async fn signin(
    State(state): State<WebState>,
    headers: HeaderMap,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    FormBody(body): FormBody,
) -> Result<Response, PageError> {
    let form: SigninForm = parse_form(&body)?;
    let next = safe_next(&form.next).to_owned();
    if !state.sessions.signin_csrf_ok(&headers, &form.csrf) {
        return Err(PageError::Forbidden("invalid or missing CSRF token"));
    }
    let ip = client_ip(connect);
    let now = clock::now_ms();
    // Before the token is looked at: a throttled client learns nothing of it, right or wrong.
    if let Err(wait_s) = state.signin_throttle.check(ip, now) {
        tracing::info!(%ip, "dashboard sign-in throttled");
        let message =
            format!("Too many failed sign-ins from your address. Try again in {wait_s} s.");
        let mut response = signin_response(
            &state,
            &headers,
            &next,
            Some(&message),
            StatusCode::TOO_MANY_REQUESTS,
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait_s));
        return Ok(response);
    }
    let token = form.token.trim();
    let principal = if state.app.admin_token.matches(token) {
        Some(Principal::Admin)
    } else {
        app::console_tokens::principal_of(&state.app, token).await?
    };
    let Some(principal) = principal else {
        state.signin_throttle.failed(ip, now);
        tracing::info!(%ip, "dashboard sign-in refused");
        return Ok(signin_response(
            &state,
            &headers,
            &next,
            Some(WRONG_TOKEN),
            StatusCode::UNAUTHORIZED,
        ));
    };
    state.signin_throttle.succeeded(ip);
    let secure = session::is_https(&headers);
    let (_, cookie) = state.sessions.create(principal, clock::now_ms(), secure);
    let mut response = see_other(&next);
    for value in [cookie, session::clear_cookie(SIGNIN_COOKIE, secure)] {
        if let Some(v) = session::header_value(&value) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(response)
}

#[derive(Debug, Default, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn signout(
    State(state): State<WebState>,
    headers: HeaderMap,
    auth: Auth,
    FormBody(body): FormBody,
) -> Result<Response, PageError> {
    let form: CsrfForm = parse_form(&body)?;
    auth.check_csrf(&form.csrf)?;
    state.sessions.sign_out(&auth.session, clock::now_ms());
    let mut response = see_other("/ui/signin");
    let clear = session::clear_cookie(SESSION_COOKIE, session::is_https(&headers));
    if let Some(v) = session::header_value(&clear) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// Admin: every workspace with its plan and key count. Console: its own workspace.
pub async fn workspaces(State(state): State<WebState>, auth: Auth) -> Result<Response, PageError> {
    if let Principal::Console { workspace_id, .. } = auth.principal() {
        return Ok(see_other(&format!("/ui/w/{workspace_id}/keys")));
    }
    let shell = Shell::load(&state, &auth, None).await?;
    let mut rows = Vec::with_capacity(shell.workspaces.len());
    for ws in &shell.workspaces {
        let keys = app::keys::list(&state.app, auth.principal(), &ws.id).await?;
        rows.push((ws, keys.len()));
    }
    let content = html! {
        div.page-header {
            div { h1 { "Workspaces" } p.muted { "Every workspace of this control plane." } }
        }
        div.card {
            @if rows.is_empty() {
                div.empty {
                    p { "No workspaces yet." }
                    p.muted { "Create one with " code { "tollgate workspaces create --name NAME" } "." }
                }
            } @else {
                div.table-wrap {
                    table.table {
                        thead { tr { th { "Name" } th { "ID" } th { "Plan" } th.num { "Keys" } th { "Created" } } }
                        tbody {
                            @for (ws, n) in &rows {
                                tr {
                                    td { a href={"/ui/w/" (ws.id) "/keys"} { (ws.name) } }
                                    td { code { (ws.id) } }
                                    td { span.badge.badge-neutral { (ws.plan) } }
                                    td.num { (n) }
                                    td { (fmt::time(ws.created_at)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(html_response(
        StatusCode::OK,
        shell.render("Workspaces", Nav::Workspaces, content),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct SwitchQuery {
    #[serde(default)]
    ws: String,
}

pub async fn switch(
    State(state): State<WebState>,
    auth: Auth,
    Query(q): Query<SwitchQuery>,
) -> Result<Response, PageError> {
    if q.ws.is_empty() {
        return Ok(see_other("/ui/workspaces"));
    }
    let ws = super::visible_workspace(&state, &auth, &q.ws).await?;
    Ok(see_other(&format!("/ui/w/{}/keys", ws.id)))
}
