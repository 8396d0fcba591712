//! What crosses between the shared SQL and a backend's driver: bound values, and rows read
//! back by column name. Each backend converts its driver's values into these (SQLite has no
//! boolean, so `Bool` binds as 0/1 there and an integer reads back as a `bool`). A bound NULL
//! keeps its type: PostgreSQL must know a parameter's type even when its value is NULL.

use std::sync::Arc;

use crate::store::{StoreError, StoreResult};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// NULL of this type (bound), or of no known type (read back).
    Null(Option<Kind>),
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Real,
    Text,
    Bool,
}

/// The SQL type of a Rust value bound as a parameter.
pub(crate) trait Typed {
    const KIND: Kind;
}

impl Typed for i64 {
    const KIND: Kind = Kind::Int;
}
impl Typed for u32 {
    const KIND: Kind = Kind::Int;
}
impl Typed for u16 {
    const KIND: Kind = Kind::Int;
}
impl Typed for f64 {
    const KIND: Kind = Kind::Real;
}
impl Typed for bool {
    const KIND: Kind = Kind::Bool;
}
impl Typed for &str {
    const KIND: Kind = Kind::Text;
}
impl Typed for &String {
    const KIND: Kind = Kind::Text;
}
impl Typed for String {
    const KIND: Kind = Kind::Text;
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<u16> for Value {
    fn from(v: u16) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl<T: Into<Value> + Typed> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null(Some(T::KIND)), Into::into)
    }
}

impl From<&Option<String>> for Value {
    fn from(v: &Option<String>) -> Self {
        v.as_deref().into()
    }
}

/// The values of a statement's parameters, `$1` first.
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        vec![$($crate::store::sql::Value::from($v)),*]
    };
}
pub(crate) use args;

/// One result row: its values under the statement's column names.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    columns: Arc<[String]>,
    values: Vec<Value>,
}

impl Row {
    pub fn new(columns: Arc<[String]>, values: Vec<Value>) -> Self {
        Self { columns, values }
    }

    /// The value of column `name`, as `T`; a missing column or another type is a backend error
    /// that names the column.
    pub fn get<T: FromValue>(&self, name: &str) -> StoreResult<T> {
        let value = self
            .columns
            .iter()
            .position(|c| c == name)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| StoreError::Backend(format!("no column {name} in the row").into()))?;
        T::from_value(value).ok_or_else(|| {
            StoreError::Backend(format!("column {name} holds {value:?}, not {}", T::NAME).into())
        })
    }

    /// The first column (for `SELECT count(*)` and the like).
    pub fn first<T: FromValue>(&self) -> StoreResult<T> {
        match self.columns.first() {
            Some(name) => self.get(&name.clone()),
            None => Err(StoreError::Backend("a row without columns".into())),
        }
    }
}

pub(crate) trait FromValue: Sized {
    const NAME: &'static str;
    fn from_value(v: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    const NAME: &'static str = "an integer";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    const NAME: &'static str = "a number";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Real(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for bool {
    const NAME: &'static str = "a boolean";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}

impl FromValue for String {
    const NAME: &'static str = "text";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const NAME: &'static str = T::NAME;
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null(_) => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row::new(
            vec!["n".to_owned(), "flag".to_owned(), "none".to_owned()].into(),
            vec![Value::Int(3), Value::Int(1), Value::Null(None)],
        )
    }

    #[test]
    fn reads_by_name_and_converts_sqlite_booleans() {
        let r = row();
        assert_eq!(r.get::<i64>("n").unwrap(), 3);
        assert!(r.get::<bool>("flag").unwrap());
        assert_eq!(r.get::<Option<i64>>("none").unwrap(), None);
        assert_eq!(r.first::<i64>().unwrap(), 3);
    }

    #[test]
    fn a_wrong_type_or_column_names_the_column() {
        let r = row();
        let e = r.get::<String>("n").unwrap_err().to_string();
        assert!(e.contains("column n"), "{e}");
        let e = r.get::<i64>("none").unwrap_err().to_string();
        assert!(e.contains("column none"), "{e}");
        let e = r.get::<i64>("absent").unwrap_err().to_string();
        assert!(e.contains("absent"), "{e}");
    }
}
