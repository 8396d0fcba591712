//! Envoy dynamic-modules ABI: the subset the tollgate native HTTP filter uses.
//!
//! Over 600 lines (~820) on purpose, as one concept: every declaration of the ABI the module
//! relies on, in one place to hold against Envoy's header (and the one file `abi_check` and
//! `tests/tests/native_abi.rs` read); most of it is the ABI's own types and signatures.
//!
//! This file is hand-written from Envoy's dynamic-modules ABI header
//! (`source/extensions/dynamic_modules/abi/abi.h` in envoyproxy/envoy), read at commit
//! 0199da4a13cb999df12ad32db7d03942cfbf9abb (the header that still declares "v0.1.0"), and checked
//! against the Envoy 1.40.0 binary we run (commit 9e5580933739775e8bce696a57a2e1bc99368f23, ABI
//! "v0.2.0"): every callback declared below is exported by that binary (`nm -D`), and the hooks
//! listed as required are the ones its HTTP filter fails to load without. The names and signatures
//! are the ABI's own; the Rust spellings of the types are ours. Nothing here is generated or copied.
//!
//! Conventions:
//! * Envoy-owned memory is described by [`EnvoyBuffer`] / [`EnvoyHttpHeader`]; it is only valid
//!   for the duration of the current event hook (or until a setter touches the same map).
//! * Module-owned memory passed to Envoy is [`ModuleBuffer`] / [`ModuleHttpHeader`]; Envoy copies
//!   what it keeps before the callback returns.
//! * C enums are 32-bit on the platforms Envoy supports. Values that flow from Envoy to the module
//!   (results, reasons) are `#[repr(transparent)]` newtypes over `u32` with associated constants so
//!   an unexpected value from a newer Envoy is never undefined behaviour. Hook return statuses flow
//!   module -> Envoy and use the same newtypes for uniformity.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void, CStr};

// =================================================================================================
// ABI version
// =================================================================================================

/// ABI version string of Envoy 1.40 (`ENVOY_DYNAMIC_MODULES_ABI_VERSION`). Envoy logs
/// "Dynamic module ABI version v0.2.0 matched." for it; any other non-null string still loads, with
/// a "... is deprecated" warning.
pub const ABI_VERSION: &str = "v0.2.0";

/// [`ABI_VERSION`] with its terminating NUL, for returning from
/// `envoy_dynamic_module_on_program_init` (Envoy reads it as a C string; it must stay valid until
/// that hook returns — a `'static` is simplest).
pub const ABI_VERSION_CSTR: &CStr = c"v0.2.0";

/// Same bytes as [`ABI_VERSION_CSTR`].
pub const ABI_VERSION_NUL: &[u8] = b"v0.2.0\0";

// =================================================================================================
// Opaque pointers
// =================================================================================================

/// `envoy_dynamic_module_type_abi_version_module_ptr`: NUL-terminated string owned by the module.
pub type AbiVersionModulePtr = *const c_char;
/// `envoy_dynamic_module_type_buffer_module_ptr`.
pub type BufferModulePtr = *const c_char;
/// `envoy_dynamic_module_type_buffer_envoy_ptr`.
pub type BufferEnvoyPtr = *const c_char;

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr` (Envoy's DynamicModuleHttpFilterConfig).
/// Valid from `on_http_filter_config_new` until `on_http_filter_config_destroy` returns.
pub type HttpFilterConfigEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_config_module_ptr` (the module's config object).
pub type HttpFilterConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_per_route_config_module_ptr`.
pub type HttpFilterPerRouteConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_envoy_ptr` (Envoy's DynamicModuleHttpFilter, one per
/// stream). Valid until `on_http_filter_destroy` is called.
pub type HttpFilterEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_module_ptr` (the module's per-stream filter object).
pub type HttpFilterModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_scheduler_module_ptr`: allocated by Envoy in
/// `..._http_filter_scheduler_new`, owned by the module, freed with `..._scheduler_delete`.
pub type HttpFilterSchedulerModulePtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_config_scheduler_module_ptr`: as above, for the config.
pub type HttpFilterConfigSchedulerModulePtr = *mut c_void;

// =================================================================================================
// Buffers and headers
// =================================================================================================

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: BufferEnvoyPtr,
    pub length: usize,
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: BufferModulePtr,
    pub length: usize,
}

/// `envoy_dynamic_module_type_module_http_header`: a header owned by the module.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleHttpHeader {
    pub key_ptr: BufferModulePtr,
    pub key_length: usize,
    pub value_ptr: BufferModulePtr,
    pub value_length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`: a header owned by Envoy's HeaderMap.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub key_ptr: BufferEnvoyPtr,
    pub key_length: usize,
    pub value_ptr: BufferEnvoyPtr,
    pub value_length: usize,
}

impl EnvoyBuffer {
    /// An empty buffer (null pointer, length 0): the initial value for out-parameters.
    pub const fn empty() -> Self {
        EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        }
    }
}

