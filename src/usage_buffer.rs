//! The usage service's buffer: records waiting for delivery to the control plane.
//!
//! Bounded: at most `max_records`; past it the oldest are dropped and counted. At most one
//! batch is in flight; it stays in the buffer until the control plane acknowledges it, so a
//! failed or lost POST is simply sent again (at-least-once; ingest is idempotent on
//! `request_id`). Failures back off exponentially.

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
    /// (arrival time, one JSON record).
    records: VecDeque<(u64, Vec<u8>)>,
    in_flight: Option<InFlight>,
    failures: u32,
    next_attempt_ms: u64,
    pub counts: UsageCounts,
}

impl UsageBuffer {
    pub fn new(policy: DeliveryPolicy) -> UsageBuffer {
        UsageBuffer {
            policy,
            records: VecDeque::new(),
            in_flight: None,
            failures: 0,
            next_attempt_ms: 0,
            counts: UsageCounts::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Adds newline-separated JSON records (one worker batch from the shared queue).
    pub fn push_lines(&mut self, batch: &[u8], now_ms: u64) {
        for line in batch.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if self.records.len() >= self.policy.max_records {
                self.records.pop_front();
                self.counts.dropped += 1;
                if let Some(in_flight) = self.in_flight.as_mut() {
                    in_flight.remaining = in_flight.remaining.saturating_sub(1);
                }
            }
            self.records.push_back((now_ms, line.to_vec()));
        }
    }

    pub fn should_send(&self, now_ms: u64) -> bool {
        if self.in_flight.is_some() || now_ms < self.next_attempt_ms {
            return false;
        }
        match self.records.front() {
            None => false,
            Some((arrived, _)) => {
                self.records.len() >= self.policy.batch_size
                    || now_ms.saturating_sub(*arrived) >= self.policy.max_age_ms
            }
        }
    }

    /// The next batch as the ingest body `{"records":[...]}` and how many records it holds.
    pub fn next_body(&self) -> (Vec<u8>, usize) {
        let count = self.records.len().min(self.policy.batch_size);
        let mut body = Vec::with_capacity(16 + count * 256);
        body.extend_from_slice(b"{\"records\":[");
        for (i, (_, record)) in self.records.iter().take(count).enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(record);
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
            let n = in_flight.remaining.min(self.records.len());
            self.records.drain(..n);
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
                let n = in_flight.remaining.min(self.records.len());
                self.records.drain(..n);
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

    fn policy() -> DeliveryPolicy {
        DeliveryPolicy {
            batch_size: 3,
            max_age_ms: 1_000,
            max_records: 5,
            min_backoff_ms: 100,
            max_backoff_ms: 1_000,
        }
    }

    fn lines(ids: std::ops::Range<u32>) -> Vec<u8> {
        ids.map(|i| format!("{{\"n\":{i}}}\n"))
            .collect::<String>()
            .into_bytes()
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
        buffer.push_lines(&lines(0..2), 0);
        assert!(!buffer.should_send(999));
        assert!(buffer.should_send(1_000));
        buffer.push_lines(&lines(2..3), 10);
        assert!(buffer.should_send(10));
        assert_eq!(body_ids(&buffer), vec![0, 1, 2]);
    }

    #[test]
    fn acknowledged_batch_leaves_failed_batch_stays() {
        let mut buffer = UsageBuffer::new(policy());
        buffer.push_lines(&lines(0..4), 0);
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
        buffer.push_lines(&lines(0..3), 0);
        buffer.sent(1, 3);
        buffer.push_lines(&lines(3..8), 0);
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
        buffer.push_lines(&lines(0..1), 0);
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
        buffer.push_lines(&lines(0..4), 0);
        buffer.sent(3, 3);
        assert_eq!(buffer.discard_in_flight(3), 3);
        assert_eq!(buffer.counts.rejected, 3);
        assert_eq!(buffer.len(), 1);
    }
}
