//! The end of a request: forgotten by the worker, and its record batched and handed to the
//! usage service through the shared queue.

use super::*;

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
