//! The host traits implemented with proxy-wasm host calls; every status becomes a typed error.

use crate::host::{Clock, SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;
use std::time::UNIX_EPOCH;

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
