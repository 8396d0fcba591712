//! Safe handles over the ABI's callbacks (`abi.rs`): the only place the adapter calls into
//! Envoy. Every pointer Envoy hands over is checked before use (null → nothing), every length
//! is bounded by what Envoy said, and every failure comes back as a value.
//!
//! Threads (docs/architecture.md, "The native build"): a `Filter` is used only on its stream's
//! worker thread, inside one of its hooks; a `Config` only on Envoy's main thread; a
//! `Scheduler`'s `commit` from any thread.

use crate::abi::*;
use std::time::Duration;

/// The bytes of a buffer Envoy owns, valid until the hook returns; empty for a null pointer.
///
/// # Safety
/// `buffer` must come from Envoy in the current hook (pointer and length as Envoy gave them).
pub unsafe fn envoy_bytes<'a>(buffer: EnvoyBuffer) -> &'a [u8] {
    if buffer.ptr.is_null() || buffer.length == 0 {
        return &[];
    }
    std::slice::from_raw_parts(buffer.ptr as *const u8, buffer.length)
}

/// An array Envoy owns, as a slice; empty for a null pointer.
///
/// # Safety
/// `ptr` and `len` must come from Envoy in the current hook.
pub unsafe fn envoy_slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    std::slice::from_raw_parts(ptr, len)
}

/// Header name and value of one of Envoy's header entries.
///
/// # Safety
/// `header` must come from Envoy in the current hook.
pub unsafe fn header_bytes<'a>(header: &EnvoyHttpHeader) -> (&'a [u8], &'a [u8]) {
    let name = envoy_bytes(EnvoyBuffer {
        ptr: header.key_ptr,
        length: header.key_length,
    });
    let value = envoy_bytes(EnvoyBuffer {
        ptr: header.value_ptr,
        length: header.value_length,
    });
    (name, value)
}

/// The header list the core reads: names as text (Envoy's are lower-case ASCII; a name that is
/// not UTF-8 cannot be one the core looks for and is left out), values as bytes.
pub fn header_pairs<'a>(
    raw: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<(&'a str, &'a [u8])> {
    let mut pairs = Vec::with_capacity(raw.size_hint().0);
    pairs.extend(raw.filter_map(|(name, value)| Some((std::str::from_utf8(name).ok()?, value))));
    pairs
}

/// What a callout's answer says: its `:status` (none when the callout failed or reset) and
/// its body, joined from Envoy's chunks and cut at `max_body` bytes.
pub struct CalloutAnswer {
    pub status: Option<String>,
    pub body: Vec<u8>,
}

impl CalloutAnswer {
    /// # Safety
    /// The pointers and sizes must be those Envoy passed to the callout-done hook.
    pub unsafe fn read(
        result: HttpCalloutResult,
        headers: *const EnvoyHttpHeader,
        headers_size: usize,
        chunks: *const EnvoyBuffer,
        chunks_size: usize,
        max_body: usize,
    ) -> CalloutAnswer {
        if result != HttpCalloutResult::SUCCESS {
            return CalloutAnswer {
                status: None,
                body: Vec::new(),
            };
        }
        let status = envoy_slice(headers, headers_size)
            .iter()
            .map(|h| header_bytes(h))
            .find(|(name, _)| *name == b":status")
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
            .map(str::to_string);
        let mut body = Vec::new();
        for chunk in envoy_slice(chunks, chunks_size) {
            let bytes = envoy_bytes(*chunk);
            let room = max_body.saturating_sub(body.len());
            body.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        CalloutAnswer { status, body }
    }
}

/// The name of a callout's init failure, for the log.
pub fn describe_callout_init(result: HttpCalloutInitResult) -> &'static str {
    match result {
        HttpCalloutInitResult::SUCCESS => "success",
        HttpCalloutInitResult::MISSING_REQUIRED_HEADERS => "missing required headers",
        HttpCalloutInitResult::CLUSTER_NOT_FOUND => "cluster not found",
        HttpCalloutInitResult::DUPLICATE_CALLOUT_ID => "duplicate callout id",
        HttpCalloutInitResult::CANNOT_CREATE_REQUEST => "cannot create request",
        _ => "unknown callout failure",
    }
}

fn buffer(text: &str) -> ModuleBuffer {
    ModuleBuffer::from_bytes(text.as_bytes())
}

fn module_headers(headers: &[(&str, &str)]) -> Vec<ModuleHttpHeader> {
    headers
        .iter()
        .map(|(name, value)| ModuleHttpHeader::new(name.as_bytes(), value.as_bytes()))
        .collect()
}

fn timeout_ms(timeout: Duration) -> u64 {
    (timeout.as_millis() as u64).max(1)
}

