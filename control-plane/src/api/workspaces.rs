use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{AppState, JsonBody, List, PathParam};
use crate::app::{workspaces, Principal};
use crate::domain::wire::{CreateWorkspace, WorkspaceView};
use crate::error::ApiError;

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<CreateWorkspace>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    let workspace = workspaces::create(&state, &principal, &body.name, &body.plan).await?;
    Ok((StatusCode::CREATED, Json(workspace.into())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateWorkspace {
    plan: String,
}

/// Moves a workspace to another plan (admin only: plans are what customers pay for).
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
    JsonBody(body): JsonBody<UpdateWorkspace>,
) -> Result<Json<WorkspaceView>, ApiError> {
    let workspace = workspaces::set_plan(&state, &principal, &id, &body.plan).await?;
    Ok(Json(workspace.into()))
}

/// A console token lists its own workspace only.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<List<WorkspaceView>>, ApiError> {
    let workspaces = workspaces::list(&state, &principal).await?;
    Ok(Json(List {
        data: workspaces.into_iter().map(WorkspaceView::from).collect(),
    }))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
) -> Result<Json<WorkspaceView>, ApiError> {
    Ok(Json(principal.workspace(&state, &id).await?.into()))
}
