//! The one error type of the HTTP API, mapped once to a status and a `{"error": "..."}` body.
//! Client errors carry a message meant for the caller; a bad input also carries the field (or
//! query parameter) it is about as data, shown as `"field"` beside `"error"`. Internal errors are
//! logged with their cause and answered with a bare 500; a full database likewise, but with 503
//! and `Retry-After`, since the same request can succeed later.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::error::FULL_RETRY_AFTER_SECONDS;
use crate::app::{AppError, ErrorKind};
use crate::domain::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input; `field` names it when it is about one (`expires_at`, `quotas.daily`,
    /// `cursor`), and the message then starts with it.
    #[error("{}", bad_request_text(.field.as_deref(), .message))]
    BadRequest {
        field: Option<String>,
        message: String,
    },
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is too large")]
    PayloadTooLarge,
    /// The store has no room to write (a full disk): 503 with `Retry-After`.
    #[error("the database is full or out of resources; try again later")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn bad_request_text(field: Option<&str>, message: &str) -> String {
    match field {
        Some(field) => format!("{field}: {message}"),
        None => message.to_owned(),
    }
}

impl ApiError {
    /// A bad value of `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A bad request that is not about one field (a body that is not JSON at all).
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: None,
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::invalid(e.field, e.message)
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e.kind() {
            ErrorKind::Invalid => match e {
                AppError::Invalid(v) => v.into(),
                other => Self::malformed(other.to_string()),
            },
            ErrorKind::Forbidden => Self::Forbidden(e.to_string()),
            ErrorKind::NotFound => Self::NotFound(e.to_string()),
            ErrorKind::Conflict => Self::Conflict(e.to_string()),
            ErrorKind::Unavailable => match e.into_source() {
                Some(source) => Self::Unavailable(source),
                None => Self::Unavailable("the store is full".into()),
            },
            ErrorKind::Internal => match e.into_source() {
                Some(source) => Self::Internal(source),
                None => Self::Internal("internal error".into()),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(source) => {
                tracing::error!(error = %ErrorChain(source.as_ref()), "request failed");
            }
            Self::Unavailable(source) => {
                let error = ErrorChain(source.as_ref());
                tracing::error!(%error, "request failed: the database is full");
            }
            _ => {}
        }
        let error = capped(self.to_string(), MESSAGE_MAX);
        let body = match &self {
            Self::BadRequest {
                field: Some(field), ..
            } => json!({ "error": error, "field": capped(field.clone(), FIELD_MAX) }),
            _ => json!({ "error": error }),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(FULL_RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// The longest message and field name answered, in bytes: a message may quote the input (serde
/// names an unknown member, or shows the string it could not use), and a 1 MB input must not
/// come back as a 1 MB error.
const MESSAGE_MAX: usize = 512;
const FIELD_MAX: usize = 128;

/// `text` cut to at most `max` bytes (on a character boundary), ending in `…` when cut.
fn capped(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Displays an error with its sources: `a: b: c`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
