use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{parse_json, AppState, JsonBody, List, PathParam};
use crate::app::keys::{self as key_cases, CreateKey, KeyWithSecret, PatchKey};
use crate::app::Principal;
use crate::clock;
use crate::domain::{AllowRule, ApiKey, Quotas};
use crate::error::ApiError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    #[serde(default)]
    grace_seconds: i64,
}

/// A key as the API shows it: never the secret, except right after creation or rotation.
#[derive(Debug, Serialize)]
pub struct KeyView {
    id: String,
    workspace_id: String,
    alias: String,
    description: Option<String>,
    category: String,
    active: bool,
    status: &'static str,
    expires_at: Option<String>,
    quotas: Quotas,
    allowed: Vec<AllowRule>,
    created_at: String,
    last_used_at: Option<String>,
    calls_this_month: u64,
    prefix: String,
    hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

impl KeyView {
    fn new(key: ApiKey, now_ms: i64) -> Self {
        Self {
            status: key.status(now_ms).as_str(),
            expires_at: key.expires_at.map(clock::format_rfc3339),
            created_at: clock::format_rfc3339(key.created_at),
            last_used_at: key.last_used_at.map(clock::format_rfc3339),
            calls_this_month: key.calls_this_month,
            id: key.id,
            workspace_id: key.workspace_id,
            alias: key.alias,
            description: key.description,
            category: key.category,
            active: key.active,
            quotas: key.quotas,
            allowed: key.allowed,
            prefix: key.prefix,
            hash: key.hash,
            secret: None,
        }
    }

    /// Right after creation or rotation: the only answer that carries the secret.
    fn with_secret(created: KeyWithSecret) -> Self {
        let mut view = Self::new(created.key, created.now_ms);
        view.secret = Some(created.secret.expose().to_owned());
        view
    }
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(workspace_id): PathParam,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<KeyView>), ApiError> {
    let created = key_cases::create(&*state.store, &principal, &workspace_id, body).await?;
    Ok((StatusCode::CREATED, Json(KeyView::with_secret(created))))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(workspace_id): PathParam,
) -> Result<Json<List<KeyView>>, ApiError> {
    let keys = key_cases::list(&*state.store, &principal, &workspace_id).await?;
    let now = clock::now_ms();
    Ok(Json(List {
        data: keys.into_iter().map(|k| KeyView::new(k, now)).collect(),
    }))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
) -> Result<Json<KeyView>, ApiError> {
    let key = principal.key(&*state.store, &id).await?;
    Ok(Json(KeyView::new(key, clock::now_ms())))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<PatchKey>,
) -> Result<Json<KeyView>, ApiError> {
    let key = key_cases::update(&*state.store, &principal, &id, body).await?;
    Ok(Json(KeyView::new(key, clock::now_ms())))
}

/// The body is optional: an empty body rotates without grace.
pub async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
    body: Bytes,
) -> Result<Json<KeyView>, ApiError> {
    // A key the caller cannot see is not found, whatever the body says.
    principal.key(&*state.store, &id).await?;
    let body: RotateKey = if body.iter().all(u8::is_ascii_whitespace) {
        RotateKey::default()
    } else {
        parse_json(&body)?
    };
    let rotated = key_cases::rotate(&*state.store, &principal, &id, body.grace_seconds).await?;
    Ok(Json(KeyView::with_secret(rotated)))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    key_cases::delete(&*state.store, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
