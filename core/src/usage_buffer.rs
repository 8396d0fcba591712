//! The usage service's buffer: records waiting for delivery to the control plane.
//!
//! Bounded: at most `max_records`; past it the oldest are dropped and counted. At most one
//! batch is in flight; it stays in the buffer until the control plane acknowledges it, so a
//! failed or lost POST is simply sent again (at-least-once; ingest is idempotent on
//! `request_id`). Failures back off exponentially.

use crate::record_batch::RecordBatch;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    pub batch_size: usize,
    pub max_age_ms: u64,
    pub max_records: usize,
    pub min_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    token: u32,
    /// Records at the front of the buffer that belong to the batch (fewer if some were
    /// dropped for space meanwhile).
    remaining: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageCounts {
    pub dropped: u64,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub rejected: u64,
}

pub struct UsageBuffer {
    policy: DeliveryPolicy,
    /// Worker batches in arrival order; the records of each not yet delivered or dropped.
    batches: VecDeque<Pending>,
    /// Records in `batches` (at most `policy.max_records`).
    total: usize,
    in_flight: Option<InFlight>,
    failures: u32,
    next_attempt_ms: u64,
    pub counts: UsageCounts,
}

/// One worker batch and how far into it delivery (or dropping) has got.
struct Pending {
    arrived_ms: u64,
    batch: RecordBatch,
    first: usize,
}

impl UsageBuffer {
    pub fn new(policy: DeliveryPolicy) -> UsageBuffer {
        UsageBuffer {
            policy,
            batches: VecDeque::new(),
            total: 0,
            in_flight: None,
            failures: 0,
            next_attempt_ms: 0,
            counts: UsageCounts::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Adds one worker batch from the shared queue; past `max_records` the oldest records go.
    pub fn push_batch(&mut self, batch: RecordBatch, now_ms: u64) {
        if batch.is_empty() {
            return;
        }
        self.total += batch.len();
        self.batches.push_back(Pending {
            arrived_ms: now_ms,
            batch,
            first: 0,
        });
        let excess = self.total.saturating_sub(self.policy.max_records);
        if excess > 0 {
            let dropped = self.remove_front(excess);
            self.counts.dropped += dropped as u64;
            if let Some(in_flight) = self.in_flight.as_mut() {
                in_flight.remaining = in_flight.remaining.saturating_sub(dropped);
            }
        }
    }

    /// Removes up to `n` records from the front; how many it removed.
    fn remove_front(&mut self, mut n: usize) -> usize {
        let mut removed = 0;
        while n > 0 {
            let Some(front) = self.batches.front_mut() else {
                break;
            };
            let take = n.min(front.batch.len() - front.first);
            front.first += take;
            if front.first >= front.batch.len() {
                self.batches.pop_front();
            }
            n -= take;
            removed += take;
        }
        self.total -= removed;
        removed
    }

    pub fn should_send(&self, now_ms: u64) -> bool {
        if self.in_flight.is_some() || now_ms < self.next_attempt_ms {
            return false;
        }
        match self.batches.front() {
            None => false,
            Some(front) => {
                self.total >= self.policy.batch_size
                    || now_ms.saturating_sub(front.arrived_ms) >= self.policy.max_age_ms
            }
        }
    }

    /// The next batch as the ingest body `{"records":[...]}` and how many records it holds.
    pub fn next_body(&self) -> (Vec<u8>, usize) {
        let count = self.total.min(self.policy.batch_size);
        let mut runs = Vec::new();
        let mut left = count;
        for pending in &self.batches {
            if left == 0 {
                break;
            }
            let to = (pending.first + left).min(pending.batch.len());
            runs.push(pending.batch.records(pending.first, to));
            left -= to - pending.first;
        }
        let size = runs.iter().map(|r| r.len() + 1).sum::<usize>();
        let mut body = Vec::with_capacity(16 + size);
        body.extend_from_slice(b"{\"records\":[");
        for (i, run) in runs.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(run);
        }
        body.extend_from_slice(b"]}");
        (body, count)
    }

    pub fn sent(&mut self, token: u32, count: usize) {
        self.in_flight = Some(InFlight {
            token,
            remaining: count,
        });
    }

    pub fn is_in_flight(&self, token: u32) -> bool {
        self.in_flight.is_some_and(|f| f.token == token)
    }

    /// The control plane stored (or rejected as invalid) the whole batch.
    pub fn acknowledged(&mut self, token: u32, rejected: u64) {
        if let Some(in_flight) = self.in_flight.take_if(|f| f.token == token) {
            let n = self.remove_front(in_flight.remaining);
            self.counts.delivered += (n as u64).saturating_sub(rejected);
            self.counts.rejected += rejected;
            self.failures = 0;
            self.next_attempt_ms = 0;
        }
    }

    /// The batch was refused as a whole (e.g. 400/413): sending it again cannot succeed.
    pub fn discard_in_flight(&mut self, token: u32) -> usize {
        match self.in_flight.take_if(|f| f.token == token) {
            Some(in_flight) => {
                let n = self.remove_front(in_flight.remaining);
                self.counts.rejected += n as u64;
                n
            }
            None => 0,
        }
    }

    /// Delivery failed (control plane down, 5xx, timeout): keep everything, back off.
    pub fn failed(&mut self, token: u32, now_ms: u64) -> u64 {
        if self.in_flight.take_if(|f| f.token == token).is_none() {
            return 0;
        }
        self.counts.failed_attempts += 1;
        let shift = self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        let delay = self
            .policy
            .min_backoff_ms
            .saturating_mul(1 << shift)
            .min(self.policy.max_backoff_ms);
        self.next_attempt_ms = now_ms + delay;
        delay
    }

    /// The POST could not even be dispatched: nothing in flight, try again after a backoff.
    pub fn dispatch_failed(&mut self, now_ms: u64) {
        self.counts.failed_attempts += 1;
        self.next_attempt_ms = now_ms + self.policy.min_backoff_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_batch::RecordBatchWriter;

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            batch_size: 3,
            max_age_ms: 1_000,
            max_records: 5,
            min_backoff_ms: 100,
            max_backoff_ms: 1_000,
        }
    }

