use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{AppState, JsonBody, List};
use crate::app::workspaces::{self, NewPlan};
use crate::app::Principal;
use crate::domain::Plan;
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

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreatePlan>,
) -> Result<(StatusCode, Json<Plan>), ApiError> {
    let input = NewPlan {
        name: &body.name,
        max_keys: body.max_keys,
        rate_limit_per_second: body.rate_limit_per_second,
        rate_limit_per_minute: body.rate_limit_per_minute,
    };
    let plan = workspaces::create_plan(&state, &principal, input).await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<List<Plan>>, ApiError> {
    Ok(Json(List {
        data: workspaces::plans(&state).await?,
    }))
}