impl ModuleBuffer {
    /// Borrow `bytes` for the duration of one callback.
    pub const fn from_bytes(bytes: &[u8]) -> Self {
        ModuleBuffer {
            ptr: bytes.as_ptr() as BufferModulePtr,
            length: bytes.len(),
        }
    }

    /// The null buffer. Passed as the value of `..._http_set_header` it removes the header.
    pub const fn null() -> Self {
        ModuleBuffer {
            ptr: std::ptr::null(),
            length: 0,
        }
    }
}

impl ModuleHttpHeader {
    /// Borrow a key/value pair for the duration of one callback.
    pub const fn new(key: &[u8], value: &[u8]) -> Self {
        ModuleHttpHeader {
            key_ptr: key.as_ptr() as BufferModulePtr,
            key_length: key.len(),
            value_ptr: value.as_ptr() as BufferModulePtr,
            value_length: value.len(),
        }
    }
}

// =================================================================================================
// Enums (C enums, 32-bit)
// =================================================================================================

/// `envoy_dynamic_module_type_http_header_type`: which header map a header callback acts on.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpHeaderType(pub u32);
impl HttpHeaderType {
    pub const REQUEST_HEADER: Self = Self(0);
    pub const REQUEST_TRAILER: Self = Self(1);
    pub const RESPONSE_HEADER: Self = Self(2);
    pub const RESPONSE_TRAILER: Self = Self(3);
}

/// `envoy_dynamic_module_type_http_body_type`.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpBodyType(pub u32);
impl HttpBodyType {
    pub const RECEIVED_REQUEST_BODY: Self = Self(0);
    pub const BUFFERED_REQUEST_BODY: Self = Self(1);
    pub const RECEIVED_RESPONSE_BODY: Self = Self(2);
    pub const BUFFERED_RESPONSE_BODY: Self = Self(3);
}

/// `envoy_dynamic_module_type_log_level` (mirrors spdlog's levels).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLevel(pub u32);
impl LogLevel {
    pub const TRACE: Self = Self(0);
    pub const DEBUG: Self = Self(1);
    pub const INFO: Self = Self(2);
    pub const WARN: Self = Self(3);
    pub const ERROR: Self = Self(4);
    pub const CRITICAL: Self = Self(5);
    pub const OFF: Self = Self(6);
}

/// `envoy_dynamic_module_type_http_callout_init_result`: synchronous result of starting a callout.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpCalloutInitResult(pub u32);
impl HttpCalloutInitResult {
    pub const SUCCESS: Self = Self(0);
    pub const MISSING_REQUIRED_HEADERS: Self = Self(1);
    pub const CLUSTER_NOT_FOUND: Self = Self(2);
    /// Kept by the ABI but no longer produced: callout ids are chosen by Envoy.
    pub const DUPLICATE_CALLOUT_ID: Self = Self(3);
    pub const CANNOT_CREATE_REQUEST: Self = Self(4);
}

/// `envoy_dynamic_module_type_http_callout_result`: outcome passed to `*_http_callout_done`.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpCalloutResult(pub u32);
impl HttpCalloutResult {
    pub const SUCCESS: Self = Self(0);
    pub const RESET: Self = Self(1);
    pub const EXCEED_RESPONSE_BUFFER_LIMIT: Self = Self(2);
}

