//! The one error of the application layer. Each adapter turns it into its own answer (a JSON
//! status and body, a form with the message beside its input) from the data it carries.

use crate::domain::ValidationError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad input; `field` names it (`quotas.daily`, `allowed[2].path`).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Only the admin token may do this.
    #[error("this route needs the admin token")]
    AdminOnly,
    /// What the store refused (not found, a conflict) or could not do.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How an adapter should answer an error, without knowing where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad value; the error names its field.
    Invalid,
    Forbidden,
    /// Missing, or not the caller's to see.
    NotFound,
    /// Refused because of what exists (a taken alias, a plan's key limit, a key with history).
    Conflict,
    /// The store has no room to write (a full disk): try again later.
    Unavailable,
    /// The store failed.
    Internal,
}

/// The `Retry-After` of an answer that the store is full, in seconds. Room comes back when an
/// operator frees disk or retention deletes old records, which takes longer than a request: a
/// client that honours it does not hammer a database that cannot write, and still tries again
/// soon after room is back. (The filter keeps its own backoff and buffers records meanwhile.)
pub const FULL_RETRY_AFTER_SECONDS: u32 = 10;

impl AppError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::AdminOnly => ErrorKind::Forbidden,
            Self::Store(
                StoreError::WorkspaceNotFound
                | StoreError::KeyNotFound
                | StoreError::ConsoleTokenNotFound,
            ) => ErrorKind::NotFound,
            Self::Store(
                StoreError::PlanKeyLimit { .. }
                | StoreError::AliasTaken(_)
                | StoreError::KeyHasHistory
                | StoreError::PlanExists(_),
            ) => ErrorKind::Conflict,
            Self::Store(StoreError::Full(_)) => ErrorKind::Unavailable,
            Self::Store(StoreError::Backend(_)) => ErrorKind::Internal,
        }
    }

    /// The cause of an internal or unavailable error, for the log.
    pub fn into_source(self) -> Option<Box<dyn std::error::Error + Send + Sync>> {
        match self {
            Self::Store(StoreError::Backend(source) | StoreError::Full(source)) => Some(source),
            _ => None,
        }
    }

    /// The input the error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid(e) => Some(&e.field),
            Self::Store(StoreError::AliasTaken(_)) => Some("alias"),
            _ => None,
        }
    }
}
