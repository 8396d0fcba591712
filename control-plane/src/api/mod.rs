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
pub mod openapi;
pub mod plans;
pub mod workspaces;

use axum::body::Bytes;
use axum::extract::path::ErrorKind as PathErrorKind;
use axum::extract::rejection::PathRejection;
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
        let BodyBytes(bytes) = BodyBytes::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A request body as bytes, read up to the route's limit (`body_limit.rs`): past it the JSON
/// 413, instead of axum's plain-text one.
pub struct BodyBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for BodyBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(BodyBytes)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::malformed(format!("cannot read request body: {}", e.body_text()))
                }
            })
    }
}

/// The single `{...}` segment of a route, with a JSON 400 naming the segment when it cannot be
/// decoded (percent-encoded bytes that are not UTF-8) instead of axum's plain-text rejection.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathParam(value))
            .map_err(|e| match e {
                PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
                    PathErrorKind::InvalidUtf8InPathParam { key } => {
                        ApiError::invalid(key.as_str(), "must be UTF-8 once percent-decoded")
                    }
                    _ => ApiError::malformed(e.body_text()),
                },
                other => ApiError::malformed(other.body_text()),
            })
    }
}

/// A JSON body as `T`; a failure names the member at fault (`quotas.daily`, `allowed[0]`, an
/// unknown member's own name) when there is one.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // An object, and nothing else: serde would also fill a struct from an array (`[]` is an
    // empty patch, `[60]` a grace period), which no client means.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::malformed("request body must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // At the top level (`.`, or `?` before the first member) there is no member to name: a
        // missing member's name is in serde's message.
        let at_member = path != "." && path != "?";
        match (at_member, inner.is_syntax() || inner.is_eof()) {
            (true, false) => ApiError::invalid(path, inner.to_string()),
            // `1e400`, or a value cut short: the member it is in.
            (true, true) => ApiError::invalid(path, format!("invalid JSON: {inner}")),
            (false, _) => ApiError::malformed(format!("invalid JSON body: {inner}")),
        }
    })?;
    // Trailing data after the value (`{}{}`) is malformed too.
    de.end()
        .map_err(|e| ApiError::malformed(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// The API's parsers of untrusted input as its handlers call them, for the fuzz targets
/// (`fuzz/`): each answers what it parsed (as `Debug` text) or the error the handler would
/// answer with. Not an API: nothing else calls it.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;
    use crate::domain::{RequestCursor, UsageScope};

    /// The HTTP status an error is answered with.
    pub fn status(e: ApiError) -> u16 {
        axum::response::IntoResponse::into_response(e)
            .status()
            .as_u16()
    }

    /// `GET /v1/keys/{id}/usage` and `GET /v1/workspaces/{id}/usage`: from, to, interval.
    pub fn usage_query(raw: Option<&str>) -> Result<String, ApiError> {
        analytics::usage_query(UsageScope::Key("key_1".to_owned()), raw).map(|q| format!("{q:?}"))
    }

    /// `GET /v1/requests` (`csv` false) and `GET /v1/requests.csv`: every filter and the cursor.
    pub fn request_filter(raw: Option<&str>, csv: bool) -> Result<String, ApiError> {
        analytics::request_filter(raw, csv).map(|f| format!("{f:?}"))
    }

    /// `GET /v1/filter/keys/{hash}`: lease and want.
    pub fn lookup_leases(raw: Option<&str>) -> Result<String, ApiError> {
        filter::lookup_leases(raw).map(|l| format!("{l:?}"))
    }

    /// `GET /v1/workspaces/{id}/keys`: external_id.
    pub fn key_list(raw: Option<&str>) -> Result<String, ApiError> {
        keys::list_external_id(raw).map(|x| format!("{x:?}"))
    }

    /// The request log's cursor as `request_filter` reads it.
    pub fn cursor(text: &str) -> Option<RequestCursor> {
        RequestCursor::parse(text)
    }
}
