//! The records a worker batches for the usage service: one per request with a known key,
//! handed over through the shared queue when the batch is full or on the root's tick.

use crate::host::{Host, QueueError};
use crate::metrics::Counter;
use crate::usage_record::UsageRecord;
use crate::worker::Worker;

/// Records are handed to the usage service in batches of at most this many.
pub const RECORD_BATCH: usize = 64;
/// A typical record's JSON size, to reserve a batch's room once.
pub(crate) const RECORD_BYTES: usize = 384;

impl Worker {
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
