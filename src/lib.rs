//! Tollgate filter: API keys, quotas and usage analytics enforced in Envoy (proxy-wasm).
//!
//! Host-independent core: `api_key`, `config`, `key_state`, `allowed`, `decision`, `denial`,
//! `cache`, `lookups`, `answer`, `metrics`, `routes`, `usage_record`, `record_batch`, `usage_buffer`
//! (unit-tested natively against `host::FakeHost`).
//! Thin adapter over the proxy-wasm host: `root`, `request`, `worker`, `usage_service`,
//! `wasm_host`.

pub mod allowed;
pub mod answer;
pub mod api_key;
pub mod cache;
pub mod config;
pub mod counters;
pub mod decision;
pub mod denial;
pub mod duration;
pub mod fast_hash;
pub mod header_map;
pub mod host;
pub mod ip_block;
pub mod key_source;
pub mod key_state;
pub mod lease;
pub mod limit_headers;
pub mod lookups;
pub mod metrics;
pub mod quota;
pub mod rate_limit;
pub mod record_batch;
pub mod request;
pub mod root;
pub mod routes;
pub mod upstream;
pub mod usage_buffer;
pub mod usage_record;
pub mod usage_service;
pub mod wasm_host;
pub mod worker;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::TollgateRoot::new(context_id)));
}}
