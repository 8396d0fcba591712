//! A statement built piece by piece with its values, for queries whose filters vary (the
//! request log). Each bound value becomes the next `$n`.

use super::Value;

#[derive(Debug, Default)]
pub(crate) struct QueryBuilder {
    sql: String,
    args: Vec<Value>,
}

impl QueryBuilder {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    pub fn push(&mut self, sql: impl AsRef<str>) -> &mut Self {
        self.sql.push_str(sql.as_ref());
        self
    }

    pub fn push_bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.args.push(value.into());
        self.sql.push('$');
        self.sql.push_str(&self.args.len().to_string());
        self
    }

    /// `values` bound as a comma-separated list.
    pub fn push_list<V: Into<Value>>(&mut self, values: impl IntoIterator<Item = V>) -> &mut Self {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.push_bind(v);
        }
        self
    }

    pub fn build(self) -> (String, Vec<Value>) {
        (self.sql, self.args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_each_bound_value() {
        let mut q = QueryBuilder::new("SELECT 1 WHERE a = ");
        q.push_bind(7_i64)
            .push(" AND b IN (")
            .push_list(["x", "y"])
            .push(")");
        let (sql, args) = q.build();
        assert_eq!(sql, "SELECT 1 WHERE a = $1 AND b IN ($2, $3)");
        assert_eq!(
            args,
            vec![
                Value::Int(7),
                Value::Text("x".into()),
                Value::Text("y".into())
            ]
        );
    }
}
