//! The application layer: what a caller may do, once, for the JSON API, the dashboard's pages
//! and the CLI alike. Use cases take the store and the [`Principal`] and answer domain values or
//! an [`AppError`] that keeps the offending field as data, so no adapter parses a message.
//!
//! Today it holds the principal and its access rules, the key use cases that the API and the
//! pages share (create, rotate) and the request log's CSV export; the other handlers still reach
//! the store themselves.

pub mod analytics;
pub mod console_tokens;
pub mod edge;
pub mod error;
pub mod keys;
pub mod leases;
pub mod principal;
pub mod requests_csv;
pub mod workspaces;

pub use error::{AppError, ErrorKind};
pub use principal::Principal;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::store::Store;
use crate::tokens::Token;

/// What every request of the API and the pages works with: the store and the tokens. The store
/// is the application layer's own: handlers and pages reach data only through its use cases.
#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn Store>,
    pub admin_token: Token,
    pub filter_token: Token,
    pub key_cache_ttl_ms: u64,
    /// The longest a budget lease lasts.
    pub lease_ttl_ms: u64,
    metrics: Metrics,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        admin_token: Token,
        filter_token: Token,
        key_cache_ttl_ms: u64,
        lease_ttl_ms: u64,
    ) -> AppState {
        AppState {
            store,
            admin_token,
            filter_token,
            key_cache_ttl_ms,
            lease_ttl_ms,
            metrics: Metrics::default(),
        }
    }

    /// Counts what its use cases do in `metrics` (the server's, scraped at `/metrics`).
    pub fn with_metrics(mut self, metrics: Metrics) -> AppState {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn store(&self) -> &dyn Store {
        &*self.store
    }
}