/// `envoy_dynamic_module_type_http_stream_reset_reason` (streamable callouts).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpStreamResetReason(pub u32);
impl HttpStreamResetReason {
    pub const CONNECTION_FAILURE: Self = Self(0);
    pub const CONNECTION_TERMINATION: Self = Self(1);
    pub const LOCAL_RESET: Self = Self(2);
    pub const LOCAL_REFUSED_STREAM_RESET: Self = Self(3);
    pub const OVERFLOW: Self = Self(4);
    pub const REMOTE_RESET: Self = Self(5);
    pub const REMOTE_REFUSED_STREAM_RESET: Self = Self(6);
    pub const PROTOCOL_ERROR: Self = Self(7);
}

/// `envoy_dynamic_module_type_metrics_result`.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsResult(pub u32);
impl MetricsResult {
    pub const SUCCESS: Self = Self(0);
    pub const METRIC_NOT_FOUND: Self = Self(1);
    pub const INVALID_LABELS: Self = Self(2);
    /// Metric definition attempted after `on_http_filter_config_new` returned.
    pub const FROZEN: Self = Self(3);
}

/// `envoy_dynamic_module_type_on_http_filter_request_headers_status` (= `Http::FilterHeadersStatus`).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnHttpFilterRequestHeadersStatus(pub u32);
impl OnHttpFilterRequestHeadersStatus {
    pub const CONTINUE: Self = Self(0);
    pub const STOP_ITERATION: Self = Self(1);
    pub const CONTINUE_AND_DONT_END_STREAM: Self = Self(2);
    pub const STOP_ALL_ITERATION_AND_BUFFER: Self = Self(3);
    pub const STOP_ALL_ITERATION_AND_WATERMARK: Self = Self(4);
}

/// `envoy_dynamic_module_type_on_http_filter_request_body_status` (= `Http::FilterDataStatus`).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnHttpFilterRequestBodyStatus(pub u32);
impl OnHttpFilterRequestBodyStatus {
    pub const CONTINUE: Self = Self(0);
    pub const STOP_ITERATION_AND_BUFFER: Self = Self(1);
    pub const STOP_ITERATION_AND_WATERMARK: Self = Self(2);
    pub const STOP_ITERATION_NO_BUFFER: Self = Self(3);
}

/// `envoy_dynamic_module_type_on_http_filter_request_trailers_status` (= `FilterTrailersStatus`).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnHttpFilterRequestTrailersStatus(pub u32);
impl OnHttpFilterRequestTrailersStatus {
    pub const CONTINUE: Self = Self(0);
    pub const STOP_ITERATION: Self = Self(1);
}

/// `envoy_dynamic_module_type_on_http_filter_response_headers_status`.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnHttpFilterResponseHeadersStatus(pub u32);
impl OnHttpFilterResponseHeadersStatus {
    pub const CONTINUE: Self = Self(0);
    pub const STOP_ITERATION: Self = Self(1);
    pub const CONTINUE_AND_DONT_END_STREAM: Self = Self(2);
    pub const STOP_ALL_ITERATION_AND_BUFFER: Self = Self(3);
    pub const STOP_ALL_ITERATION_AND_WATERMARK: Self = Self(4);
}

/// `envoy_dynamic_module_type_on_http_filter_response_body_status`.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnHttpFilterResponseBodyStatus(pub u32);
impl OnHttpFilterResponseBodyStatus {
    pub const CONTINUE: Self = Self(0);
    pub const STOP_ITERATION_AND_BUFFER: Self = Self(1);
    pub const STOP_ITERATION_AND_WATERMARK: Self = Self(2);
    pub const STOP_ITERATION_NO_BUFFER: Self = Self(3);
}

/// `envoy_dynamic_module_type_on_http_filter_response_trailers_status`.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnHttpFilterResponseTrailersStatus(pub u32);
impl OnHttpFilterResponseTrailersStatus {
    pub const CONTINUE: Self = Self(0);
    pub const STOP_ITERATION: Self = Self(1);
}

