//! Tollgate control plane: workspaces, plans and API keys behind a REST API, the lookup endpoint
//! the Envoy filter calls (contract in `docs/protocol.md`), a CLI and a demo upstream.

pub mod api;
pub mod app;
pub mod base62;
pub mod body_limit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo_upstream;
pub mod domain;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod secret;
pub mod server;
pub mod store;
pub mod tokens;

pub mod web;

pub use config::ServeConfig;
pub use server::{serve, ServeError};
