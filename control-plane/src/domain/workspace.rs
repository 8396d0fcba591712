//! A workspace: a customer's account, on one plan, holding its keys.

use super::names::{PlanName, WorkspaceName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub id: String,
    pub name: WorkspaceName,
    pub plan: PlanName,
    pub created_at: i64,
}
