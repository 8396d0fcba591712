//! Host-call probe for `make bench-profile`: an HTTP filter whose plugin configuration is a list
//! like `"headers=10"` naming one kind of host call and how many times to make it per request.
//! Measured against the empty configuration, it gives each host call's own cost in Envoy's
//! instructions (see bench/profile.py). Not part of Tollgate.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::cell::Cell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(ProbeRoot { ops: Rc::new(Cell::new(Ops::default())) })
    });
}}

/// How many calls of each kind one request makes.
#[derive(Default, Clone, Copy)]
struct Ops {
    /// Request: the whole header map (one data-returning call).
    headers: u32,
    /// Request: one header value (data-returning).
    header: u32,
    /// Request: the clock (writes into our memory, nothing allocated).
    clock: u32,
    /// Request: `source.address` (data-returning property).
    address: u32,
    /// Request: add a header (no data returned).
    add: u32,
    /// Request: replace a header.
    set: u32,
    /// Request: remove a header.
    remove: u32,
    /// Request: read a shared-data key that exists (data-returning).
    shared_get: u32,
    /// Response: `:status` (data-returning).
    status: u32,
    /// Response: replace a header.
    response_set: u32,
    /// Log: set a filter-state property.
    set_property: u32,
}

fn parse(config: &str) -> Ops {
    let mut ops = Ops::default();
    for item in config.split(',').filter(|s| !s.is_empty()) {
        let (name, n) = item.split_once('=').unwrap_or((item, "1"));
        let n = n.parse().unwrap_or(0);
        match name {
            "headers" => ops.headers = n,
            "header" => ops.header = n,
            "clock" => ops.clock = n,
            "address" => ops.address = n,
            "add" => ops.add = n,
            "set" => ops.set = n,
            "remove" => ops.remove = n,
            "shared_get" => ops.shared_get = n,
            "status" => ops.status = n,
            "response_set" => ops.response_set = n,
            "set_property" => ops.set_property = n,
            other => log::warn!("probe: unknown operation '{other}'"),
        }
    }
    ops
}

struct ProbeRoot {
    ops: Rc<Cell<Ops>>,
}

impl Context for ProbeRoot {}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.ops.set(parse(&String::from_utf8_lossy(&bytes)));
        let _ = hostcalls::set_shared_data("probe.key", Some(&[7u8; 32]), None);
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            ops: self.ops.get(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    ops: Ops,
}

impl Context for Probe {}

const NAMES: [&str; 5] = [
    "x-probe-a",
    "x-probe-b",
    "x-probe-c",
    "x-probe-d",
    "x-probe-e",
];

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let o = self.ops;
        let req = MapType::HttpRequestHeaders;
        for _ in 0..o.headers {
            let _ = hostcalls::get_map_bytes(req);
        }
        for _ in 0..o.header {
            let _ = hostcalls::get_map_value(req, "x-api-key");
        }
        for _ in 0..o.clock {
            let _ = hostcalls::get_current_time();
        }
        for _ in 0..o.address {
            let _ = hostcalls::get_property(vec!["source", "address"]);
        }
        for i in 0..o.add as usize {
            let _ = hostcalls::add_map_value(req, NAMES[i % 5], "value");
        }
        for i in 0..o.set as usize {
            let _ = hostcalls::set_map_value(req, NAMES[i % 5], Some("value"));
        }
        for _ in 0..o.remove {
            let _ = hostcalls::remove_map_value(req, "x-api-key");
        }
        for _ in 0..o.shared_get {
            let _ = hostcalls::get_shared_data("probe.key");
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let o = self.ops;
        for _ in 0..o.status {
            let _ = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status");
        }
        for i in 0..o.response_set as usize {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, NAMES[i % 5], Some("1"));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        for _ in 0..self.ops.set_property {
            let _ = hostcalls::set_property(vec!["probe"], Some(b"{\"key_id\":\"key_1\"}"));
        }
    }
}
