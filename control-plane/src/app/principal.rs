//! Who a caller is — the admin token, or a workspace's console token — and the one place that
//! decides what it may see. A console token sees only its workspace: anything else is not found,
//! as if it did not exist; admin-only actions are refused.

use crate::domain::{ApiKey, Workspace};
use crate::ids;
use crate::store::StoreError;

use super::{AppError, AppState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin token: every workspace.
    Admin,
    /// A workspace console token: that workspace only. `token_id` lets a deleted token end the
    /// dashboard sessions it opened.
    Console {
        workspace_id: String,
        token_id: String,
    },
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Admin)
    }

    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AppError::AdminOnly)
        }
    }

    pub fn can_see(&self, workspace_id: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Console {
                workspace_id: own, ..
            } => own == workspace_id,
        }
    }

    /// The workspace a console token is limited to; `None` for the admin.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Self::Admin => None,
            Self::Console { workspace_id, .. } => Some(workspace_id),
        }
    }

    /// `Ok` when the caller may see `workspace_id` (which may still not exist), else the same
    /// not-found a missing workspace gets.
    pub fn check_workspace(&self, workspace_id: &str) -> Result<(), AppError> {
        if self.can_see(workspace_id) && ids::could_exist(workspace_id) {
            Ok(())
        } else {
            Err(StoreError::WorkspaceNotFound.into())
        }
    }

    pub async fn workspace(&self, app: &AppState, id: &str) -> Result<Workspace, AppError> {
        self.check_workspace(id)?;
        Ok(app.store().workspace(id).await?)
    }

    /// The key, if it exists and the caller may see it (not found otherwise).
    pub async fn key(&self, app: &AppState, id: &str) -> Result<ApiKey, AppError> {
        if !ids::could_exist(id) {
            return Err(StoreError::KeyNotFound.into());
        }
        let key = app.store().key(id).await?;
        if self.can_see(&key.workspace_id) {
            Ok(key)
        } else {
            Err(StoreError::KeyNotFound.into())
        }
    }
}