/// `envoy_dynamic_module_type_on_http_filter_local_reply_status` (= `Http::LocalErrorStatus`).
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnHttpFilterLocalReplyStatus(pub u32);
impl OnHttpFilterLocalReplyStatus {
    pub const CONTINUE: Self = Self(0);
    pub const CONTINUE_AND_RESET_STREAM: Self = Self(1);
}

/// `envoy_dynamic_module_type_attribute_id` — the subset we use. The C enum is sequential from
/// `RequestPath = 0`; the numbers below are the positions in the 0199da4a header. SourceAddress
/// (24), SourcePort (25) and RequestId (9) were checked against the 1.40 binary.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeId(pub u32);
impl AttributeId {
    /// request.path (string)
    pub const REQUEST_PATH: Self = Self(0);
    /// request.url_path (string)
    pub const REQUEST_URL_PATH: Self = Self(1);
    /// request.host (string)
    pub const REQUEST_HOST: Self = Self(2);
    /// request.method (string)
    pub const REQUEST_METHOD: Self = Self(4);
    /// request.useragent (string)
    pub const REQUEST_USER_AGENT: Self = Self(7);
    /// request.id (string; the x-request-id)
    pub const REQUEST_ID: Self = Self(9);
    /// request.protocol (string)
    pub const REQUEST_PROTOCOL: Self = Self(10);
    /// request.duration (int)
    pub const REQUEST_DURATION: Self = Self(12);
    /// request.size (int)
    pub const REQUEST_SIZE: Self = Self(13);
    /// response.code (int)
    pub const RESPONSE_CODE: Self = Self(15);
    /// response.code_details (string)
    pub const RESPONSE_CODE_DETAILS: Self = Self(16);
    /// response.size (int)
    pub const RESPONSE_SIZE: Self = Self(21);
    /// source.address (string, "ip:port" — the downstream remote address as the HCM sees it)
    pub const SOURCE_ADDRESS: Self = Self(24);
    /// source.port (int)
    pub const SOURCE_PORT: Self = Self(25);
    /// destination.address (string)
    pub const DESTINATION_ADDRESS: Self = Self(26);
    /// destination.port (int)
    pub const DESTINATION_PORT: Self = Self(27);
    /// connection.id (int)
    pub const CONNECTION_ID: Self = Self(28);
}

// =================================================================================================
// Event hooks the module EXPORTS (`#[no_mangle] pub extern "C" fn <name>`).
//
// Each alias below is the exact C signature of one hook; an implementation can check itself with
// e.g. `const _: OnHttpFilterRequestHeaders = envoy_dynamic_module_on_http_filter_request_headers;`
//
// REQUIRED = Envoy 1.40 rejects the filter config ("Failed to resolve symbol ...") without it
// (verified against the binary). OPTIONAL = looked up, silently skipped when absent.
// =================================================================================================

/// `envoy_dynamic_module_on_program_init` — REQUIRED (at dlopen). Main thread, once per process per
/// loaded object. Return the ABI version string ([`ABI_VERSION_CSTR`]); null refuses the load.
pub type OnProgramInit = unsafe extern "C" fn() -> AbiVersionModulePtr;

/// `envoy_dynamic_module_on_http_filter_config_new` — REQUIRED. Main thread. `name` is
/// `filter_name`, `config` the unwrapped `filter_config` bytes. Null rejects the config.
pub type OnHttpFilterConfigNew = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> HttpFilterConfigModulePtr;

/// `envoy_dynamic_module_on_http_filter_config_destroy` — REQUIRED. Main thread.
pub type OnHttpFilterConfigDestroy =
    unsafe extern "C" fn(filter_config_ptr: HttpFilterConfigModulePtr);

