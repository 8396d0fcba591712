//! What `tollgate serve` runs with. The CLI fills it from flags and environment; tests build it
//! directly.

use std::path::PathBuf;

use crate::tokens::Token;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DEMO_UPSTREAM_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_DATA_DIR: &str = "./data";
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
pub const DEFAULT_KEY_CACHE_TTL_MS: u64 = 5000;
pub const DATABASE_FILE: &str = "tollgate.db";

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Holds `tollgate.db` and, when the tokens are not configured, `admin-token` and
    /// `filter-token`. Created (mode 0700) if missing.
    pub data_dir: PathBuf,
    /// `None`: read `<data_dir>/admin-token`, generating it on first start.
    pub admin_token: Option<Token>,
    /// `None`: read `<data_dir>/filter-token`, generating it on first start.
    pub filter_token: Option<Token>,
    /// Upper bound of `cache_ttl_ms` in filter lookups.
    pub key_cache_ttl_ms: u64,
}

impl ServeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            admin_token: None,
            filter_token: None,
            key_cache_ttl_ms: DEFAULT_KEY_CACHE_TTL_MS,
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
}
