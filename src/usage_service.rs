//! The usage service: an `envoy.bootstrap.wasm` singleton (same `vm_id`, same `.wasm`, root id
//! `tollgate-usage`) on Envoy's main thread. It is the only consumer of the shared queue the
//! HTTP filters feed; the core's `UsageDelivery` buffers the records (bounded) and says when to
//! POST them to the control plane's `POST /v1/filter/usage` and what each answer means.

use crate::wasm_host::{describe, WasmHost};
use crate::worker::USAGE_QUEUE;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use tollgate_core::config::FilterConfig;
use tollgate_core::host::Clock;
use tollgate_core::metrics::PendingCounts;
use tollgate_core::usage_delivery::UsageDelivery;

pub const USAGE_ROOT_ID: &str = "tollgate-usage";
/// The largest ingest answer read (it lists rejected records at most).
const MAX_INGEST_ANSWER: usize = 1 << 20;

pub struct UsageService {
    context_id: u32,
    queue_id: u32,
    delivery: UsageDelivery,
}

impl UsageService {
    pub fn start(context_id: u32, config: FilterConfig) -> Result<UsageService, String> {
        let queue_id = hostcalls::register_shared_queue(USAGE_QUEUE)
            .map_err(|s| format!("cannot register queue '{USAGE_QUEUE}': {}", describe(s)))?;
        Ok(UsageService {
            context_id,
            queue_id,
            delivery: UsageDelivery::new(&config),
        })
    }

    pub fn on_queue_ready(&mut self, queue_id: u32) {
        if queue_id != self.queue_id {
            return;
        }
        let now = WasmHost.now_ms();
        loop {
            match hostcalls::dequeue_shared_queue(queue_id) {
                Ok(Some(bytes)) => self.delivery.push(bytes, now),
                Ok(None) => break,
                Err(status) => {
                    log::warn!(
                        "[ctx {}] usage queue read failed: {}",
                        self.context_id,
                        describe(status)
                    );
                    break;
                }
            }
        }
        self.maybe_send(now);
    }

    pub fn on_tick(&mut self) {
        let now = WasmHost.now_ms();
        self.maybe_send(now);
    }

    fn maybe_send(&mut self, now: u64) {
        let Some(post) = self.delivery.due(now) else {
            return;
        };
        let cluster = &self.delivery.upstream().cluster;
        let sent = hostcalls::dispatch_http_call(
            cluster,
            self.delivery.headers(),
            Some(&post.body),
            vec![],
            post.timeout,
        );
        match sent {
            Ok(token) => self.delivery.sent(token, post.count),
            Err(status) => {
                log::debug!("[ctx {}] dispatch: {}", self.context_id, describe(status));
                self.delivery.dispatch_failed(now);
            }
        }
    }

    pub fn on_answer(&mut self, token: u32) {
        if !self.delivery.is_in_flight(token) {
            return;
        }
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, MAX_INGEST_ANSWER)
            .ok()
            .flatten()
            .unwrap_or_default();
        let now = WasmHost.now_ms();
        self.delivery.answered(token, status.as_deref(), &body, now);
        // More may be waiting: keep the pipe full.
        self.maybe_send(now);
    }

    /// Moves the delivery counters into the metric counts; answers the records buffered.
    pub fn report(&mut self, counts: &mut PendingCounts) -> u64 {
        self.delivery.report(counts)
    }
}