/// The shape of both callout callbacks: a stream's and a configuration's.
type SendCallout<P> = unsafe extern "C" fn(
    P,
    *mut u64,
    ModuleBuffer,
    *mut ModuleHttpHeader,
    usize,
    ModuleBuffer,
    u64,
) -> HttpCalloutInitResult;

/// The shape of the configuration's metric definitions (counter, gauge).
type DefineMetric = unsafe extern "C" fn(
    HttpFilterConfigEnvoyPtr,
    ModuleBuffer,
    *mut ModuleBuffer,
    usize,
    *mut usize,
) -> MetricsResult;

/// Starts a callout with `send` on `target`; Envoy's id for it.
///
/// # Safety
/// `target` must be live for `send` (a stream in its hook, a configuration on the main thread).
unsafe fn send_callout<P>(
    send: SendCallout<P>,
    target: P,
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<u64, HttpCalloutInitResult> {
    let mut headers = module_headers(headers);
    let mut id = 0u64;
    // Every buffer outlives the call; `id` is a local out-parameter.
    let result = send(
        target,
        &mut id,
        buffer(cluster),
        headers.as_mut_ptr(),
        headers.len(),
        body.map_or(ModuleBuffer::null(), ModuleBuffer::from_bytes),
        timeout_ms(timeout),
    );
    if result == HttpCalloutInitResult::SUCCESS {
        Ok(id)
    } else {
        Err(result)
    }
}

/// One stream's filter in Envoy. Copy it only within the hook it was handed to.
#[derive(Clone, Copy)]
pub struct Filter(HttpFilterEnvoyPtr);

impl Filter {
    /// `None` for a null pointer.
    pub fn new(ptr: HttpFilterEnvoyPtr) -> Option<Filter> {
        (!ptr.is_null()).then_some(Filter(ptr))
    }

    /// Every header of `kind` into `out` (Envoy's memory, valid until a header changes or the
    /// hook returns). False when Envoy has no such map.
    pub fn headers_into(&self, kind: HttpHeaderType, out: &mut Vec<EnvoyHttpHeader>) -> bool {
        // SAFETY: a live filter pointer; Envoy writes exactly `size` entries into `out`.
        unsafe {
            let size = envoy_dynamic_module_callback_http_get_headers_size(self.0, kind);
            out.clear();
            if size == 0 {
                return true;
            }
            out.resize(
                size,
                EnvoyHttpHeader {
                    key_ptr: std::ptr::null(),
                    key_length: 0,
                    value_ptr: std::ptr::null(),
                    value_length: 0,
                },
            );
            envoy_dynamic_module_callback_http_get_headers(self.0, kind, out.as_mut_ptr())
        }
    }

    /// The first value of header `name` of `kind`.
    pub fn header(&self, kind: HttpHeaderType, name: &str) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::empty();
        // SAFETY: a live filter pointer; `value` is Envoy's until the hook returns: copied.
        unsafe {
            let found = envoy_dynamic_module_callback_http_get_header(
                self.0,
                kind,
                buffer(name),
                &mut value,
                0,
                std::ptr::null_mut(),
            );
            found.then(|| envoy_bytes(value).to_vec())
        }
    }

    /// Sets header `name` to `value`, or removes it (`None`).
    pub fn set_header(&self, kind: HttpHeaderType, name: &str, value: Option<&str>) -> bool {
        let value = value.map_or(ModuleBuffer::null(), buffer);
        // SAFETY: a live filter pointer; the buffers outlive the call.
        unsafe { envoy_dynamic_module_callback_http_set_header(self.0, kind, buffer(name), value) }
    }

    pub fn add_header(&self, kind: HttpHeaderType, name: &str, value: &str) -> bool {
        // SAFETY: a live filter pointer; the buffers outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(self.0, kind, buffer(name), buffer(value))
        }
    }

    /// A local reply; `details` shows as `%RESPONSE_CODE_DETAILS%`.
    pub fn send_response(&self, status: u32, headers: &[(&str, &str)], body: &[u8], details: &str) {
        let mut headers = module_headers(headers);
        // SAFETY: a live filter pointer; every buffer outlives the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                status,
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::from_bytes(body),
                buffer(details),
            )
        }
    }

    pub fn continue_decoding(&self) {
        // SAFETY: a live filter pointer.
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) }
    }

    pub fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        // SAFETY: a live filter pointer; the buffers outlive the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.0,
                buffer(key),
                ModuleBuffer::from_bytes(value),
            )
        }
    }

    pub fn attribute_string(&self, id: AttributeId) -> Option<String> {
        let mut value = EnvoyBuffer::empty();
        // SAFETY: a live filter pointer; `value` is copied before the hook returns.
        unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, id, &mut value)
                .then(|| String::from_utf8_lossy(envoy_bytes(value)).into_owned())
        }
    }

    pub fn attribute_int(&self, id: AttributeId) -> Option<u64> {
        let mut value = 0u64;
        // SAFETY: a live filter pointer and a local out-parameter.
        unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_int(self.0, id, &mut value)
                .then_some(value)
        }
    }

    /// Which of Envoy's workers runs this stream (0-based).
    pub fn worker_index(&self) -> u32 {
        // SAFETY: a live filter pointer.
        unsafe { envoy_dynamic_module_callback_http_filter_get_worker_index(self.0) }
    }

    /// Sends a callout whose answer comes to this filter's callout-done hook (on this worker);
    /// Envoy's id for it. Cancelled without an answer if the stream ends first.
    pub fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u64, HttpCalloutInitResult> {
        // SAFETY: a live filter pointer.
        unsafe {
            send_callout(
                envoy_dynamic_module_callback_http_filter_http_callout,
                self.0,
                cluster,
                headers,
                body,
                timeout,
            )
        }
    }

    /// A scheduler whose events reach this stream's scheduled hook on its worker; `None` if
    /// Envoy could not make one.
    pub fn new_scheduler(&self) -> Option<Scheduler> {
        // SAFETY: a live filter pointer.
        let ptr = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.0) };
        (!ptr.is_null()).then_some(Scheduler {
            ptr,
            commit: envoy_dynamic_module_callback_http_filter_scheduler_commit,
            delete: envoy_dynamic_module_callback_http_filter_scheduler_delete,
        })
    }
}