/// `envoy_dynamic_module_on_http_filter_per_route_config_new` — REQUIRED only when a
/// `DynamicModuleFilterPerRoute` config names the module. Main thread.
pub type OnHttpFilterPerRouteConfigNew = unsafe extern "C" fn(
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> HttpFilterPerRouteConfigModulePtr;

/// `envoy_dynamic_module_on_http_filter_per_route_config_destroy` — as above.
pub type OnHttpFilterPerRouteConfigDestroy =
    unsafe extern "C" fn(filter_config_ptr: HttpFilterPerRouteConfigModulePtr);

/// `envoy_dynamic_module_on_http_filter_new` — REQUIRED. Worker thread, once per stream.
pub type OnHttpFilterNew = unsafe extern "C" fn(
    filter_config_ptr: HttpFilterConfigModulePtr,
    filter_envoy_ptr: HttpFilterEnvoyPtr,
) -> HttpFilterModulePtr;

/// `envoy_dynamic_module_on_http_filter_request_headers` — REQUIRED. Worker thread.
pub type OnHttpFilterRequestHeaders = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    end_of_stream: bool,
) -> OnHttpFilterRequestHeadersStatus;

/// `envoy_dynamic_module_on_http_filter_request_body` — REQUIRED. Worker thread.
pub type OnHttpFilterRequestBody = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    end_of_stream: bool,
) -> OnHttpFilterRequestBodyStatus;

/// `envoy_dynamic_module_on_http_filter_request_trailers` — REQUIRED. Worker thread.
pub type OnHttpFilterRequestTrailers = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
) -> OnHttpFilterRequestTrailersStatus;

/// `envoy_dynamic_module_on_http_filter_response_headers` — REQUIRED. Worker thread. Not called
/// for the local reply this filter itself sent with `..._http_send_response`.
pub type OnHttpFilterResponseHeaders = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    end_of_stream: bool,
) -> OnHttpFilterResponseHeadersStatus;

/// `envoy_dynamic_module_on_http_filter_response_body` — REQUIRED. Worker thread.
pub type OnHttpFilterResponseBody = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    end_of_stream: bool,
) -> OnHttpFilterResponseBodyStatus;

/// `envoy_dynamic_module_on_http_filter_response_trailers` — REQUIRED. Worker thread.
pub type OnHttpFilterResponseTrailers = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
) -> OnHttpFilterResponseTrailersStatus;

/// `envoy_dynamic_module_on_http_filter_stream_complete` — REQUIRED. Worker thread; before
/// `on_http_filter_destroy` and before access logs are flushed.
pub type OnHttpFilterStreamComplete = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
);

/// `envoy_dynamic_module_on_http_filter_destroy` — REQUIRED. Worker thread; last hook of a stream.
pub type OnHttpFilterDestroy = unsafe extern "C" fn(filter_module_ptr: HttpFilterModulePtr);

/// `envoy_dynamic_module_on_http_filter_http_callout_done` — REQUIRED. Worker thread of the filter.
/// `headers`/`body_chunks` are Envoy-owned, valid only during the call, null/0 on failure.
pub type OnHttpFilterHttpCalloutDone = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    callout_id: u64,
    result: HttpCalloutResult,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
);

/// `envoy_dynamic_module_on_http_filter_http_stream_headers` — REQUIRED (streamable callouts).
pub type OnHttpFilterHttpStreamHeaders = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    stream_id: u64,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    end_stream: bool,
);

/// `envoy_dynamic_module_on_http_filter_http_stream_data` — REQUIRED.
pub type OnHttpFilterHttpStreamData = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    stream_id: u64,
    data: *const EnvoyBuffer,
    data_count: usize,
    end_stream: bool,
);

/// `envoy_dynamic_module_on_http_filter_http_stream_trailers` — REQUIRED.
pub type OnHttpFilterHttpStreamTrailers = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    stream_id: u64,
    trailers: *mut EnvoyHttpHeader,
    trailers_size: usize,
);

/// `envoy_dynamic_module_on_http_filter_http_stream_complete` — REQUIRED.
pub type OnHttpFilterHttpStreamComplete = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    stream_id: u64,
);

/// `envoy_dynamic_module_on_http_filter_http_stream_reset` — REQUIRED.
pub type OnHttpFilterHttpStreamReset = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    stream_id: u64,
    reason: HttpStreamResetReason,
);

