use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{AppState, JsonBody, List};
use crate::app::Principal;
use crate::domain::Plan;
use crate::domain::ValidationError;
use crate::error::ApiError;

/// A custom plan: `null` (or absent) limits mean unlimited.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    name: String,
    max_keys: Option<i64>,
    rate_limit_per_second: Option<i64>,
    rate_limit_per_minute: Option<i64>,
}

fn limit(field: &str, value: Option<i64>) -> Result<Option<i64>, ApiError> {
    match value {
        Some(n) if !(1..=1_000_000_000_000).contains(&n) => Err(ApiError::from(
            ValidationError::new(field, "must be a positive integer (or null for no limit)"),
        )),
        other => Ok(other),
    }
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreatePlan>,
) -> Result<(StatusCode, Json<Plan>), ApiError> {
    principal.require_admin()?;
    let name = body.name.trim();
    let valid = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(ValidationError::new("name", "must be 1-32 characters of [a-z0-9_-]").into());
    }
    let plan = Plan {
        name: name.to_owned(),
        max_keys: limit("max_keys", body.max_keys)?,
        rate_limit_per_second: limit("rate_limit_per_second", body.rate_limit_per_second)?,
        rate_limit_per_minute: limit("rate_limit_per_minute", body.rate_limit_per_minute)?,
    };
    Ok((
        StatusCode::CREATED,
        Json(state.store.create_plan(plan).await?),
    ))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<List<Plan>>, ApiError> {
    Ok(Json(List {
        data: state.store.plans().await?,
    }))
}
