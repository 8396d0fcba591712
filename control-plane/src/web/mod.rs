//! The web dashboard under `/ui`: server-rendered pages (maud) over the application layer
//! (`app/`), with assets compiled into the binary. No CDN, no inline script or style: one CSS and one JS file.
//!
//! Security: signed `HttpOnly`/`SameSite=Strict` session cookie ([`session`]); a CSRF token in
//! every form, checked on every POST; POSTs whose `Origin`/`Sec-Fetch-Site` say cross-site are
//! refused before any handler runs; the Content-Security-Policy and other security headers are
//! built once and added by [`security_headers`]; pages are `Cache-Control: no-store`. A console
//! session sees one workspace: everything else answers 404, as in the API.

mod assets;
mod auth;
mod charts;
mod data;
mod fmt;
mod key_form;
mod key_limits;
mod key_secret;
mod keys;
mod layout;
mod page_query;
mod request_log;
pub mod session;
pub mod signin_throttle;
mod usage;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};

use crate::app::error::FULL_RETRY_AFTER_SECONDS;
use crate::app::{self, AppError, AppState, ErrorKind};
use crate::body_limit::{self, BodyLimit, MAX_BODY_BYTES};
use crate::clock;
use crate::domain::{ApiKey, Workspace};
use session::{Principal, Session, Sessions};
use signin_throttle::SignInThrottle;

#[derive(Clone)]
pub struct WebState {
    pub app: AppState,
    pub sessions: Arc<Sessions>,
    pub signin_throttle: Arc<SignInThrottle>,
}

/// The dashboard routes, with their own state, ready to merge into the API router.
pub fn router(app: AppState) -> Router<AppState> {
    let state = WebState {
        app,
        sessions: Arc::new(Sessions::new()),
        signin_throttle: Arc::new(SignInThrottle::default()),
    };
    let limit = BodyLimit {
        max: MAX_BODY_BYTES,
        too_large: || PageError::PayloadTooLarge.into_response(),
    };
    let pages = Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(auth::home))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/signin", get(auth::signin_page).post(auth::signin))
        .route("/ui/signout", post(auth::signout))
        .route("/ui/workspaces", get(auth::workspaces))
        .route("/ui/switch", get(auth::switch))
        .route("/ui/w/{ws}/keys", get(keys::list).post(key_form::create))
        .route("/ui/w/{ws}/keys/new", get(key_form::new_form))
        .route("/ui/w/{ws}/overview", get(usage::overview))
        .route("/ui/w/{ws}/requests.csv", get(usage::csv))
        .route("/ui/keys/{id}/usage", get(usage::key_usage))
        .route("/ui/keys/{id}/secret", get(key_secret::reveal))
        .route(
            "/ui/keys/{id}/rotate",
            get(key_secret::rotate_form).post(key_secret::rotate),
        )
        .route(
            "/ui/keys/{id}/edit",
            get(key_limits::edit_form).post(key_limits::edit),
        )
        .route("/ui/keys/{id}/activate", post(keys::activate))
        .route("/ui/keys/{id}/deactivate", post(keys::deactivate))
        .route("/ui/keys/{id}/delete", post(keys::delete))
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/{*rest}", get(|| async { PageError::NotFound }));
    body_limit::router(pages, limit)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// `default-src 'none'` and only same-origin files: no inline script, style or event handler
/// can run, and forms can only post back here. SVG charts use presentation attributes only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

static SECURITY_HEADERS: [(&str, &str); 7] = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    ),
];

/// Refuses cross-site POSTs (defence in depth next to the CSRF token and `SameSite=Strict`), then
/// adds the security headers to every dashboard response; pages default to `no-store` because
/// they may show a secret.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = if req.method() == Method::POST && is_cross_site(req.headers()) {
        PageError::Forbidden("cross-site request refused").into_response()
    } else {
        next.run(req).await
    };
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn is_cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if matches!(fetch_site, "cross-site" | "same-site") {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    origin == "null" || origin_host != host
}