    fn lines(ids: std::ops::Range<u32>) -> RecordBatch {
        let mut writer = RecordBatchWriter::new(4, 16);
        for i in ids {
            writer.push(|out| out.extend_from_slice(format!("{{\"n\":{i}}}").as_bytes()));
        }
        RecordBatch::parse(writer.finish()).unwrap()
    }

    fn body_ids(buffer: &UsageBuffer) -> Vec<u64> {
        let (body, _) = buffer.next_body();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["n"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn sends_when_full_or_old() {
        let mut buffer = UsageBuffer::new(policy());
        buffer.push_batch(lines(0..2), 0);
        assert!(!buffer.should_send(999));
        assert!(buffer.should_send(1_000));
        buffer.push_batch(lines(2..3), 10);
        assert!(buffer.should_send(10));
        assert_eq!(body_ids(&buffer), vec![0, 1, 2]);
    }

    #[test]
    fn acknowledged_batch_leaves_failed_batch_stays() {
        let mut buffer = UsageBuffer::new(policy());
        buffer.push_batch(lines(0..4), 0);
        let (_, count) = buffer.next_body();
        buffer.sent(7, count);
        assert!(!buffer.should_send(5_000), "one batch in flight at a time");
        assert_eq!(buffer.failed(7, 0), 100);
        assert_eq!(buffer.len(), 4, "nothing lost on failure");
        assert!(!buffer.should_send(99));
        assert!(buffer.should_send(100));
        buffer.sent(8, count);
        assert_eq!(buffer.failed(8, 100), 200, "exponential backoff");
        buffer.sent(9, count);
        buffer.acknowledged(9, 0);
        assert_eq!(buffer.len(), 1);
        assert_eq!(buffer.counts.delivered, 3);
        assert_eq!(body_ids(&buffer), vec![3]);
        // A stale token changes nothing.
        buffer.acknowledged(9, 0);
        assert_eq!(buffer.len(), 1);
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts_them() {
        let mut buffer = UsageBuffer::new(policy());
        buffer.push_batch(lines(0..3), 0);
        buffer.sent(1, 3);
        buffer.push_batch(lines(3..8), 0);
        assert_eq!(buffer.len(), 5);
        assert_eq!(buffer.counts.dropped, 3);
        // The in-flight records were among the dropped: the ack removes none of the new ones.
        buffer.acknowledged(1, 0);
        assert_eq!(buffer.len(), 5);
        assert_eq!(body_ids(&buffer), vec![3, 4, 5]);
    }

    #[test]
    fn backoff_is_capped() {
        let mut buffer = UsageBuffer::new(policy());
        buffer.push_batch(lines(0..1), 0);
        let mut last = 0;
        for token in 0..40 {
            buffer.sent(token, 1);
            last = buffer.failed(token, 0);
        }
        assert_eq!(last, 1_000);
        assert_eq!(buffer.counts.failed_attempts, 40);
    }

    #[test]
    fn refused_batch_is_discarded_and_counted() {
        let mut buffer = UsageBuffer::new(policy());
        buffer.push_batch(lines(0..4), 0);
        buffer.sent(3, 3);
        assert_eq!(buffer.discard_in_flight(3), 3);
        assert_eq!(buffer.counts.rejected, 3);
        assert_eq!(buffer.len(), 1);
    }
}
