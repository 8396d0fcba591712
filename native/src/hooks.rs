//! The event hooks Envoy calls (`envoy_dynamic_module_on_*`, the ABI's names and signatures;
//! `abi.rs` has their types and each hook is checked against its type below). Every hook is
//! glue: it checks the pointers Envoy hands over, runs its body through the panic barrier,
//! and hands over to `RequestFilter` (a stream) or `Plugin` (a configuration).

// The hooks are entry points only Envoy calls, with pointers it owns and the ABI describes;
// each is checked (null, and the lengths Envoy gives) before it is read.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use crate::abi::*;
use crate::abi_check;
use crate::barrier::guard;
use crate::envoy::{envoy_bytes, is_validation_mode, CalloutAnswer, Config, Filter};
use crate::logger;
use crate::plugin::{Plugin, MAX_MAIN_ANSWER};
use crate::request::{resume, send_denial, RequestFilter, Verdict};
use std::sync::Arc;
use tollgate_core::worker::MAX_LOOKUP_ANSWER;

/// The stream behind a module pointer Envoy hands back (the `Box` made in `filter_new`).
///
/// # Safety
/// `ptr` is null or came from `envoy_dynamic_module_on_http_filter_new` and was not destroyed;
/// Envoy calls a stream's hooks one at a time, on its worker.
unsafe fn stream<'a>(ptr: HttpFilterModulePtr) -> Option<&'a mut RequestFilter> {
    (ptr as *mut RequestFilter).as_mut()
}

/// The configuration behind a module pointer (the `Arc` made in `config_new`), borrowed.
///
/// # Safety
/// `ptr` is null or came from `envoy_dynamic_module_on_http_filter_config_new` and was not
/// destroyed.
unsafe fn plugin<'a>(ptr: HttpFilterConfigModulePtr) -> Option<&'a Plugin> {
    (ptr as *const Plugin).as_ref()
}

/// Should even a request hook's fallback fail, the request stops (fail closed) rather than
/// pass unchecked.
impl Default for OnHttpFilterRequestHeadersStatus {
    fn default() -> Self {
        Self::STOP_ITERATION
    }
}

