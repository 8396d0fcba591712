//! A plan: how many keys a workspace may have and its rate limits.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub name: String,
    /// `None` = unlimited, here and in the rate limits.
    pub max_keys: Option<i64>,
    pub rate_limit_per_second: Option<i64>,
    pub rate_limit_per_minute: Option<i64>,
}
