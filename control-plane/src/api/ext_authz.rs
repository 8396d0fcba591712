//! `/v1/ext-authz/check/{original path}`: Envoy's HTTP `ext_authz` filter asks here about every
//! request when the wasm filter cannot run. Envoy forwards the original method, the original path
//! under its `path_prefix` and the allowed headers (`x-api-key`, `authorization`).
//!
//! The key is checked exactly as the filter does (format and checksum, hash lookup, rotation
//! grace, inactive, expired, allowed endpoints) and the answer is the filter's: 200 with
//! `x-tollgate-key-id`/`x-tollgate-workspace-id` (and `x-tollgate-external-id` when the key has
//! one), or its status and JSON body. Quotas, rate limits, credit budgets, IP blocking, `meta`
//! headers (the filter's `forward_meta`) and usage records are the filter's alone and are not
//! applied here.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::app::edge::find_key;
use crate::clock;
use crate::domain::AllowRule;
use crate::error::ApiError;
use crate::secret::ApiKeySecret;

pub const PATH_PREFIX: &str = "/v1/ext-authz/check";
/// The routes of the check: the prefix alone, with a slash, and with any original path.
pub const PATHS: [&str; 3] = [
    PATH_PREFIX,
    "/v1/ext-authz/check/",
    "/v1/ext-authz/check/{*rest}",
];
const KEY_HEADER: &str = "x-api-key";
pub const KEY_ID_HEADER: &str = "x-tollgate-key-id";
pub const WORKSPACE_ID_HEADER: &str = "x-tollgate-workspace-id";
pub const EXTERNAL_ID_HEADER: &str = "x-tollgate-external-id";

/// The filter's denials that apply without quotas and rate limits (`src/denial.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denial {
    MissingKey,
    InvalidKey,
    InactiveKey,
    ExpiredKey,
    EndpointNotAllowed,
}

impl Denial {
    fn status(self) -> StatusCode {
        match self {
            Self::EndpointNotAllowed => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::MissingKey => "Missing API Key",
            Self::InvalidKey => "Invalid API Key",
            Self::InactiveKey => "Inactive API Key",
            Self::ExpiredKey => "Expired API Key",
            Self::EndpointNotAllowed => "API key not allowed to access this endpoint",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::InvalidKey => "invalid_key",
            Self::InactiveKey => "inactive_key",
            Self::ExpiredKey => "expired_key",
            Self::EndpointNotAllowed => "endpoint_not_allowed",
        }
    }
}

impl IntoResponse for Denial {
    fn into_response(self) -> Response {
        let body = format!(
            "{{\"error\":\"{}\",\"code\":\"{}\"}}",
            self.message(),
            self.code()
        );
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self == Self::MissingKey {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("ApiKey realm=\"tollgate\""),
            );
        }
        response
    }
}

enum KeyRead<'a> {
    Missing,
    Repeated,
    Present(&'a str),
}

/// `x-api-key` first, then `Authorization: Bearer`, as the filter's default key sources.
fn read_key(headers: &HeaderMap) -> KeyRead<'_> {
    let mut keys = headers.get_all(KEY_HEADER).iter();
    if let Some(v) = keys.next() {
        if keys.next().is_some() {
            return KeyRead::Repeated;
        }
        let v = v.to_str().map(str::trim).unwrap_or("\u{0}");
        if !v.is_empty() {
            return KeyRead::Present(v);
        }
    }
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(v) = auth.next() {
        if auth.next().is_some() {
            return KeyRead::Repeated;
        }
        let token = v.to_str().ok().and_then(|v| {
            let v = v.trim();
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
        if let Some(t) = token.filter(|t| !t.is_empty()) {
            return KeyRead::Present(t);
        }
    }
    KeyRead::Missing
}

/// The filter's endpoint patterns: `*` = one segment, a final `/**` = any rest (or nothing).
pub fn allows(rules: &[AllowRule], method: &str, path: &str) -> bool {
    rules.is_empty()
        || rules.iter().any(|r| {
            if r.method != "*" && r.method != method {
                return false;
            }
            let mut pattern: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
            let rest = pattern.last() == Some(&"**");
            if rest {
                pattern.pop();
            }
            let mut parts = path.split('/').filter(|s| !s.is_empty());
            for p in pattern {
                match parts.next() {
                    Some(actual) if p == "*" || p == actual => {}
                    _ => return false,
                }
            }
            rest || parts.next().is_none()
        })
}

pub async fn check(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let secret = match read_key(&headers) {
        KeyRead::Missing => return Ok(Denial::MissingKey.into_response()),
        KeyRead::Repeated => return Ok(Denial::InvalidKey.into_response()),
        KeyRead::Present(k) => match ApiKeySecret::parse(k) {
            Some(s) => s,
            None => return Ok(Denial::InvalidKey.into_response()),
        },
    };
    let now = clock::now_ms();
    let Some(key) = find_key(&state, &secret.hash(), now).await? else {
        return Ok(Denial::InvalidKey.into_response());
    };
    if !key.active {
        return Ok(Denial::InactiveKey.into_response());
    }
    if key.expires_at.is_some_and(|t| now >= t) {
        return Ok(Denial::ExpiredKey.into_response());
    }
    let path = uri.path().strip_prefix(PATH_PREFIX).unwrap_or("/");
    let path = if path.is_empty() { "/" } else { path };
    if !allows(&key.allowed, method.as_str(), path) {
        return Ok(Denial::EndpointNotAllowed.into_response());
    }
    let mut response = StatusCode::OK.into_response();
    let identity = [
        (KEY_ID_HEADER, Some(&key.key_id)),
        (WORKSPACE_ID_HEADER, Some(&key.workspace_id)),
        (EXTERNAL_ID_HEADER, key.external_id.as_ref()),
    ];
    for (name, value) in identity
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
    {
        if let Ok(v) = HeaderValue::from_str(value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), v);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(&str, &str)]) -> Vec<AllowRule> {
        list.iter()
            .map(|(m, p)| AllowRule {
                method: (*m).to_owned(),
                path: (*p).to_owned(),
            })
            .collect()
    }

    #[test]
    fn patterns_match_like_the_filter() {
        assert!(allows(&[], "DELETE", "/anything"));
        let r = rules(&[("GET", "/v1/things/*"), ("*", "/v1/open/**")]);
        assert!(allows(&r, "GET", "/v1/things/7"));
        assert!(!allows(&r, "POST", "/v1/things/7"));
        assert!(!allows(&r, "GET", "/v1/things/7/x"));
        assert!(!allows(&r, "GET", "/v1/things"));
        assert!(allows(&r, "PUT", "/v1/open"));
        assert!(allows(&r, "PUT", "/v1/open/a/b"));
        assert!(!allows(&r, "PUT", "/v1/opener"));
    }
}
