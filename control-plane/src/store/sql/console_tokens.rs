//! Console tokens: a workspace's sign-in tokens for the dashboard (stored as hashes).

use crate::domain::{ConsoleToken, NewConsoleToken};
use crate::store::sql::catalog::require_workspace;
use crate::store::sql::{args, in_read, in_write, Database, Row};
use crate::store::{StoreError, StoreResult};

const SELECT_TOKENS: &str = "SELECT id, workspace_id, name, created_at FROM console_tokens";

fn token_from_row(r: &Row) -> StoreResult<ConsoleToken> {
    Ok(ConsoleToken {
        id: r.get("id")?,
        workspace_id: r.get("workspace_id")?,
        name: r.get("name")?,
        created_at: r.get("created_at")?,
    })
}

pub(crate) async fn create<D: Database>(
    db: &D,
    token: NewConsoleToken,
) -> StoreResult<ConsoleToken> {
    let inserted = in_write!(db, |tx| {
        // Inserted only if the workspace exists, in one statement.
        let sql = "INSERT INTO console_tokens (id, workspace_id, name, created_at, hash) \
                 SELECT $1, id, $3, $4, $5 FROM workspaces WHERE id = $2";
        let values = args![
            &token.id,
            &token.workspace_id,
            &token.name,
            token.created_at,
            &token.hash
        ];
        tx.execute(sql, values).await
    })?;
    if inserted == 0 {
        return Err(StoreError::WorkspaceNotFound);
    }
    Ok(ConsoleToken {
        id: token.id,
        workspace_id: token.workspace_id,
        name: token.name,
        created_at: token.created_at,
    })
}

/// The workspace's tokens, oldest first (the 404 read in the same snapshot).
pub(crate) async fn list<D: Database>(
    db: &D,
    workspace_id: &str,
) -> StoreResult<Vec<ConsoleToken>> {
    in_read!(db, |tx| {
        require_workspace(tx, workspace_id).await?;
        let sql = format!("{SELECT_TOKENS} WHERE workspace_id = $1 ORDER BY created_at, id");
        let rows = tx.rows(&sql, args![workspace_id]).await?;
        rows.iter().map(token_from_row).collect()
    })
}

/// The token with `column` = `value`, if any.
async fn find<D: Database>(db: &D, column: &str, value: &str) -> StoreResult<Option<ConsoleToken>> {
    in_read!(db, |tx| {
        let sql = format!("{SELECT_TOKENS} WHERE {column} = $1");
        let row = tx.row(&sql, args![value]).await?;
        row.as_ref().map(token_from_row).transpose()
    })
}

pub(crate) async fn get<D: Database>(db: &D, id: &str) -> StoreResult<ConsoleToken> {
    find(db, "id", id)
        .await?
        .ok_or(StoreError::ConsoleTokenNotFound)
}

pub(crate) async fn by_hash<D: Database>(db: &D, hash: &str) -> StoreResult<Option<ConsoleToken>> {
    find(db, "hash", hash).await
}

pub(crate) async fn delete<D: Database>(db: &D, id: &str) -> StoreResult<()> {
    let deleted = in_write!(db, |tx| {
        tx.execute("DELETE FROM console_tokens WHERE id = $1", args![id])
            .await
    })?;
    if deleted == 0 {
        return Err(StoreError::ConsoleTokenNotFound);
    }
    Ok(())
}
