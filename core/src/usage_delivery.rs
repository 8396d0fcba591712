//! The usage service's logic, host-free: worker batches into the bounded buffer
//! (`usage_buffer`), when to POST and what, and what each answer of `POST /v1/filter/usage`
//! means. An adapter only moves bytes: it dispatches the POST `due` hands it and reports the
//! answer back. The wasm build runs this in its bootstrap singleton, the native build on
//! Envoy's main thread.

use crate::config::FilterConfig;
use crate::ingest_answer;
use crate::metrics::{Counter, PendingCounts};
use crate::record_batch::RecordBatch;
use crate::upstream::Upstream;
use crate::usage_buffer::{UsageBuffer, UsageCounts};
use std::time::Duration;

pub const INGEST_PATH: &str = "/v1/filter/usage";

/// A POST of usage records to send now.
pub struct UsagePost {
    pub body: Vec<u8>,
    /// Records in the body.
    pub count: usize,
    /// How long to wait for the answer: at least 5 s, ingest of a full batch takes a moment.
    pub timeout: Duration,
}

pub struct UsageDelivery {
    upstream: Upstream,
    authorization: String,
    buffer: UsageBuffer,
    /// The buffer's counts at the last `report`.
    reported: UsageCounts,
}

impl UsageDelivery {
    pub fn new(config: &FilterConfig) -> UsageDelivery {
        UsageDelivery {
            upstream: config.control_plane.clone(),
            authorization: format!("Bearer {}", config.filter_token),
            buffer: UsageBuffer::new(config.usage.delivery),
            reported: UsageCounts::default(),
        }
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The request headers of a usage POST.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        self.upstream.post_headers(INGEST_PATH, &self.authorization)
    }

    /// A worker's batch (`record_batch` framing) arrived.
    pub fn push(&mut self, bytes: Vec<u8>, now_ms: u64) {
        match RecordBatch::parse(bytes) {
            Ok(batch) => self.buffer.push_batch(batch, now_ms),
            // Written by this same build: a damaged batch is a bug, never input.
            Err(e) => log::error!("usage batch dropped: {e}"),
        }
    }

    /// The POST to send now, if one is due (none while one is in flight or backing off).
    pub fn due(&self, now_ms: u64) -> Option<UsagePost> {
        if !self.buffer.should_send(now_ms) {
            return None;
        }
        let (body, count) = self.buffer.next_body();
        Some(UsagePost {
            body,
            count,
            timeout: self.upstream.timeout.max(Duration::from_secs(5)),
        })
    }

    /// The POST `due` handed out went out as callout `token`.
    pub fn sent(&mut self, token: u32, count: usize) {
        self.buffer.sent(token, count);
    }

    /// The POST could not be sent at all: try again after the backoff.
    pub fn dispatch_failed(&mut self, now_ms: u64) {
        log::warn!(
            "cannot send usage to the control plane at {}",
            self.upstream
        );
        self.buffer.dispatch_failed(now_ms);
    }

    /// Whether callout `token` is the usage POST in flight.
    pub fn is_in_flight(&self, token: u32) -> bool {
        self.buffer.is_in_flight(token)
    }

    /// The answer to the usage POST `token`: its `:status` (none if the callout failed) and
    /// body. Stored → the batch leaves the buffer; refused as invalid → dropped and counted;
    /// anything else → kept and retried after a backoff.
    pub fn answered(&mut self, token: u32, status: Option<&str>, body: &[u8], now_ms: u64) {
        if !self.buffer.is_in_flight(token) {
            return;
        }
        let status = status.unwrap_or_default();
        match status {
            "200" | "201" | "202" => {
                let rejected = ingest_answer::rejected(body);
                if !rejected.is_empty() {
                    log::warn!(
                        "control plane rejected {} usage records, e.g. {}",
                        rejected.len(),
                        rejected[..rejected.len().min(3)].join("; ")
                    );
                }
                self.buffer.acknowledged(token, rejected.len() as u64);
            }
            "400" | "413" | "422" => {
                let n = self.buffer.discard_in_flight(token);
                log::error!(
                    "control plane refused a usage batch of {n} records ({status}): {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                );
            }
            _ => {
                let delay = self.buffer.failed(token, now_ms);
                log::warn!(
                    "usage delivery failed ({status} {}); {} records kept, retry in {delay} ms",
                    String::from_utf8_lossy(&body[..body.len().min(120)]),
                    self.buffer.len()
                );
            }
        }
    }

    /// Moves the buffer's counters since the last report into `counts`; answers the records
    /// buffered (for the gauge).
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
