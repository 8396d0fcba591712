//! The usage service: an `envoy.bootstrap.wasm` singleton (same `vm_id`, same `.wasm`, root id
//! `tollgate-usage`) on Envoy's main thread. It is the only consumer of the shared queue the
//! HTTP filters feed, buffers records (bounded, see `usage_buffer`) and POSTs them in batches
//! to the control plane's `POST /v1/filter/usage`, retrying with backoff.

use crate::wasm_host::{describe, WasmHost};
use crate::worker::USAGE_QUEUE;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use tollgate_core::config::FilterConfig;
use tollgate_core::host::Clock;
use tollgate_core::ingest_answer;
use tollgate_core::metrics::{Counter, PendingCounts};
use tollgate_core::record_batch::RecordBatch;
use tollgate_core::usage_buffer::UsageBuffer;

pub const USAGE_ROOT_ID: &str = "tollgate-usage";
const INGEST_PATH: &str = "/v1/filter/usage";

pub struct UsageService {
    context_id: u32,
    config: FilterConfig,
    authorization: String,
    queue_id: u32,
    buffer: UsageBuffer,
    reported: tollgate_core::usage_buffer::UsageCounts,
}

impl UsageService {
    pub fn start(context_id: u32, config: FilterConfig) -> Result<UsageService, String> {
        let queue_id = hostcalls::register_shared_queue(USAGE_QUEUE)
            .map_err(|s| format!("cannot register queue '{USAGE_QUEUE}': {}", describe(s)))?;
        Ok(UsageService {
            context_id,
            authorization: format!("Bearer {}", config.filter_token),
            buffer: UsageBuffer::new(config.usage.delivery),
            config,
            queue_id,
            reported: Default::default(),
        })
    }

    pub fn on_queue_ready(&mut self, queue_id: u32) {
        if queue_id != self.queue_id {
            return;
        }
        let now = WasmHost.now_ms();
        loop {
            match hostcalls::dequeue_shared_queue(queue_id) {
                Ok(Some(bytes)) => match RecordBatch::parse(bytes) {
                    Ok(batch) => self.buffer.push_batch(batch, now),
                    // Written by this same .wasm: a damaged batch is a bug, never input.
                    Err(e) => log::error!("[ctx {}] usage batch dropped: {e}", self.context_id),
                },
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
        if !self.buffer.should_send(now) {
            return;
        }
        let (body, count) = self.buffer.next_body();
        let upstream = &self.config.control_plane;
        let headers = upstream.post_headers(INGEST_PATH, &self.authorization);
        match hostcalls::dispatch_http_call(
            &upstream.cluster,
            headers,
            Some(&body),
            vec![],
            upstream.timeout.max(std::time::Duration::from_secs(5)),
        ) {
            Ok(token) => self.buffer.sent(token, count),
            Err(status) => {
                log::warn!(
                    "[ctx {}] cannot send usage to the control plane at {upstream}: {}",
                    self.context_id,
                    describe(status)
                );
                self.buffer.dispatch_failed(now);
            }
        }
    }

    pub fn on_answer(&mut self, token: u32) {
        if !self.buffer.is_in_flight(token) {
            return;
        }
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .unwrap_or_default();
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, 1 << 20)
            .ok()
            .flatten()
            .unwrap_or_default();
        let now = WasmHost.now_ms();
        let ctx = self.context_id;
        match status.as_str() {
            "200" | "201" | "202" => {
                let rejected = ingest_answer::rejected(&body);
                if !rejected.is_empty() {
                    log::warn!(
                        "[ctx {ctx}] control plane rejected {} usage records, e.g. {}",
                        rejected.len(),
                        rejected[..rejected.len().min(3)].join("; ")
                    );
                }
                self.buffer.acknowledged(token, rejected.len() as u64);
            }
            "400" | "413" | "422" => {
                let n = self.buffer.discard_in_flight(token);
                log::error!(
                    "[ctx {ctx}] control plane refused a usage batch of {n} records ({status}): {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                );
            }
            _ => {
                let delay = self.buffer.failed(token, now);
                log::warn!(
                    "[ctx {ctx}] usage delivery failed ({status} {}); {} records kept, retry in {delay} ms",
                    String::from_utf8_lossy(&body[..body.len().min(120)]),
                    self.buffer.len()
                );
            }
        }
        // More may be waiting: keep the pipe full.
        self.maybe_send(now);
    }

    /// Moves the buffer's counters into the metric counts.
    pub fn report(&mut self, counts: &mut PendingCounts) -> u64 {
        let now = self.buffer.counts;
        let before = std::mem::replace(&mut self.reported, now);
        counts.add_n(Counter::UsageDelivered, now.delivered - before.delivered);
        counts.add_n(Counter::UsageDropped, now.dropped - before.dropped);
        counts.add_n(Counter::UsageRejected, now.rejected - before.rejected);
        counts.add_n(
            Counter::UsageDeliveryFailed,
            now.failed_attempts - before.failed_attempts,
        );
        self.buffer.len() as u64
    }
}
