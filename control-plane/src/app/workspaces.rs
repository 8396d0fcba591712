//! Workspaces and the plans they are on. Creating a workspace, moving it to another plan and
//! creating a plan are the admin's; a console token sees its own workspace only.

use super::{AppError, AppState, Principal};
use crate::domain::{NewWorkspace, Plan, PlanName, ValidationError, Workspace, WorkspaceName};
use crate::{clock, ids};

/// The workspaces the caller may see.
pub async fn list(app: &AppState, principal: &Principal) -> Result<Vec<Workspace>, AppError> {
    let mut workspaces = app.store().workspaces().await?;
    workspaces.retain(|ws| principal.can_see(&ws.id));
    Ok(workspaces)
}

pub async fn create(
    app: &AppState,
    principal: &Principal,
    name: &str,
    plan: &str,
) -> Result<Workspace, AppError> {
    principal.require_admin()?;
    let name = WorkspaceName::parse(name)?;
    let plan = PlanName::parse(plan, &app.store().plans().await?)?;
    Ok(app
        .store()
        .create_workspace(NewWorkspace {
            id: ids::workspace_id(),
            name,
            plan,
            created_at: clock::now_ms(),
        })
        .await?)
}

/// Moves a workspace to another plan; its keys' lookups see the new limits.
pub async fn set_plan(
    app: &AppState,
    principal: &Principal,
    id: &str,
    plan: &str,
) -> Result<Workspace, AppError> {
    principal.require_admin()?;
    principal.check_workspace(id)?;
    let plan = PlanName::parse(plan, &app.store().plans().await?)?;
    Ok(app.store().set_workspace_plan(id, &plan).await?)
}

pub async fn plans(app: &AppState) -> Result<Vec<Plan>, AppError> {
    Ok(app.store().plans().await?)
}

/// A custom plan: `None` limits are unlimited.
pub struct NewPlan<'a> {
    pub name: &'a str,
    pub max_keys: Option<i64>,
    pub rate_limit_per_second: Option<i64>,
    pub rate_limit_per_minute: Option<i64>,
}

fn limit(field: &str, value: Option<i64>) -> Result<Option<i64>, ValidationError> {
    match value {
        Some(n) if !(1..=1_000_000_000_000).contains(&n) => Err(ValidationError::new(
            field,
            "must be a positive integer (or null for no limit)",
        )),
        other => Ok(other),
    }
}

pub async fn create_plan(
    app: &AppState,
    principal: &Principal,
    input: NewPlan<'_>,
) -> Result<Plan, AppError> {
    principal.require_admin()?;
    let name = input.name.trim();
    let valid = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(ValidationError::new("name", "must be 1-32 characters of [a-z0-9_-]").into());
    }
    let plan = Plan {
        name: name.to_owned(),
        max_keys: limit("max_keys", input.max_keys)?,
        rate_limit_per_second: limit("rate_limit_per_second", input.rate_limit_per_second)?,
        rate_limit_per_minute: limit("rate_limit_per_minute", input.rate_limit_per_minute)?,
    };
    Ok(app.store().create_plan(plan).await?)
}
