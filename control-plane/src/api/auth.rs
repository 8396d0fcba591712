//! Who is calling the admin API, decided once per request by [`authenticate`]; what that caller
//! may see is decided by [`Principal`] (`app/principal.rs`). A console token sees only its
//! workspace: anything else answers 404, as if it did not exist; admin-only actions answer 403.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::app::console_tokens::{self, CONSOLE_TOKEN_PREFIX};
use crate::app::Principal;
use crate::error::ApiError;
use crate::tokens::{self, Token};

/// Handlers take the principal [`authenticate`] stored in the request.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthorized("missing bearer token"))
    }
}

/// Middleware of every admin route: the admin token, or a console token known to the store.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match principal(&state, req.headers()).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = bearer_token(headers)?;
    if state.admin_token.matches(token) {
        return Ok(Principal::Admin);
    }
    if token.starts_with(CONSOLE_TOKEN_PREFIX) {
        return match console_tokens::principal_of(state, token).await? {
            Some(p) => Ok(p),
            None => Err(ApiError::Unauthorized("invalid console token")),
        };
    }
    Err(ApiError::Unauthorized("invalid admin token"))
}

pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("missing bearer token"))?;
    value
        .to_str()
        .ok()
        .and_then(tokens::bearer)
        .ok_or(ApiError::Unauthorized(
            "malformed Authorization header (expected 'Bearer <token>')",
        ))
}

/// Middleware of the filter routes.
pub async fn require_filter(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check_token(&state.filter_token, req.headers(), "invalid filter token") {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check_token(expected: &Token, headers: &HeaderMap, wrong: &'static str) -> Result<(), ApiError> {
    if expected.matches(bearer_token(headers)?) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(wrong))
    }
}