/// `envoy_dynamic_module_on_http_filter_scheduled` — REQUIRED. Worker thread of the filter; only
/// delivered while the filter is alive.
pub type OnHttpFilterScheduled = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    event_id: u64,
);

/// `envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark` — REQUIRED.
pub type OnHttpFilterDownstreamAboveWriteBufferHighWatermark = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
);

/// `envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark` — REQUIRED.
pub type OnHttpFilterDownstreamBelowWriteBufferLowWatermark = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
);

/// `envoy_dynamic_module_on_http_filter_local_reply` — OPTIONAL. Worker thread; called when any
/// local reply is generated on the stream (including our own `send_response`).
pub type OnHttpFilterLocalReply = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    response_code: u32,
    details: EnvoyBuffer,
    reset_imminent: bool,
) -> OnHttpFilterLocalReplyStatus;

/// `envoy_dynamic_module_on_http_filter_config_scheduled` — OPTIONAL. Main thread.
pub type OnHttpFilterConfigScheduled = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    event_id: u64,
);

/// `envoy_dynamic_module_on_http_filter_config_http_callout_done` — OPTIONAL (but without it
/// config-level callout answers are dropped). Main thread.
pub type OnHttpFilterConfigHttpCalloutDone = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    callout_id: u64,
    result: HttpCalloutResult,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
);

/// `envoy_dynamic_module_on_http_filter_config_http_stream_headers` — OPTIONAL. Main thread.
pub type OnHttpFilterConfigHttpStreamHeaders = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    stream_id: u64,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    end_stream: bool,
);

/// `envoy_dynamic_module_on_http_filter_config_http_stream_data` — OPTIONAL. Main thread.
pub type OnHttpFilterConfigHttpStreamData = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    stream_id: u64,
    data: *const EnvoyBuffer,
    data_count: usize,
    end_stream: bool,
);

/// `envoy_dynamic_module_on_http_filter_config_http_stream_trailers` — OPTIONAL. Main thread.
pub type OnHttpFilterConfigHttpStreamTrailers = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    stream_id: u64,
    trailers: *mut EnvoyHttpHeader,
    trailers_size: usize,
);

/// `envoy_dynamic_module_on_http_filter_config_http_stream_complete` — OPTIONAL. Main thread.
pub type OnHttpFilterConfigHttpStreamComplete = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    stream_id: u64,
);

/// `envoy_dynamic_module_on_http_filter_config_http_stream_reset` — OPTIONAL. Main thread.
pub type OnHttpFilterConfigHttpStreamReset = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    stream_id: u64,
    reason: HttpStreamResetReason,
);

// =================================================================================================
// Callbacks Envoy provides (resolved from the envoy executable when the module is dlopen'ed).
// =================================================================================================

