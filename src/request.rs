//! The HTTP context: one per request. Reads the request once, lets the worker decide, and on
//! `on_log` turns a request with a known key into a usage record.

use crate::wasm_host::{describe, header_map_block, now_ns};
use crate::worker::{downstream_ip, WasmWorker};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use std::rc::Rc;
use tollgate_core::action::is_reserved_header;
use tollgate_core::client_ip::header_client_ip;
use tollgate_core::denial::Denial;
use tollgate_core::header_map;
use tollgate_core::limit_headers::rate_limit_headers;
use tollgate_core::worker::{request_facts, RequestHead};
use tollgate_core::worker_records::RequestNotes;

pub struct TollgateRequest {
    context_id: u32,
    /// `None` only if configuration failed, in which case Envoy should not run requests at all.
    worker: Option<Rc<WasmWorker>>,
    paused: bool,
    notes: RequestNotes,
}

impl TollgateRequest {
    pub fn new(context_id: u32, worker: Option<Rc<WasmWorker>>) -> TollgateRequest {
        TollgateRequest {
            context_id,
            worker,
            paused: false,
            notes: RequestNotes::default(),
        }
    }

    fn refuse_unconfigured(&self) -> Action {
        log::error!("[ctx {}] tollgate is not configured", self.context_id);
        let denial = Denial::VerificationUnavailable;
        let headers = vec![("content-type", "application/json")];
        if let Err(status) = hostcalls::send_http_response(
            denial.status(401),
            headers,
            Some(denial.body().as_bytes()),
        ) {
            log::error!(
                "[ctx {}] cannot send denial: {}",
                self.context_id,
                describe(status)
            );
        }
        Action::Pause
    }

    /// The request's record and summary, when it had a known key (`Worker::end_request`).
    fn end(&self, worker: &WasmWorker) {
        let ctx = self.context_id;
        let read_code = || property_u64(&["response", "code"]).unwrap_or(0) as u32;
        let summary = worker.core.end_request(
            &worker.host,
            ctx,
            self.paused,
            &self.notes,
            read_code,
            now_ns,
        );
        if let Some(summary) = summary {
            if let Err(status) = hostcalls::set_property(vec!["tollgate"], Some(summary.as_bytes()))
            {
                log::debug!("[ctx {ctx}] cannot set filter state: {}", describe(status));
            }
        }
    }
}

fn property_u64(path: &[&str]) -> Option<u64> {
    let bytes = hostcalls::get_property(path.to_vec()).ok().flatten()?;
    let array: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(array))
}

impl Context for TollgateRequest {
    fn on_http_call_response(&mut self, token: u32, _: usize, _: usize, _: usize) {
        if let Some(worker) = &self.worker {
            worker.on_callout_answer(self.context_id, token);
        }
    }
}

impl HttpContext for TollgateRequest {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(worker) = self.worker.clone() else {
            return self.refuse_unconfigured();
        };
        let block = match header_map_block(MapType::HttpRequestHeaders) {
            Ok(block) => block,
            Err(status) => {
                log::error!(
                    "[ctx {}] cannot read request headers: {}",
                    self.context_id,
                    describe(status)
                );
                return self.refuse_unconfigured();
            }
        };
        let Some(headers) = header_map::parse_pairs(&block) else {
            log::error!("[ctx {}] malformed request header map", self.context_id);
            return self.refuse_unconfigured();
        };
        for (name, _) in headers.iter().filter(|(n, _)| is_reserved_header(n)) {
            if let Err(status) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name) {
                log::warn!(
                    "[ctx {}] cannot remove {name}: {}",
                    self.context_id,
                    describe(status)
                );
            }
        }
        self.notes.start_ns = now_ns();
        // The client address costs a host call when it comes from Envoy (`downstream`): read it
        // here only if a blocked address must be recognised; denials and records read it later.
        let config = &worker.core.config;
        let client_ip = header_client_ip(config, &headers);
        let client_ip = if client_ip.is_empty() && worker.core.blocks_any_ip() {
            downstream_ip()
        } else {
            client_ip
        };
        let head = RequestHead {
            headers: &headers,
            facts: request_facts(&headers, client_ip),
            now_ms: self.notes.start_ns / 1_000_000,
        };
        if config.usage.enabled {
            self.notes.request_id = header_map::text(&headers, "x-request-id");
        }
        let action = worker.on_request_headers(self.context_id, &head);
        self.notes.facts = Some(head.facts);
        self.paused = action == Action::Pause;
        action
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(worker) = &self.worker else {
            return Action::Continue;
        };
        let core = &worker.core;
        let Some(outcome) = core.outcome(self.context_id) else {
            return Action::Continue;
        };
        if core.config.usage.enabled {
            self.notes.first_byte_ns = now_ns();
            if let Ok(Some(code)) =
                hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
            {
                self.notes.response_code = code.parse().unwrap_or(0);
            }
        }
        // Denials carry these headers already (sent with the local reply).
        if let (None, Some(view)) = (outcome.denial, outcome.rate) {
            for (name, value) in rate_limit_headers(core.config.limits.headers, &view) {
                if let Err(s) =
                    hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(&value))
                {
                    log::debug!(
                        "[ctx {}] cannot add {name}: {}",
                        self.context_id,
                        describe(s)
                    );
                }
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(worker) = self.worker.clone() else {
            return;
        };
        self.end(&worker);
    }
}
