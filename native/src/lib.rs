//! Tollgate as an Envoy dynamic module (`libtollgate_native.so`): the native adapter of
//! `tollgate-core`, loaded by `envoy.filters.http.dynamic_modules`. The same core, plugin
//! configuration, denials, headers, limits and usage records as the wasm build; only the host
//! differs: Envoy's callbacks are plain C calls, and what the wasm build keeps in Envoy's
//! shared data lives in this module's memory (one copy per Envoy process).
//!
//! - `abi`: the ABI's declarations (hand-written from Envoy's `abi.h`), `abi_check` at load.
//! - `hooks`: the `envoy_dynamic_module_on_*` hooks, each behind the panic `barrier`.
//! - `envoy`: safe handles over the callbacks; `logger`: `log` into Envoy's log.
//! - `plugin`: a filter configuration (workers, usage delivery, metrics, the main-thread tick);
//!   `worker_slot`: one worker's core and its host; `request`: one stream.
//! - `shared_memory`: the Envoy-wide store; `resumed`: a decision carried to a waiting request.

pub mod abi;
pub mod abi_check;
pub mod barrier;
pub mod envoy;
pub mod hooks;
pub mod logger;
pub mod plugin;
pub mod request;
pub mod resumed;
pub mod shared_memory;
pub mod worker_slot;
