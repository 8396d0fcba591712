//! Plans and workspaces.

use crate::domain::{NewWorkspace, Plan, PlanName, Workspace};
use crate::store::sql::{args, in_read, in_write, unique_violation, Database, Row, Sql, Unique};
use crate::store::{StoreError, StoreResult};

const PLAN_COLUMNS: &str = "name, max_keys, rate_limit_per_second, rate_limit_per_minute";
const WORKSPACE_COLUMNS: &str = "id, name, plan, created_at";

fn plan_from_row(r: &Row) -> StoreResult<Plan> {
    Ok(Plan {
        name: r.get("name")?,
        max_keys: r.get("max_keys")?,
        rate_limit_per_second: r.get("rate_limit_per_second")?,
        rate_limit_per_minute: r.get("rate_limit_per_minute")?,
    })
}

fn workspace_from_row(r: &Row) -> StoreResult<Workspace> {
    Ok(Workspace {
        id: r.get("id")?,
        name: r.get("name")?,
        plan: r.get("plan")?,
        created_at: r.get("created_at")?,
    })
}

pub(crate) async fn plans<D: Database>(db: &D) -> StoreResult<Vec<Plan>> {
    in_read!(db, |tx| {
        let sql =
            format!("SELECT {PLAN_COLUMNS} FROM plans ORDER BY max_keys IS NULL, max_keys, name");
        let rows = tx.rows(&sql, args![]).await?;
        rows.iter().map(plan_from_row).collect()
    })
}

pub(crate) async fn create_plan<D: Database>(db: &D, plan: Plan) -> StoreResult<Plan> {
    let inserted = in_write!(db, |tx| {
        let sql = format!("INSERT INTO plans ({PLAN_COLUMNS}) VALUES ($1, $2, $3, $4)");
        let values = args![
            &plan.name,
            plan.max_keys,
            plan.rate_limit_per_second,
            plan.rate_limit_per_minute
        ];
        tx.execute(&sql, values).await
    });
    match inserted {
        Ok(_) => Ok(plan),
        Err(e) if unique_violation(&e) == Some(Unique::PlanName) => {
            Err(StoreError::PlanExists(plan.name))
        }
        Err(e) => Err(e),
    }
}

pub(crate) async fn set_workspace_plan<D: Database>(
    db: &D,
    workspace_id: &str,
    plan: &PlanName,
) -> StoreResult<Workspace> {
    in_write!(db, |tx| {
        let sql =
            format!("UPDATE workspaces SET plan = $1 WHERE id = $2 RETURNING {WORKSPACE_COLUMNS}");
        let row = tx.row(&sql, args![plan.as_str(), workspace_id]).await?;
        row.as_ref()
            .map(workspace_from_row)
            .ok_or(StoreError::WorkspaceNotFound)?
    })
}

pub(crate) async fn create_workspace<D: Database>(
    db: &D,
    ws: NewWorkspace,
) -> StoreResult<Workspace> {
    in_write!(db, |tx| {
        let sql = format!("INSERT INTO workspaces ({WORKSPACE_COLUMNS}) VALUES ($1, $2, $3, $4)");
        let values = args![&ws.id, ws.name.as_str(), ws.plan.as_str(), ws.created_at];
        tx.execute(&sql, values).await
    })?;
    Ok(Workspace {
        id: ws.id,
        name: ws.name.into_inner(),
        plan: ws.plan.into_inner(),
        created_at: ws.created_at,
    })
}

pub(crate) async fn workspaces<D: Database>(db: &D) -> StoreResult<Vec<Workspace>> {
    in_read!(db, |tx| {
        let sql = format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces ORDER BY created_at, id");
        let rows = tx.rows(&sql, args![]).await?;
        rows.iter().map(workspace_from_row).collect()
    })
}

pub(crate) async fn workspace<D: Database>(db: &D, id: &str) -> StoreResult<Workspace> {
    in_read!(db, |tx| {
        let sql = format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = $1");
        let row = tx.row(&sql, args![id]).await?;
        row.as_ref()
            .map(workspace_from_row)
            .ok_or(StoreError::WorkspaceNotFound)?
    })
}

/// `WorkspaceNotFound` unless workspace `id` exists (in `tx`'s snapshot).
pub(crate) async fn require_workspace(tx: &mut dyn Sql, id: &str) -> StoreResult<()> {
    match tx
        .row("SELECT 1 FROM workspaces WHERE id = $1", args![id])
        .await?
    {
        Some(_) => Ok(()),
        None => Err(StoreError::WorkspaceNotFound),
    }
}