/// A scheduler of a stream (events reach its scheduled hook on its worker) or of a
/// configuration (its scheduled hook on the main thread). `commit` is safe from any thread and
/// a no-op once its stream or configuration has gone; it must never be called after `Drop`
/// (which deletes it): an owner drops it only where no thread can commit any more (see
/// `worker_slot.rs` and the plugin's ticker).
pub struct Scheduler {
    ptr: *mut std::ffi::c_void,
    commit: unsafe extern "C" fn(*mut std::ffi::c_void, u64),
    delete: unsafe extern "C" fn(*mut std::ffi::c_void),
}

// SAFETY: Envoy documents commit as callable from any thread; delete happens once, in Drop.
unsafe impl Send for Scheduler {}
unsafe impl Sync for Scheduler {}

impl Scheduler {
    pub fn commit(&self, event: u64) {
        // SAFETY: not deleted yet (deleted only in Drop).
        unsafe { (self.commit)(self.ptr, event) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // SAFETY: created by its scheduler_new, deleted exactly once.
        unsafe { (self.delete)(self.ptr) }
    }
}

/// A filter configuration in Envoy: callouts, metrics and its scheduler, on the main thread.
#[derive(Clone, Copy)]
pub struct Config(HttpFilterConfigEnvoyPtr);

// SAFETY: the pointer is only used on Envoy's main thread (hooks of the configuration); the
// handle itself is just an address.
unsafe impl Send for Config {}
unsafe impl Sync for Config {}

impl Config {
    pub fn new(ptr: HttpFilterConfigEnvoyPtr) -> Option<Config> {
        (!ptr.is_null()).then_some(Config(ptr))
    }

    /// Sends a callout from the main thread; its answer comes to the configuration's
    /// callout-done hook. Envoy's id for it.
    pub fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u64, HttpCalloutInitResult> {
        // SAFETY: a live configuration.
        unsafe {
            send_callout(
                envoy_dynamic_module_callback_http_filter_config_http_callout,
                self.0,
                cluster,
                headers,
                body,
                timeout,
            )
        }
    }

    /// Defines a counter (only while the configuration is being created).
    pub fn define_counter(&self, name: &str) -> Result<usize, MetricsResult> {
        self.define(
            envoy_dynamic_module_callback_http_filter_config_define_counter,
            name,
        )
    }

    /// Defines a gauge (only while the configuration is being created).
    pub fn define_gauge(&self, name: &str) -> Result<usize, MetricsResult> {
        self.define(
            envoy_dynamic_module_callback_http_filter_config_define_gauge,
            name,
        )
    }

    fn define(&self, define: DefineMetric, name: &str) -> Result<usize, MetricsResult> {
        let mut id = 0usize;
        // SAFETY: a live configuration; no labels; a local out-parameter.
        let result = unsafe { define(self.0, buffer(name), std::ptr::null_mut(), 0, &mut id) };
        if result == MetricsResult::SUCCESS {
            Ok(id)
        } else {
            Err(result)
        }
    }

