//! The check at load: every callback the module calls must be exported by the Envoy that
//! loads it. Envoy resolves a module's calls lazily, so a missing callback would otherwise
//! crash Envoy at the first call instead of failing the load; the module refuses to load
//! instead, naming what is missing (`hooks.rs`, program init).

use std::ffi::{c_char, c_void, CStr};

/// Every callback declared in `abi.rs` (a test keeps the two lists equal).
pub const CALLBACKS: &[&CStr] = &[
    c"envoy_dynamic_module_callback_get_concurrency",
    c"envoy_dynamic_module_callback_http_add_header",
    c"envoy_dynamic_module_callback_http_filter_config_define_counter",
    c"envoy_dynamic_module_callback_http_filter_config_define_gauge",
    c"envoy_dynamic_module_callback_http_filter_config_http_callout",
    c"envoy_dynamic_module_callback_http_filter_config_increment_counter",
    c"envoy_dynamic_module_callback_http_filter_config_scheduler_commit",
    c"envoy_dynamic_module_callback_http_filter_config_scheduler_delete",
    c"envoy_dynamic_module_callback_http_filter_config_scheduler_new",
    c"envoy_dynamic_module_callback_http_filter_config_set_gauge",
    c"envoy_dynamic_module_callback_http_filter_continue_decoding",
    c"envoy_dynamic_module_callback_http_filter_get_attribute_int",
    c"envoy_dynamic_module_callback_http_filter_get_attribute_string",
    c"envoy_dynamic_module_callback_http_filter_get_worker_index",
    c"envoy_dynamic_module_callback_http_filter_http_callout",
    c"envoy_dynamic_module_callback_http_filter_scheduler_commit",
    c"envoy_dynamic_module_callback_http_filter_scheduler_delete",
    c"envoy_dynamic_module_callback_http_filter_scheduler_new",
    c"envoy_dynamic_module_callback_http_get_header",
    c"envoy_dynamic_module_callback_http_get_headers",
    c"envoy_dynamic_module_callback_http_get_headers_size",
    c"envoy_dynamic_module_callback_http_send_response",
    c"envoy_dynamic_module_callback_http_set_filter_state_bytes",
    c"envoy_dynamic_module_callback_http_set_header",
    c"envoy_dynamic_module_callback_is_validation_mode",
    c"envoy_dynamic_module_callback_log_enabled",
    c"envoy_dynamic_module_callback_log_v2",
];

extern "C" {
    /// POSIX `dlsym`; with the default handle it searches the process's global symbols, where
    /// Envoy's exported callbacks are.
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// glibc's `RTLD_DEFAULT`.
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

/// The callbacks this process does not export (empty: the module can run here).
pub fn missing_callbacks() -> Vec<String> {
    CALLBACKS
        .iter()
        // SAFETY: a NUL-terminated name and the default handle.
        .filter(|name| unsafe { dlsym(RTLD_DEFAULT, name.as_ptr()) }.is_null())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_every_declared_callback() {
        let source = include_str!("abi.rs");
        let mut declared: Vec<&str> = source
            .split("pub fn ")
            .skip(1)
            .filter_map(|rest| rest.split('(').next())
            .filter(|name| name.starts_with("envoy_dynamic_module_callback_"))
            .collect();
        declared.sort_unstable();
        let mut listed: Vec<String> = CALLBACKS
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        listed.sort_unstable();
        assert_eq!(listed, declared);
    }

    #[test]
    fn a_process_without_envoy_lacks_them_all() {
        // The test executable is not Envoy: every callback is missing, and each is named.
        assert_eq!(missing_callbacks().len(), CALLBACKS.len());
    }
}
