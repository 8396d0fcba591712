//! HTTP handlers, kept thin: parse input (`validate`), call the store, shape the JSON.

pub mod analytics;
pub mod auth;
pub mod console;
pub mod ext_authz;
pub mod filter;
pub mod ingest;
pub mod keys;
pub mod leases;
pub mod metrics;
pub mod plans;
pub mod workspaces;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub use crate::app::AppState;

pub use crate::domain::wire::List;

/// A JSON request body whose every failure (syntax, wrong type, unknown or missing field) is a
/// 400 `{"error": "..."}` naming the field, instead of axum's plain-text 415/422 rejections.
/// The `Content-Type` is not checked: the bearer token already rules out cross-site form posts.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(format!("cannot read request body: {}", e.body_text()))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The single `{...}` segment of a route, with a JSON 400 when it cannot be decoded (invalid
/// percent-encoding or UTF-8) instead of axum's plain-text rejection.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathParam(value))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "request body must be a JSON object".to_owned(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // Syntax errors have no meaningful path (serde_path_to_error shows `?` or `.`).
        if inner.is_syntax() || inner.is_eof() || path == "." || path == "?" {
            ApiError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::BadRequest(format!("{path}: {inner}"))
        }
    })?;
    // Trailing data after the value (`{}{}`) is malformed too.
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    Ok(value)
}
