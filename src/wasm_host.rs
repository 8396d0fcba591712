//! The host traits implemented with proxy-wasm host calls; every status becomes a typed error.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};
use std::time::UNIX_EPOCH;
use tollgate_core::host::{Clock, SharedStore, StoreError};

pub struct WasmHost;

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Ok => "ok",
        Status::NotFound => "not found",
        Status::BadArgument => "bad argument",
        Status::SerializationFailure => "serialization failure",
        Status::ParseFailure => "parse failure",
        Status::Empty => "empty",
        Status::CasMismatch => "cas mismatch",
        Status::InternalFailure => "internal failure",
        _ => "unknown status",
    }
}

pub fn describe(status: Status) -> &'static str {
    status_name(status)
}

impl SharedStore for WasmHost {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(bytes), Some(cas))) => Ok(Some((bytes, cas))),
            Ok((Some(bytes), None)) => Ok(Some((bytes, 0))),
            Ok((None, _)) => Ok(None),
            Err(status) => Err(StoreError::Host(status_name(status))),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(status) => Err(StoreError::Host(status_name(status))),
        }
    }
}

impl Clock for WasmHost {
    fn now_ms(&self) -> u64 {
        now_ns() / 1_000_000
    }
}

/// Envoy's wall clock in nanoseconds (0 if the host cannot tell).
pub fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// The serialized header map (see `header_map`), read with one host call and no copies: the
/// SDK's `get_map_bytes` would allocate a `String` and a `Vec` per header.
pub fn header_map_block(map_type: MapType) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on Ok the host hands over a buffer it allocated through the SDK's
    // `proxy_on_memory_allocate` (a `Vec<u8>` of exactly `size` bytes), which we now own.
    unsafe {
        match proxy_get_header_map_pairs(map_type, &mut data, &mut size) {
            Status::Ok if data.is_null() => Ok(Vec::new()),
            Status::Ok => Ok(Vec::from_raw_parts(data, size, size)),
            status => Err(status),
        }
    }
}
