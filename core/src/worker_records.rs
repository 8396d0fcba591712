//! The records a worker batches for the usage service: one per request with a known key,
//! handed over through the shared queue when the batch is full or on the root's tick.

use crate::decision::RequestFacts;
use crate::host::{Host, QueueError};
use crate::metrics::Counter;
use crate::routes;
use crate::usage_record::{filter_state_summary, UsageRecord, UsageStatus};
use crate::worker::{client_ip_or_downstream, Worker};

/// Records are handed to the usage service in batches of at most this many.
pub const RECORD_BATCH: usize = 64;
/// A typical record's JSON size, to reserve a batch's room once.
pub(crate) const RECORD_BYTES: usize = 384;

/// What an adapter kept of a request for its record.
pub struct RequestEnd<'a> {
    pub facts: &'a RequestFacts,
    pub request_id: &'a str,
    pub start_ns: u64,
}

/// What an adapter reads when a request's record is written (reading may cost host calls,
/// so only then): the response code and when the response's first byte came (now, for a
/// local reply).
pub struct Measured {
    pub response_code: u32,
    pub end_ns: u64,
}

impl Worker {
    /// Request `ctx` is over: it is forgotten and, if it had a known key and usage records are
    /// on, its record is queued. Answers the request's summary for Envoy's filter state then
    /// (`filter_state_summary`), none otherwise. `end` is `None` for a request that never
    /// reached its headers.
    pub fn end_request<H: Host>(
        &self,
        host: &H,
        ctx: u32,
        waited: bool,
        end: Option<RequestEnd>,
        measure: impl FnOnce() -> Measured,
    ) -> Option<String> {
        let outcome = self.finish(ctx, waited)?;
        let end = end?;
        if !self.config.usage.enabled {
            return None;
        }
        let Measured {
            response_code,
            end_ns,
        } = measure();
        let facts = end.facts;
        let endpoint = routes::classify(&self.config.usage.routes, &facts.method, &facts.path);
        let client_ip = client_ip_or_downstream(host, &facts.client_ip);
        let quota_denial = outcome.denial.is_some_and(|d| d.is_quota());
        let status = UsageStatus::classify(response_code, quota_denial);
        let record = UsageRecord {
            request_id: end.request_id,
            timestamp: end.start_ns / 1_000_000,
            key_id: outcome.key_id(),
            workspace_id: outcome.workspace_id(),
            method: &facts.method,
            endpoint: endpoint.name,
            resource_id: endpoint.resource_id,
            response_code,
            status,
            duration_us: end_ns.saturating_sub(end.start_ns) / 1_000,
            client_ip: &client_ip,
            credits: endpoint.credits,
            admitted: outcome.admitted(),
            instance: &self.instance,
        };
        self.push_record(host, ctx, &record);
        Some(filter_state_summary(
            outcome.key_id(),
            outcome.workspace_id(),
            status,
            endpoint.credits,
        ))
    }

    /// Adds one record to this worker's batch, handing the batch over when full.
    pub fn push_record<H: Host>(&self, host: &H, ctx: u32, record: &UsageRecord) {
        let (stored, full) = {
            let mut records = self.records.borrow_mut();
            let stored = records.push(|out| record.write_json(out));
            (stored, records.len() >= RECORD_BATCH)
        };
        if !stored {
            self.counts.borrow_mut().add(Counter::RecordDropped);
        }
        if full || !stored {
            self.flush_records(host, ctx);
        }
    }

    /// Hands the batch to the usage service through the shared queue.
    pub fn flush_records<H: Host>(&self, host: &H, ctx: u32) {
        let (batch, count) = {
            let mut records = self.records.borrow_mut();
            if records.is_empty() {
                return;
            }
            let count = records.len();
            (records.finish(), count)
        };
        let delivered = match host.enqueue_records(&batch) {
            Ok(()) => true,
            Err(QueueError::Refused(e)) => {
                log::warn!("[ctx {ctx}] usage queue refused a batch: {e}");
                false
            }
            Err(QueueError::NotFound(queue)) => {
                log::warn!(
                    "[ctx {ctx}] no usage service: {queue} not found; {count} records dropped \
                     (add the envoy.bootstrap.wasm service)"
                );
                false
            }
        };
        let counter = if delivered {
            Counter::RecordQueued
        } else {
            Counter::RecordDropped
        };
        self.counts.borrow_mut().add_n(counter, count as u64);
    }
}
