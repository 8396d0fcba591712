//! The floor any proxy-wasm filter pays: a root context that creates one HTTP context per
//! request, and an HTTP context whose callbacks all use the SDK defaults (`Continue`). Used by
//! `make bench` as configuration N; it is not part of Tollgate.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EmptyRoot) });
}}

/// Root context: no configuration, no tick.
pub struct EmptyRoot;

impl Context for EmptyRoot {}

impl RootContext for EmptyRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EmptyHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// HTTP context: every callback is the SDK default, which continues.
pub struct EmptyHttp;

impl Context for EmptyHttp {}

impl HttpContext for EmptyHttp {}
