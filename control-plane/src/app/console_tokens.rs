//! Console tokens: a workspace's own view of the API and the dashboard. Only the admin creates
//! them; the token is shown once and only its SHA-256 is stored.

use sha2::{Digest, Sha256};

use super::{AppError, AppState, Principal};
use crate::domain::{ConsoleToken, NewConsoleToken, ValidationError};
use crate::{base62, clock, ids};

/// Console tokens start with this, so a mistyped one gets a message naming the right kind.
pub const CONSOLE_TOKEN_PREFIX: &str = "tgc_";
const NAME_MAX: usize = 100;

fn token_name(input: &str) -> Result<String, ValidationError> {
    let name = input.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX {
        return Err(ValidationError::new(
            "name",
            format!("must be 1-{NAME_MAX} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new token for `workspace_id`, with its secret text (returned this once).
pub async fn create(
    app: &AppState,
    principal: &Principal,
    workspace_id: &str,
    name: &str,
) -> Result<(ConsoleToken, String), AppError> {
    principal.require_admin()?;
    let name = token_name(name)?;
    let token = format!("{CONSOLE_TOKEN_PREFIX}{}", base62::random(32));
    let created = app
        .store()
        .create_console_token(NewConsoleToken {
            id: ids::console_token_id(),
            workspace_id: workspace_id.to_owned(),
            name,
            created_at: clock::now_ms(),
            hash: hash(&token),
        })
        .await?;
    Ok((created, token))
}

pub async fn list(
    app: &AppState,
    principal: &Principal,
    workspace_id: &str,
) -> Result<Vec<ConsoleToken>, AppError> {
    principal.check_workspace(workspace_id)?;
    Ok(app.store().console_tokens(workspace_id).await?)
}

/// A console token may delete the tokens of its own workspace (itself included).
pub async fn delete(app: &AppState, principal: &Principal, id: &str) -> Result<(), AppError> {
    if !ids::could_exist(id) {
        return Err(crate::store::StoreError::ConsoleTokenNotFound.into());
    }
    let token = app.store().console_token(id).await?;
    if !principal.can_see(&token.workspace_id) {
        return Err(crate::store::StoreError::ConsoleTokenNotFound.into());
    }
    Ok(app.store().delete_console_token(id).await?)
}

/// The principal a console token authenticates, `None` for an unknown token.
pub async fn principal_of(app: &AppState, token: &str) -> Result<Option<Principal>, AppError> {
    if token.is_empty() {
        return Ok(None);
    }
    Ok(app
        .store()
        .console_token_by_hash(&hash(token))
        .await?
        .map(|t| Principal::Console {
            workspace_id: t.workspace_id,
            token_id: t.id,
        }))
}

/// Whether the console token behind a session still exists (and still names its workspace):
/// deleting a token ends the sessions it opened.
pub async fn still_valid(
    app: &AppState,
    workspace_id: &str,
    token_id: &str,
) -> Result<bool, AppError> {
    match app.store().console_token(token_id).await {
        Ok(token) => Ok(token.workspace_id == workspace_id),
        Err(crate::store::StoreError::ConsoleTokenNotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
