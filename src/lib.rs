//! Tollgate filter for Envoy (proxy-wasm): the wasm adapter of `tollgate-core`. Root and HTTP
//! contexts (`root`, `request`), the per-worker glue between them and the core (`worker`), the
//! usage service (`usage_service`) and the host calls behind the core's traits (`wasm_host`).
//! Decisions, counters and record formats live in the core.

pub mod request;
pub mod root;
pub mod usage_service;
pub mod wasm_host;
pub mod worker;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::TollgateRoot::new(context_id)));
}}
