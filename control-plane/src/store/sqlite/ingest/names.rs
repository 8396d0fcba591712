//! The name dictionary: keys, workspaces, methods, endpoints and instances as integer ids of
//! `usage_names`, cached in the writer.

use super::*;

impl Writer {
    /// The `usage_names` id of `name`, storing it if new.
    pub(super) fn name_id(
        &self,
        name: &str,
        new_names: &mut HashMap<String, i64>,
    ) -> rusqlite::Result<i64> {
        if let Some(id) = self.names.get(name).or_else(|| new_names.get(name)) {
            return Ok(*id);
        }
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM usage_names WHERE name = ?1")?
            .query_row([name], |row| row.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                self.conn
                    .prepare_cached("INSERT INTO usage_names (name) VALUES (?1)")?
                    .execute([name])?;
                self.conn.last_insert_rowid()
            }
        };
        new_names.insert(name.to_owned(), id);
        Ok(id)
    }
}
