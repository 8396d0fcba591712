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

/// What an adapter notes of a request as it passes, for its record: the facts of its headers
/// (none until they came), its id, when it started, and when the response's first byte came
/// with its status (0 until then, or for a local reply).
#[derive(Debug, Default)]
pub struct RequestNotes {
    pub facts: Option<RequestFacts>,
    pub request_id: String,
    pub start_ns: u64,
    pub first_byte_ns: u64,
    pub response_code: u32,
}

impl Worker {
    /// Request `ctx` is over: it is forgotten and, if it had a known key and usage records are
    /// on, its record is queued. Answers the request's summary for Envoy's filter state then
    /// (`filter_state_summary`), none otherwise. Only then are `read_code` (the status of a
    /// response that never passed the adapter, a local reply's) and `now_ns` (its end) asked:
    /// reading them may cost host calls.
    pub fn end_request<H: Host>(
        &self,
        host: &H,
        ctx: u32,
        waited: bool,
        notes: &RequestNotes,
        read_code: impl FnOnce() -> u32,
        now_ns: impl FnOnce() -> u64,
    ) -> Option<String> {
        let outcome = self.finish(ctx, waited)?;
        let facts = notes.facts.as_ref()?;
        if !self.config.usage.enabled {
            return None;
        }
        let response_code = match notes.response_code {
            0 => read_code(),
            code => code,
        };
        let end_ns = match notes.first_byte_ns {
            0 => now_ns(),
            at => at,
        };
        let endpoint = routes::classify(&self.config.usage.routes, &facts.method, &facts.path);
        let client_ip = client_ip_or_downstream(host, &facts.client_ip);
        let quota_denial = outcome.denial.is_some_and(|d| d.is_quota());
        let status = UsageStatus::classify(response_code, quota_denial);
        let record = UsageRecord {
            request_id: &notes.request_id,
            timestamp: notes.start_ns / 1_000_000,
            key_id: outcome.key_id(),
            workspace_id: outcome.workspace_id(),
            method: &facts.method,
            endpoint: endpoint.name,
            resource_id: endpoint.resource_id,
            response_code,
            status,
            duration_us: end_ns.saturating_sub(notes.start_ns) / 1_000,
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
