//! What `tollgate serve` runs with. The CLI fills it from flags and environment; tests build it
//! directly.

use std::path::PathBuf;
use std::time::Duration;

use crate::tokens::Token;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DEMO_UPSTREAM_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_DATA_DIR: &str = "./data";
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
pub const DEFAULT_KEY_CACHE_TTL_MS: u64 = 5000;
pub const DATABASE_FILE: &str = "tollgate.db";
/// Filter lookup answers the SQLite store keeps by default (`--lookup-cache`).
pub const DEFAULT_LOOKUP_CACHE_ENTRIES: usize = 50_000;
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
pub const DEFAULT_ROLLUP_RETENTION_DAYS: u32 = 400;
/// The longest a budget lease lasts (`--lease-ttl`).
pub const DEFAULT_LEASE_TTL_MS: u64 = 30_000;
/// The longest `--lease-ttl`: an hour (units leased for longer are out of reach of the other
/// Envoys for as long when their Envoy goes away).
pub const MAX_LEASE_TTL_MS: u64 = 3_600_000;

/// How long usage data is kept; 0 days = forever.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Raw usage records (the request log).
    pub raw_days: u32,
    /// Per-minute and per-hour rollups (usage analytics).
    pub rollup_days: u32,
    /// Time between two passes (the first runs at startup).
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw_days: DEFAULT_RETENTION_DAYS,
            rollup_days: DEFAULT_ROLLUP_RETENTION_DAYS,
            every: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Holds `tollgate.db` (unless `database_url` is set) and, when the tokens are not
    /// configured, `admin-token` and `filter-token`. Created (mode 0700) if missing.
    pub data_dir: PathBuf,
    /// `postgres://…`: keep everything in that PostgreSQL database instead of SQLite.
    pub database_url: Option<String>,
    /// `None`: read `<data_dir>/admin-token`, generating it on first start.
    pub admin_token: Option<Token>,
    /// `None`: read `<data_dir>/filter-token`, generating it on first start.
    pub filter_token: Option<Token>,
    /// Upper bound of `cache_ttl_ms` in filter lookups.
    pub key_cache_ttl_ms: u64,
    /// The longest a budget lease lasts (its `ttl_ms`).
    pub lease_ttl_ms: u64,
    /// Filter lookup answers SQLite keeps until a write could change them (0: none).
    pub lookup_cache_entries: usize,
    pub retention: Retention,
    /// Serve `GET /metrics` on this address only, instead of on the main listener.
    pub metrics_listen: Option<String>,
}

impl ServeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database_url: None,
            admin_token: None,
            filter_token: None,
            key_cache_ttl_ms: DEFAULT_KEY_CACHE_TTL_MS,
            lease_ttl_ms: DEFAULT_LEASE_TTL_MS,
            lookup_cache_entries: DEFAULT_LOOKUP_CACHE_ENTRIES,
            retention: Retention::default(),
            metrics_listen: None,
        }
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
}