/// A 500 for the request whose hook panicked (`barrier.rs`).
fn internal_error(filter: Filter) {
    filter.send_response(
        500,
        &[("content-type", "application/json")],
        br#"{"error":"Internal error in the Tollgate filter"}"#,
        "tollgate_internal_error",
    );
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> AbiVersionModulePtr {
    guard(
        "program_init",
        || {
            logger::install();
            match abi_check::missing_callbacks() {
                missing if missing.is_empty() => {
                    log::info!(
                        "tollgate: native module loaded, built for dynamic-module ABI {ABI_VERSION}"
                    );
                    ABI_VERSION_CSTR.as_ptr()
                }
                missing => {
                    log::error!(
                        "tollgate: refusing to load: this Envoy lacks {} of the callbacks the module was built for (dynamic-module ABI {ABI_VERSION}, Envoy 1.40): {}",
                        missing.len(),
                        missing.join(", ")
                    );
                    std::ptr::null()
                }
            }
        },
        std::ptr::null,
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> HttpFilterConfigModulePtr {
    guard(
        "http_filter_config_new",
        || {
            let Some(envoy) = Config::new(filter_config_envoy_ptr) else {
                return std::ptr::null();
            };
            // SAFETY: Envoy's buffers, read within this hook.
            let (name, bytes) = unsafe { (envoy_bytes(name), envoy_bytes(config)) };
            let name = String::from_utf8_lossy(name);
            let workers = crate::envoy::concurrency();
            let plugin = match Plugin::new(envoy, bytes, workers) {
                Ok(plugin) => Arc::new(plugin),
                Err(e) => {
                    log::error!("tollgate: filter '{name}': {e}");
                    return std::ptr::null();
                }
            };
            if !is_validation_mode() {
                if let Err(e) = plugin.start_ticker() {
                    log::error!("tollgate: filter '{name}': {e}");
                    return std::ptr::null();
                }
            }
            let config = &plugin.config;
            log::info!(
                "tollgate: filter '{name}' configured ({workers} workers); control plane {}, cache ttl {:?}, failure mode {:?}, usage records {}",
                config.control_plane,
                config.cache.ttl,
                config.failure_mode,
                if config.usage.enabled { "on" } else { "off" }
            );
            Arc::into_raw(plugin) as HttpFilterConfigModulePtr
        },
        std::ptr::null,
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    filter_config_ptr: HttpFilterConfigModulePtr,
) {
    guard(
        "http_filter_config_destroy",
        || {
            if filter_config_ptr.is_null() {
                return;
            }
            // SAFETY: the Arc made in config_new, released exactly once here.
            let plugin = unsafe { Arc::from_raw(filter_config_ptr as *const Plugin) };
            plugin.stop_ticker();
        },
        || (),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    filter_config_ptr: HttpFilterConfigModulePtr,
    filter_envoy_ptr: HttpFilterEnvoyPtr,
) -> HttpFilterModulePtr {
    guard(
        "http_filter_new",
        || {
            let Some(filter) = Filter::new(filter_envoy_ptr) else {
                return std::ptr::null();
            };
            if filter_config_ptr.is_null() {
                return std::ptr::null();
            }
            // SAFETY: the configuration's Arc outlives its streams; this stream takes a count.
            let plugin = unsafe {
                Arc::increment_strong_count(filter_config_ptr as *const Plugin);
                Arc::from_raw(filter_config_ptr as *const Plugin)
            };
            Box::into_raw(Box::new(RequestFilter::new(plugin, filter))) as HttpFilterModulePtr
        },
        std::ptr::null,
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    _end_of_stream: bool,
) -> OnHttpFilterRequestHeadersStatus {
    let Some(filter) = Filter::new(filter_envoy_ptr) else {
        return OnHttpFilterRequestHeadersStatus::CONTINUE;
    };
    guard(
        "http_filter_request_headers",
        || {
            // SAFETY: Envoy's pointer to the stream it created with filter_new.
            let Some(stream) = (unsafe { stream(filter_module_ptr) }) else {
                return OnHttpFilterRequestHeadersStatus::CONTINUE;
            };
            match stream.on_request_headers(filter) {
                Verdict::Continue => OnHttpFilterRequestHeadersStatus::CONTINUE,
                // Body and trailers wait with the headers.
                Verdict::Pause => OnHttpFilterRequestHeadersStatus::STOP_ALL_ITERATION_AND_BUFFER,
                Verdict::Reply(reply) => {
                    send_denial(filter, 0, &reply);
                    OnHttpFilterRequestHeadersStatus::STOP_ITERATION
                }
            }
        },
        || {
            internal_error(filter);
            OnHttpFilterRequestHeadersStatus::STOP_ITERATION
        },
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _filter_envoy_ptr: HttpFilterEnvoyPtr,
    _filter_module_ptr: HttpFilterModulePtr,
    _end_of_stream: bool,
) -> OnHttpFilterRequestBodyStatus {
    OnHttpFilterRequestBodyStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _filter_envoy_ptr: HttpFilterEnvoyPtr,
    _filter_module_ptr: HttpFilterModulePtr,
) -> OnHttpFilterRequestTrailersStatus {
    OnHttpFilterRequestTrailersStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    _end_of_stream: bool,
) -> OnHttpFilterResponseHeadersStatus {
    if let Some(filter) = Filter::new(filter_envoy_ptr) {
        guard(
            "http_filter_response_headers",
            || {
                // SAFETY: Envoy's pointer to the stream it created with filter_new.
                if let Some(stream) = unsafe { stream(filter_module_ptr) } {
                    stream.on_response_headers(filter);
                }
            },
            || (),
        );
    }
    OnHttpFilterResponseHeadersStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _filter_envoy_ptr: HttpFilterEnvoyPtr,
    _filter_module_ptr: HttpFilterModulePtr,
    _end_of_stream: bool,
) -> OnHttpFilterResponseBodyStatus {
    OnHttpFilterResponseBodyStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _filter_envoy_ptr: HttpFilterEnvoyPtr,
    _filter_module_ptr: HttpFilterModulePtr,
) -> OnHttpFilterResponseTrailersStatus {
    OnHttpFilterResponseTrailersStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
) {
    let Some(filter) = Filter::new(filter_envoy_ptr) else {
        return;
    };
    guard(
        "http_filter_stream_complete",
        || {
            // SAFETY: Envoy's pointer to the stream it created with filter_new.
            if let Some(stream) = unsafe { stream(filter_module_ptr) } {
                stream.on_stream_complete(filter);
            }
        },
        || (),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(
    filter_module_ptr: HttpFilterModulePtr,
) {
    guard(
        "http_filter_destroy",
        || {
            if filter_module_ptr.is_null() {
                return;
            }
            // SAFETY: the Box made in filter_new, released exactly once here.
            let mut stream = unsafe { Box::from_raw(filter_module_ptr as *mut RequestFilter) };
            stream.on_destroy();
        },
        || (),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    callout_id: u64,
    result: HttpCalloutResult,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    let Some(filter) = Filter::new(filter_envoy_ptr) else {
        return;
    };
    guard(
        "http_filter_http_callout_done",
        || {
            // SAFETY: Envoy's pointers and sizes for this hook.
            let answer = unsafe {
                CalloutAnswer::read(
                    result,
                    headers,
                    headers_size,
                    body_chunks,
                    body_chunks_size,
                    MAX_LOOKUP_ANSWER,
                )
            };
            // SAFETY: Envoy's pointer to the stream it created with filter_new.
            let verdict = unsafe { stream(filter_module_ptr) }
                .and_then(|stream| stream.on_callout_answer(filter, callout_id, answer));
            if let Some(verdict) = verdict {
                resume(filter, verdict);
            }
        },
        || (),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    _event_id: u64,
) {
    let Some(filter) = Filter::new(filter_envoy_ptr) else {
        return;
    };
    guard(
        "http_filter_scheduled",
        || {
            // SAFETY: Envoy's pointer to the stream it created with filter_new.
            let verdict = unsafe { stream(filter_module_ptr) }.and_then(|s| s.on_scheduled(filter));
            if let Some(verdict) = verdict {
                resume(filter, verdict);
            }
        },
        // A waiting request whose decision panicked gets its 500 rather than hanging.
        || internal_error(filter),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    _event_id: u64,
) {
    guard(
        "http_filter_config_scheduled",
        || {
            // SAFETY: the configuration's pointer from config_new, alive until config_destroy.
            if let Some(plugin) = unsafe { plugin(filter_config_ptr) } {
                plugin.on_tick();
            }
        },
        || (),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    callout_id: u64,
    result: HttpCalloutResult,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    guard(
        "http_filter_config_http_callout_done",
        || {
            // SAFETY: Envoy's pointers and sizes for this hook.
            let answer = unsafe {
                CalloutAnswer::read(
                    result,
                    headers,
                    headers_size,
                    body_chunks,
                    body_chunks_size,
                    MAX_MAIN_ANSWER,
                )
            };
            // SAFETY: the configuration's pointer from config_new, alive until config_destroy.
            if let Some(plugin) = unsafe { plugin(filter_config_ptr) } {
                plugin.on_callout_answer(callout_id, answer);
            }
        },
        || (),
    )
}

// Hooks Envoy 1.40 requires but Tollgate has no use for: streamed callouts (it sends only
// whole callouts) and the downstream's write-buffer watermarks.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy_ptr: HttpFilterEnvoyPtr,
    _filter_module_ptr: HttpFilterModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy_ptr: HttpFilterEnvoyPtr,
    _filter_module_ptr: HttpFilterModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy_ptr: HttpFilterEnvoyPtr,
    _filter_module_ptr: HttpFilterModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy_ptr: HttpFilterEnvoyPtr,
    _filter_module_ptr: HttpFilterModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy_ptr: HttpFilterEnvoyPtr,
    _filter_module_ptr: HttpFilterModulePtr,
    _stream_id: u64,
    _reason: HttpStreamResetReason,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy_ptr: HttpFilterEnvoyPtr,
    _filter_module_ptr: HttpFilterModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy_ptr: HttpFilterEnvoyPtr,
    _filter_module_ptr: HttpFilterModulePtr,
) {
}

// Each hook has the ABI's signature (a mismatch fails to compile).
const _: OnProgramInit = envoy_dynamic_module_on_program_init;
const _: OnHttpFilterConfigNew = envoy_dynamic_module_on_http_filter_config_new;
const _: OnHttpFilterConfigDestroy = envoy_dynamic_module_on_http_filter_config_destroy;
const _: OnHttpFilterNew = envoy_dynamic_module_on_http_filter_new;
const _: OnHttpFilterRequestHeaders = envoy_dynamic_module_on_http_filter_request_headers;
const _: OnHttpFilterRequestBody = envoy_dynamic_module_on_http_filter_request_body;
const _: OnHttpFilterRequestTrailers = envoy_dynamic_module_on_http_filter_request_trailers;
const _: OnHttpFilterResponseHeaders = envoy_dynamic_module_on_http_filter_response_headers;
const _: OnHttpFilterResponseBody = envoy_dynamic_module_on_http_filter_response_body;
const _: OnHttpFilterResponseTrailers = envoy_dynamic_module_on_http_filter_response_trailers;
const _: OnHttpFilterStreamComplete = envoy_dynamic_module_on_http_filter_stream_complete;
const _: OnHttpFilterDestroy = envoy_dynamic_module_on_http_filter_destroy;
const _: OnHttpFilterHttpCalloutDone = envoy_dynamic_module_on_http_filter_http_callout_done;
const _: OnHttpFilterScheduled = envoy_dynamic_module_on_http_filter_scheduled;
const _: OnHttpFilterConfigScheduled = envoy_dynamic_module_on_http_filter_config_scheduled;
const _: OnHttpFilterConfigHttpCalloutDone =
    envoy_dynamic_module_on_http_filter_config_http_callout_done;
const _: OnHttpFilterHttpStreamHeaders = envoy_dynamic_module_on_http_filter_http_stream_headers;
const _: OnHttpFilterHttpStreamData = envoy_dynamic_module_on_http_filter_http_stream_data;
const _: OnHttpFilterHttpStreamTrailers = envoy_dynamic_module_on_http_filter_http_stream_trailers;
const _: OnHttpFilterHttpStreamComplete = envoy_dynamic_module_on_http_filter_http_stream_complete;
const _: OnHttpFilterHttpStreamReset = envoy_dynamic_module_on_http_filter_http_stream_reset;
const _: OnHttpFilterDownstreamAboveWriteBufferHighWatermark =
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark;
const _: OnHttpFilterDownstreamBelowWriteBufferLowWatermark =
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark;
