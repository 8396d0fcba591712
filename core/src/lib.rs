//! Tollgate's filter core: everything the filter decides and counts, with no proxy-wasm in
//! reach (this crate does not depend on it, so the compiler keeps the boundary). An adapter —
//! the wasm filter in the root crate today — implements the host traits of `host` and moves
//! data between these modules and Envoy; everything here is unit-tested natively against
//! `host::FakeHost`, which follows Envoy's shared-data rules.

pub mod action;
pub mod allowed;
pub mod answer;
pub mod api_key;
pub mod budget;
pub mod budgets;
pub mod cache;
pub mod chunk;
pub mod client_ip;
pub mod config;
pub mod counters;
pub mod decision;
pub mod denial;
pub mod duration;
pub mod fast_hash;
pub mod header_map;
pub mod host;
pub mod ingest_answer;
pub mod ip_block;
pub mod key_source;
pub mod key_state;
pub mod lease_record;
pub mod lease_wire;
pub mod limit_headers;
pub mod limiter;
pub mod lookups;
pub mod metrics;
pub mod rate_limit;
pub mod record_batch;
pub mod routes;
pub mod upstream;
pub mod usage_buffer;
pub mod usage_delivery;
pub mod usage_record;
pub mod worker;
mod worker_leases;
mod worker_lookup_leases;
pub mod worker_records;
#[cfg(test)]
mod worker_tests;
