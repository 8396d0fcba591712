//! Console tokens (a workspace's own view of the API) and `GET /v1/whoami`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{AppState, JsonBody, List, PathParam};
use crate::app::{console_tokens, Principal};
use crate::clock;
use crate::domain::ConsoleToken;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConsoleToken {
    name: String,
}

#[derive(Debug, Serialize)]
pub struct ConsoleTokenView {
    id: String,
    workspace_id: String,
    name: String,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<ConsoleToken> for ConsoleTokenView {
    fn from(t: ConsoleToken) -> Self {
        Self {
            id: t.id,
            workspace_id: t.workspace_id,
            name: t.name,
            created_at: clock::format_rfc3339(t.created_at),
            token: None,
        }
    }
}

/// Admin only. The token is returned once; only its SHA-256 is stored.
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(workspace_id): PathParam,
    JsonBody(body): JsonBody<CreateConsoleToken>,
) -> Result<(StatusCode, Json<ConsoleTokenView>), ApiError> {
    let (created, token) =
        console_tokens::create(&state, &principal, &workspace_id, &body.name).await?;
    let mut view = ConsoleTokenView::from(created);
    view.token = Some(token);
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(workspace_id): PathParam,
) -> Result<Json<List<ConsoleTokenView>>, ApiError> {
    let tokens = console_tokens::list(&state, &principal, &workspace_id).await?;
    Ok(Json(List {
        data: tokens.into_iter().map(ConsoleTokenView::from).collect(),
    }))
}

/// A console token may delete the tokens of its own workspace (itself included).
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(id): PathParam,
) -> Result<StatusCode, ApiError> {
    console_tokens::delete(&state, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn whoami(principal: Principal) -> Json<Value> {
    Json(match principal {
        Principal::Admin => json!({"kind": "admin"}),
        Principal::Console { workspace_id, .. } => {
            json!({"kind": "console", "workspace_id": workspace_id})
        }
    })
}
