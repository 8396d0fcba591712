//! The end of a request: forgotten by the worker, and its record batched and handed to the
//! usage service through the shared queue.

use super::*;
use crate::decision::RequestFacts;
use crate::worker_records::RequestNotes;

#[test]
fn finish_forgets_the_request() {
    let mut f = Filter::plain();
    let k = f.known(92, &state("key_f", ""));
    f.request(10, &k);
    assert!(f.worker.finish(10, false).is_some());
    assert!(f.worker.outcome(10).is_none());
}

fn record(n: u32) -> String {
    format!("r-{n}")
}

fn push(f: &Filter, ctx: u32, request_id: &str) {
    let record = UsageRecord {
        request_id,
        timestamp: T0,
        key_id: "key_1",
        workspace_id: "ws_1",
        method: "GET",
        endpoint: "/v1/things/{id}",
        resource_id: Some("1"),
        response_code: 200,
        status: UsageStatus::Completed,
        duration_us: 1_500,
        client_ip: "10.0.0.1",
        credits: 1,
        admitted: true,
        instance: "i_test",
    };
    f.worker.push_record(&f.host, ctx, &record);
}

#[test]
fn records_are_queued_in_batches_and_on_the_tick() {
    let mut f = Filter::plain();
    for n in 0..RECORD_BATCH as u32 + 3 {
        push(&f, 10, &record(n));
    }
    let batches = f.host.queue.borrow().clone().unwrap();
    assert_eq!(batches.len(), 1, "a full batch goes at once");
    let batch = crate::record_batch::RecordBatch::parse(batches[0].clone()).unwrap();
    assert_eq!(batch.len(), RECORD_BATCH);
    f.tick();
    let batches = f.host.queue.borrow().clone().unwrap();
    assert_eq!(batches.len(), 2, "the rest on the tick");
    let text = String::from_utf8_lossy(&batches[1]).into_owned();
    assert!(text.contains("\"request_id\":\"r-66\""), "{text}");
    assert_eq!(f.counted(Counter::RecordQueued), RECORD_BATCH as u64 + 3);
}

#[test]
fn records_without_a_usage_service_are_counted_as_dropped() {
    let mut f = Filter::plain();
    *f.host.queue.borrow_mut() = None;
    push(&f, 10, "r-1");
    push(&f, 10, "r-2");
    f.tick();
    assert_eq!(f.counted(Counter::RecordDropped), 2);
    assert_eq!(f.counted(Counter::RecordQueued), 0);
}

fn notes(request_id: &str) -> RequestNotes {
    RequestNotes {
        facts: Some(RequestFacts {
            method: "GET".into(),
            path: "/v1/things/1".into(),
            client_ip: "10.0.0.1".into(),
        }),
        request_id: request_id.into(),
        start_ns: T0 * 1_000_000,
        first_byte_ns: 0,
        response_code: 0,
    }
}

fn code_200() -> u32 {
    200
}

fn later_ns() -> u64 {
    T0 * 1_000_000 + 2_500_000
}

#[test]
fn a_request_with_a_known_key_ends_with_its_record_and_summary() {
    let mut f = Filter::plain();
    let k = f.known(93, &state("key_e", ""));
    f.request(11, &k);
    let summary = f
        .worker
        .end_request(&f.host, 11, false, &notes("req-11"), code_200, later_ns)
        .unwrap();
    assert!(summary.contains("\"key_id\":\"key_e\""), "{summary}");
    assert!(summary.contains("\"status\":\"completed\""), "{summary}");
    assert!(f.worker.outcome(11).is_none(), "forgotten");
    f.tick();
    let batches = f.host.queue.borrow().clone().unwrap();
    let text = String::from_utf8_lossy(batches.last().unwrap()).into_owned();
    assert!(text.contains("\"request_id\":\"req-11\""), "{text}");
    assert!(text.contains("\"key_id\":\"key_e\""), "{text}");
    assert!(text.contains("\"response_code\":200"), "{text}");
}

#[test]
fn only_a_request_with_a_known_key_and_usage_on_is_measured() {
    // No known key (a missing key's denial): nothing measured, nothing recorded.
    let mut f = Filter::plain();
    f.request_with(12, &[], "10.0.0.1");
    let never_code = || -> u32 { panic!("measured a request without a known key") };
    let never_now = || -> u64 { panic!("measured a request without a known key") };
    assert_eq!(
        f.worker
            .end_request(&f.host, 12, false, &notes("r"), never_code, never_now),
        None
    );
    // Usage records off: forgotten, not measured.
    let mut f = Filter::new(r#"{"control_plane":{"cluster":"cp"},"usage":{"enabled":false}}"#);
    let k = f.known(94, &state("key_o", ""));
    f.request(13, &k);
    let never_code = || -> u32 { panic!("measured with usage records off") };
    let never_now = || -> u64 { panic!("measured with usage records off") };
    assert_eq!(
        f.worker
            .end_request(&f.host, 13, false, &notes("r"), never_code, never_now),
        None
    );
    assert!(f.worker.outcome(13).is_none());
}