    pub fn increment_counter(&self, id: usize, by: u64) -> MetricsResult {
        // SAFETY: a live configuration; no labels.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_increment_counter(
                self.0,
                id,
                std::ptr::null_mut(),
                0,
                by,
            )
        }
    }

    pub fn set_gauge(&self, id: usize, value: u64) -> MetricsResult {
        // SAFETY: a live configuration; no labels.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_set_gauge(
                self.0,
                id,
                std::ptr::null_mut(),
                0,
                value,
            )
        }
    }

    /// A scheduler whose events reach the configuration's scheduled hook on the main thread.
    pub fn new_scheduler(&self) -> Option<Scheduler> {
        // SAFETY: a live configuration.
        let ptr = unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.0) };
        (!ptr.is_null()).then_some(Scheduler {
            ptr,
            commit: envoy_dynamic_module_callback_http_filter_config_scheduler_commit,
            delete: envoy_dynamic_module_callback_http_filter_config_scheduler_delete,
        })
    }
}

/// Main-thread facts about the Envoy process.
pub fn concurrency() -> u32 {
    // SAFETY: plain query; called on the main thread (configuration hooks).
    unsafe { envoy_dynamic_module_callback_get_concurrency() }
}

pub fn is_validation_mode() -> bool {
    // SAFETY: plain query; called on the main thread (configuration hooks).
    unsafe { envoy_dynamic_module_callback_is_validation_mode() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envoy_header(name: &'static [u8], value: &'static [u8]) -> EnvoyHttpHeader {
        EnvoyHttpHeader {
            key_ptr: name.as_ptr() as BufferEnvoyPtr,
            key_length: name.len(),
            value_ptr: value.as_ptr() as BufferEnvoyPtr,
            value_length: value.len(),
        }
    }

    #[test]
    fn null_pointers_read_as_nothing() {
        // SAFETY: null pointers are what the functions must survive.
        unsafe {
            let null = EnvoyBuffer::empty();
            assert_eq!(envoy_bytes(null), b"");
            let lying = EnvoyBuffer {
                ptr: std::ptr::null(),
                length: 99,
            };
            assert_eq!(envoy_bytes(lying), b"");
            assert!(envoy_slice::<EnvoyHttpHeader>(std::ptr::null(), 5).is_empty());
            let header = EnvoyHttpHeader {
                key_ptr: std::ptr::null(),
                key_length: 3,
                value_ptr: std::ptr::null(),
                value_length: 7,
            };
            assert_eq!(header_bytes(&header), (&b""[..], &b""[..]));
        }
    }

    #[test]
    fn headers_keep_order_and_skip_names_that_are_not_text() {
        let raw = [
            envoy_header(b":path", b"/v1/things?api_key=x"),
            envoy_header(b"\xff\xfe", b"junk"),
            envoy_header(b"x-api-key", b"tg_\xffbinary"),
        ];
        // SAFETY: the headers point at static bytes.
        let pairs = header_pairs(raw.iter().map(|h| unsafe { header_bytes(h) }));
        assert_eq!(
            pairs,
            vec![
                (":path", &b"/v1/things?api_key=x"[..]),
                ("x-api-key", &b"tg_\xffbinary"[..]),
            ]
        );
    }

    #[test]
    fn a_callout_answer_joins_chunks_up_to_the_bound() {
        let headers = [
            envoy_header(b"content-type", b"application/json"),
            envoy_header(b":status", b"200"),
        ];
        let chunks = [
            EnvoyBuffer {
                ptr: b"{\"a\":".as_ptr() as BufferEnvoyPtr,
                length: 5,
            },
            EnvoyBuffer::empty(),
            EnvoyBuffer {
                ptr: b"12345}".as_ptr() as BufferEnvoyPtr,
                length: 6,
            },
        ];
        // SAFETY: the arrays point at static bytes.
        let answer = unsafe {
            CalloutAnswer::read(
                HttpCalloutResult::SUCCESS,
                headers.as_ptr(),
                headers.len(),
                chunks.as_ptr(),
                chunks.len(),
                8,
            )
        };
        assert_eq!(answer.status.as_deref(), Some("200"));
        assert_eq!(answer.body, b"{\"a\":123");
        // SAFETY: a reset hands over nothing.
        let reset = unsafe {
            CalloutAnswer::read(
                HttpCalloutResult::RESET,
                std::ptr::null(),
                0,
                std::ptr::null(),
                0,
                8,
            )
        };
        assert_eq!(reset.status, None);
        assert!(reset.body.is_empty());
    }
}