/// Errors of HTML pages: sign-in redirect instead of 401, and a small error page otherwise.
#[derive(Debug)]
pub enum PageError {
    SignIn {
        next: String,
    },
    NotFound,
    Forbidden(&'static str),
    BadRequest(String),
    PayloadTooLarge,
    /// The store has no room to write (a full disk).
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl From<AppError> for PageError {
    fn from(e: AppError) -> Self {
        match e.kind() {
            ErrorKind::NotFound => Self::NotFound,
            ErrorKind::Forbidden => Self::Forbidden("this page needs the admin token"),
            ErrorKind::Unavailable => match e.into_source() {
                Some(source) => Self::Unavailable(source),
                None => Self::Unavailable("the store is full".into()),
            },
            ErrorKind::Internal => match e.into_source() {
                Some(source) => Self::Internal(source),
                None => Self::Internal("internal error".into()),
            },
            ErrorKind::Invalid | ErrorKind::Conflict => Self::BadRequest(e.to_string()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            Self::SignIn { next } => {
                let target = format!("/ui/signin?next={}", fmt::url_encode(&next));
                return Redirect::to(&target).into_response();
            }
            Self::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "This page does not exist, or you do not have access to it.".to_owned(),
            ),
            Self::Forbidden(why) => (
                StatusCode::FORBIDDEN,
                "Request refused",
                format!("{why}. Reload the page and try again."),
            ),
            Self::BadRequest(message) => (StatusCode::BAD_REQUEST, "Bad request", message),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request too large",
                format!("A form may send at most {} KiB.", MAX_BODY_BYTES / 1024),
            ),
            Self::Unavailable(source) => {
                tracing::error!(error = %source, "dashboard request failed: the database is full");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again later",
                    "The database is full or out of resources, so nothing can be saved right \
                     now; it has been logged."
                        .to_owned(),
                )
            }
            Self::Internal(source) => {
                tracing::error!(error = %source, "dashboard request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "An internal error occurred; it has been logged.".to_owned(),
                )
            }
        };
        let mut response = html_response(status, error_page(status, title, &message));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(FULL_RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

fn error_page(status: StatusCode, title: &str, message: &str) -> maud::Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (layout::head(title)) }
            body.centered {
                main.auth-card {
                    (layout::logo())
                    p.muted { (status.as_u16()) }
                    h1 { (title) }
                    p { (message) }
                    p { a.btn.btn-primary href="/ui" { "Back to the dashboard" } }
                }
            }
        }
    }
}

/// A signed-in request. Console sessions are re-checked against the store, so a deleted console
/// token ends its sessions at once.
pub struct Auth {
    pub session: Session,
}

impl Auth {
    pub fn principal(&self) -> &Principal {
        &self.session.principal
    }

    /// A 403 unless `submitted` is this session's CSRF token.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), PageError> {
        if self.session.csrf_ok(submitted) {
            Ok(())
        } else {
            Err(PageError::Forbidden("invalid or missing CSRF token"))
        }
    }
}

impl FromRequestParts<WebState> for Auth {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, PageError> {
        let sign_in = || PageError::SignIn {
            next: parts
                .uri
                .path_and_query()
                .map_or("/ui".to_owned(), |p| p.as_str().to_owned()),
        };
        let session = state
            .sessions
            .from_headers(&parts.headers, clock::now_ms())
            .ok_or_else(sign_in)?;
        if let Principal::Console {
            workspace_id,
            token_id,
        } = &session.principal
        {
            // Console sessions stay valid only while their token exists.
            if !app::console_tokens::still_valid(&state.app, workspace_id, token_id).await? {
                return Err(sign_in());
            }
        }
        Ok(Auth { session })
    }
}

/// The workspace if this session may see it (404 otherwise, as if it did not exist).
pub async fn visible_workspace(
    state: &WebState,
    auth: &Auth,
    id: &str,
) -> Result<Workspace, PageError> {
    Ok(auth.principal().workspace(&state.app, id).await?)
}

/// The key if this session may see its workspace (404 otherwise).
pub async fn visible_key(state: &WebState, auth: &Auth, id: &str) -> Result<ApiKey, PageError> {
    Ok(auth.principal().key(&state.app, id).await?)
}

/// A form's body, read up to the body limit (a longer one is the 413 page, not axum's text).
pub struct FormBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for FormBody {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, PageError> {
        Bytes::from_request(req, state)
            .await
            .map(FormBody)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    PageError::PayloadTooLarge
                } else {
                    PageError::BadRequest(format!("cannot read the form: {}", e.body_text()))
                }
            })
    }
}

/// Parses an `application/x-www-form-urlencoded` body.
pub fn parse_form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, PageError> {
    serde_urlencoded::from_bytes(body).map_err(|e| PageError::BadRequest(format!("bad form: {e}")))
}

/// `303 See Other` to `location`.
pub fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// The page markup as a `text/html` response.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (status, axum::response::Html(markup.into_string())).into_response()
}
