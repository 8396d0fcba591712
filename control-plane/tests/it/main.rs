//! API tests: the real server in-process on port 0 with a temporary data directory, one per
//! test, so they run in parallel. Calls state the status they expect.

// clippy.toml allows these inside #[test] functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod analytics;
mod auth;
mod cli;
mod common;
mod console;
mod credits_analytics;
mod ext_authz;
mod filter;
mod full_disk;
mod hostile_input;
mod ingest;
mod key_limits;
mod keys;
mod leases;
mod leases_in_time;
mod logs;
mod lookup_leases;
mod lookup_usage;
mod metrics;
mod migration;
mod openapi_check;
mod postgres;
mod tokens;
mod upstream;
mod workspaces;
