use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;

use super::{parse_json, AppState, BodyBytes, JsonBody, List, PathParam};
use crate::app::keys::{self as key_cases, CreateKey, KeyWithSecret, PatchKey};
use crate::app::Principal;
use crate::clock;
use crate::domain::wire::{KeyView, RotateKey};
use crate::error::ApiError;

/// `?external_id=`: only the keys that carry it (an empty value is no filter).
#[derive(Debug, Default, serde::Deserialize)]
struct ListParams {
    external_id: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(workspace_id): PathParam,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<(StatusCode, Json<KeyView>), ApiError> {
    let created = key_cases::create(&state, &principal, &workspace_id, body).await?;
    Ok((StatusCode::CREATED, Json(key_view_with_secret(created))))
}

/// The `external_id` filter of a key list's query string (an empty value is none).
pub(super) fn list_external_id(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let params: ListParams = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|e| ApiError::malformed(format!("invalid query string: {e}")))?;
    Ok(params.external_id.filter(|x| !x.is_empty()))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(workspace_id): PathParam,
    RawQuery(raw): RawQuery,
) -> Result<Json<List<KeyView>>, ApiError> {
    let keys = match list_external_id(raw.as_deref())? {
        Some(x) => key_cases::with_external_id(&state, &principal, &workspace_id, &x).await?,
        None => key_cases::list(&state, &principal, &workspace_id).await?,
    };
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
    let key = principal.key(&state, &id).await?;
    Ok(Json(KeyView::new(key, clock::now_ms())))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<PatchKey>,
) -> Result<Json<KeyView>, ApiError> {
    let key = key_cases::update(&state, &principal, &id, body).await?;
    Ok(Json(KeyView::new(key, clock::now_ms())))
}

/// The body is optional: an empty body rotates without grace.
pub async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
    BodyBytes(body): BodyBytes,
) -> Result<Json<KeyView>, ApiError> {
    // A key the caller cannot see is not found, whatever the body says.
    principal.key(&state, &id).await?;
    let body: RotateKey = if body.iter().all(u8::is_ascii_whitespace) {
        RotateKey::default()
    } else {
        parse_json(&body)?
    };
    let rotated = key_cases::rotate(&state, &principal, &id, body.grace_seconds).await?;
    Ok(Json(key_view_with_secret(rotated)))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    key_cases::delete(&state, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn key_view_with_secret(created: KeyWithSecret) -> KeyView {
    KeyView::with_secret(created.key, created.secret.expose(), created.now_ms)
}
