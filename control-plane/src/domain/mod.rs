//! The control plane's domain: plans, workspaces, keys and their credit budgets, budget leases,
//! usage records and reports, console tokens, and the names they carry. Below every other part (the store, the API, the pages, the
//! CLI depend on it; it depends on none of them), so its files import each other directly and
//! never through this module.

pub mod credits;
pub mod key;
pub mod lease;
pub mod names;
pub mod plan;
pub mod usage;
pub mod validate;
pub mod wire;
pub mod workspace;

pub use credits::{CreditBudget, CreditPeriod, PeriodBounds};
pub use key::*;
pub use lease::{
    Exhausted, Grant, GrantRequest, LeaseAnswer, LeaseRequest, Meter, Room, Settlement,
};
pub use names::{
    Alias, Category, Description, ExternalId, PlanName, ValidationError, WorkspaceName,
};
pub use plan::Plan;
pub use usage::*;
pub use workspace::*;