extern "C" {
    // ------------------------------------------------------------------ logging / process -------

    /// Logs under the `[dynamic_modules]` logger id with the module's source location
    /// (`source_file` may be null/0). Newer than the 0199da4a header; signature from Envoy's
    /// abi_impl.cc and checked live against 1.40.
    pub fn envoy_dynamic_module_callback_log_v2(
        level: LogLevel,
        message: ModuleBuffer,
        source_file: ModuleBuffer,
        source_line: u32,
    );

    /// Whether `level` is enabled for the `dynamic_modules` logger.
    pub fn envoy_dynamic_module_callback_log_enabled(level: LogLevel) -> bool;

    /// Server concurrency (worker count). MAIN THREAD ONLY (returns 0 + ENVOY_BUG elsewhere).
    pub fn envoy_dynamic_module_callback_get_concurrency() -> u32;

    /// True under `envoy --mode validate`. MAIN THREAD ONLY.
    pub fn envoy_dynamic_module_callback_is_validation_mode() -> bool;

    // ------------------------------------------------------------------ headers ------------------

    /// Number of entries (multi-valued headers count once per value) in the selected map.
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        header_type: HttpHeaderType,
    ) -> usize;

    /// Fills the module-allocated array `result_headers` (at least `get_headers_size` entries)
    /// with Envoy-owned key/value views, in header-map order.
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        header_type: HttpHeaderType,
        result_headers: *mut EnvoyHttpHeader,
    ) -> bool;

    /// Value number `index` of header `key` into `result_buffer`; `optional_size` (nullable)
    /// receives how many values `key` has. Returns false (and a null buffer) when absent.
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        header_type: HttpHeaderType,
        key: ModuleBuffer,
        result_buffer: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;

    /// Replaces all values of `key` with `value`; a null `value` (ptr null) removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        header_type: HttpHeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Appends one more value for `key`.
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        header_type: HttpHeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    // ------------------------------------------------------------------ local reply / flow -------

    /// Local reply (`sendLocalReply`): status, extra headers, body, response-code details (empty ->
    /// "dynamic_module"). No-op once the filter is destroyed. Return StopIteration from the hook.
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        status_code: u32,
        headers_vector: *mut ModuleHttpHeader,
        headers_vector_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    /// Resumes a request stopped by a request hook. Worker thread of the filter only.
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    );

    // ------------------------------------------------------------------ filter state / attrs -----

    /// Stores `value` as a plain string object under `key` in the stream's filter state
    /// (readable by `%FILTER_STATE(key:PLAIN)%`). False if the key exists read-only.
    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Reads a string attribute into an Envoy-owned buffer (valid during the current hook).
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        attribute_id: AttributeId,
        result: *mut EnvoyBuffer,
    ) -> bool;

    /// Reads an integer attribute.
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        attribute_id: AttributeId,
        result: *mut u64,
    ) -> bool;

    /// Index (0-based) of the worker thread running this filter.
    pub fn envoy_dynamic_module_callback_http_filter_get_worker_index(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    ) -> u32;

    // ------------------------------------------------------------------ callouts -----------------

    /// One-shot HTTP callout from the stream (worker thread). Envoy picks the id and writes it to
    /// `callout_id_out` on Success; the answer arrives in `on_http_filter_http_callout_done` on the
    /// same worker. `headers` must contain :method, :path and host.
    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> HttpCalloutInitResult;

    /// One-shot HTTP callout owned by the filter config. MAIN THREAD ONLY (e.g. from
    /// `on_http_filter_config_new` or `on_http_filter_config_scheduled`); the answer arrives in
    /// `on_http_filter_config_http_callout_done` on the main thread.
    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> HttpCalloutInitResult;

    // ------------------------------------------------------------------ schedulers ---------------

    /// New scheduler bound to this filter and its worker dispatcher. Call on the filter's worker
    /// thread (inside a hook).
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    ) -> HttpFilterSchedulerModulePtr;

    /// Posts `on_http_filter_scheduled(event_id)` to the filter's worker. Any thread; dropped if
    /// the filter is gone by the time the event runs.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler_module_ptr: HttpFilterSchedulerModulePtr,
        event_id: u64,
    );

    /// Frees the scheduler. Must not race with `commit` on the same pointer.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(
        scheduler_module_ptr: HttpFilterSchedulerModulePtr,
    );

    /// New scheduler bound to the filter config and the main-thread dispatcher.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    ) -> HttpFilterConfigSchedulerModulePtr;

    /// Posts `on_http_filter_config_scheduled(event_id)` to the main thread. Any thread; dropped
    /// if the config is gone by then.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler_module_ptr: HttpFilterConfigSchedulerModulePtr,
        event_id: u64,
    );

    /// Frees the config scheduler.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler_module_ptr: HttpFilterConfigSchedulerModulePtr,
    );

    // ------------------------------------------------------------------ metrics ------------------

    /// Defines a counter `<metrics_namespace>.<name>` (default namespace `dynamicmodulescustom`).
    /// Only inside `on_http_filter_config_new` (afterwards: `Frozen`). With labels it is a vector
    /// and ids live in a separate id space from unlabelled counters.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        counter_id_ptr: *mut usize,
    ) -> MetricsResult;

    /// Increments a counter through the config (any time after config_new; e.g. main thread).
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Defines a gauge (same rules as `define_counter`).
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        gauge_id_ptr: *mut usize,
    ) -> MetricsResult;

    /// Sets a gauge through the config.
    pub fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

}
