//! Console tokens (a workspace's own view of the API) and `GET /v1/whoami`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::auth::CONSOLE_TOKEN_PREFIX;
use super::{AppState, JsonBody, List, PathParam};
use crate::app::Principal;
use crate::clock;
use crate::domain::{ConsoleToken, NewConsoleToken};
use crate::error::ApiError;
use crate::{base62, ids};

const NAME_MAX: usize = 100;

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

fn token_name(input: &str) -> Result<String, ApiError> {
    let name = input.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX {
        return Err(ApiError::BadRequest(format!(
            "name: must be 1-{NAME_MAX} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "name: must not contain control characters".to_owned(),
        ));
    }
    Ok(name.to_owned())
}

/// Admin only. The token is returned once; only its SHA-256 is stored.
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(workspace_id): PathParam,
    JsonBody(body): JsonBody<CreateConsoleToken>,
) -> Result<(StatusCode, Json<ConsoleTokenView>), ApiError> {
    principal.require_admin()?;
    let name = token_name(&body.name)?;
    let token = format!("{CONSOLE_TOKEN_PREFIX}{}", base62::random(32));
    let created = state
        .store
        .create_console_token(NewConsoleToken {
            id: ids::console_token_id(),
            workspace_id,
            name,
            created_at: clock::now_ms(),
            hash: hex::encode(Sha256::digest(token.as_bytes())),
        })
        .await?;
    let mut view = ConsoleTokenView::from(created);
    view.token = Some(token);
    Ok((StatusCode::CREATED, Json(view)))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    PathParam(workspace_id): PathParam,
) -> Result<Json<List<ConsoleTokenView>>, ApiError> {
    principal.check_workspace(&workspace_id)?;
    let tokens = state.store.console_tokens(&workspace_id).await?;
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
    let token = state.store.console_token(&id).await?;
    if !principal.can_see(&token.workspace_id) {
        return Err(crate::store::StoreError::ConsoleTokenNotFound.into());
    }
    state.store.delete_console_token(&id).await?;
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
