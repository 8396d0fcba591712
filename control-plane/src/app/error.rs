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

impl AppError {
    /// The input the error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid(e) => Some(&e.field),
            Self::Store(StoreError::AliasTaken(_)) => Some("alias"),
            _ => None,
        }
    }
}
