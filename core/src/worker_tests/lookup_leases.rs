//! The first leases of a key, granted with its lookup (docs/protocol.md, "The first leases,
//! granted with the lookup"): a cold key with a budget passes after one callout, the leases are
//! spent and settled like any other, a full budget denies without asking again before the
//! retry, and a lookup asks for no lease while the Envoy holds a live one.

use super::*;
use crate::budget::Meter;
use crate::budgets::IDLE_MS;
use crate::lease_record::{self, RecordKey, INITIAL_WANT};
use crate::lease_wire::{lookup_lease_id, LOOKUP_LEASE};
use serde_json::Value;

fn calls_record(f: &Filter, k: &str) -> lease_record::LeaseRecord {
    let at = RecordKey::new(Meter::Calls, parse_key(k.as_bytes()).unwrap(), 8192);
    lease_record::read(&f.host, &at).unwrap()
}

/// The lease id base the lookup `token` asked with.
fn asked_base(f: &Filter, token: u32) -> u64 {
    let path = f.lookup_path(token);
    let base = path.split("?lease=i_test.").nth(1).unwrap();
    u64::from_str_radix(&base[..16], 16).unwrap()
}

#[test]
fn a_cold_key_with_a_quota_passes_after_the_lookup_alone() {
    let mut f = Filter::plain();
    let k = key(1);
    assert_eq!(f.request(10, &k), Seen::Wait);
    let token = f.last_token();
    f.answer_with_leases(10, token, &daily("key_c", 100));
    assert_eq!(f.take_resumed(), [(10, passed("key_c"))]);
    assert_eq!(f.callouts(), 1, "one round trip: the lookup");
    assert_eq!(f.counted(Counter::LookupDispatched), 1);
    assert_eq!(f.counted(Counter::LeaseDispatched), 0);
    assert_eq!(f.cp.leased("key_c", "calls"), INITIAL_WANT);
    let lease = calls_record(&f, &k).leases[0];
    assert_eq!(
        lease.id,
        lookup_lease_id(asked_base(&f, token), Meter::Calls)
    );
    assert_eq!(
        lease.deadline_ms,
        T0 + 30_000,
        "counted from when the lookup was sent"
    );
    f.worker.finish(10, true);
    // The rest of the lease: no callout for it.
    for ctx in 11..18 {
        assert_eq!(f.request(ctx, &k), passed("key_c"));
    }
    assert_eq!(f.callouts(), 1);
}

#[test]
fn a_cold_key_with_a_credit_budget_gets_a_lease_on_each_meter() {
    let mut f = Filter::plain();
    let k = key(2);
    let budget = r#""quotas":{"total":50},"credits":{"limit":100,"period":"total","used":0,"period_start_ms":0}"#;
    assert_eq!(f.request(10, &k), Seen::Wait);
    f.answer_with_leases(10, f.last_token(), &state("key_b", budget));
    assert_eq!(f.take_resumed(), [(10, passed("key_b"))]);
    assert_eq!(f.callouts(), 1);
    assert_eq!(f.cp.leased("key_b", "calls"), INITIAL_WANT);
    assert_eq!(f.cp.leased("key_b", "credits"), INITIAL_WANT);
}

#[test]
fn a_lookup_answer_without_leases_still_asks_for_a_lease_as_before() {
    let mut f = Filter::plain();
    f.hold_leases = true;
    let k = key(3);
    assert_eq!(f.request(10, &k), Seen::Wait);
    assert!(f.lookup_path(f.last_token()).contains("?lease="));
    // An old control plane: the query is ignored, the answer has no `leases`.
    f.answer(10, f.last_token(), "200", &daily("key_o", 100));
    assert!(f.take_resumed().is_empty(), "waits for a lease callout");
    assert_eq!(lease_callouts(&f).len(), 1);
    f.serve_leases();
    assert_eq!(f.take_resumed(), [(10, passed("key_o"))]);
    assert_eq!(f.counted(Counter::LeaseDispatched), 1);
}

#[test]
fn a_lookup_asks_for_no_lease_while_the_envoy_holds_a_live_one() {
    let mut f = Filter::plain();
    let k = key(4);
    f.request(10, &k);
    f.answer_with_leases(10, f.last_token(), &daily("key_l", 1_000));
    f.take_resumed();
    f.worker.finish(10, true);
    // Another worker of this Envoy, once the shared copy of the key's state is stale (the
    // lease, 30 s, outlives it).
    f.host.advance(6_000);
    let config = FilterConfig::parse(br#"{"control_plane":{"cluster":"cp"}}"#, |_| {
        Some("t0k".into())
    })
    .unwrap();
    let other = Worker::new(config, "i_test".into(), 2, 8);
    let headers: Vec<(&str, &[u8])> = vec![
        (":method", b"GET"),
        (":path", b"/v1/things/1"),
        ("x-api-key", k.as_bytes()),
    ];
    let head = RequestHead {
        headers: &headers,
        facts: request_facts(&headers, "10.0.0.1".into()),
        now_ms: f.host.now_ms.get(),
    };
    f.host.current.set(20);
    f.host.entered.set(20);
    let seen = Seen::of(other.on_request_headers(&f.host, 20, &head, &mut |_, _| {}));
    assert_eq!(seen, Seen::Wait);
    let path = f.host.last_callout().unwrap().path;
    assert!(!path.contains('?'), "no lease asked: {path}");
    // This worker too, once its own copy is stale.
    assert_eq!(f.request(11, &k), Seen::Wait);
    assert!(!f.lookup_path(f.last_token()).contains('?'));
}

#[test]
fn a_lease_of_the_lookup_is_given_back_when_the_key_goes_idle_and_settled_by_name() {
    let mut f = Filter::plain();
    let k = key(5);
    f.request(10, &k);
    let token = f.last_token();
    f.answer_with_leases(10, token, &daily("key_i", 100));
    f.take_resumed();
    f.worker.finish(10, true);
    assert_eq!(f.request(11, &k).status(), 200);
    f.host.advance(IDLE_MS + 1_000);
    f.tick();
    let settle: Value =
        serde_json::from_slice(lease_callouts(&f).last().unwrap().body.as_deref().unwrap())
            .unwrap();
    let name = format!("i_test.{:016x}c", asked_base(&f, token));
    assert_eq!(settle["settle"][0]["lease"], Value::from(name));
    assert_eq!(settle["settle"][0]["spent"], 2);
    assert_eq!(f.cp.leased("key_i", "calls"), 0);
    assert_eq!(f.cp.charged[&("key_i".to_string(), "calls".to_string())], 2);
    assert!(calls_record(&f, &k).leases.iter().all(|l| l.is_empty()));
}

#[test]
fn a_lease_of_the_lookup_that_expires_is_settled_and_the_next_comes_by_callout() {
    let mut f = Filter::plain();
    let k = key(6);
    f.request(10, &k);
    f.answer_with_leases(10, f.last_token(), &daily("key_e", 1_000));
    f.take_resumed();
    f.worker.finish(10, true);
    // Busy past the lease's deadline: the ended lease goes back with the next callout.
    for step in 0..35 {
        f.host.advance(1_000);
        let ctx = 100 + step;
        let seen = f.request(ctx, &k);
        if seen == Seen::Wait {
            f.answer_with_leases(ctx, f.last_token(), &daily("key_e", 1_000));
            f.take_resumed();
        }
        f.worker.finish(ctx, true);
        f.tick();
    }
    let settled: Vec<String> = lease_callouts(&f)
        .iter()
        .flat_map(|c| {
            let body: Value = serde_json::from_slice(c.body.as_deref().unwrap()).unwrap();
            body["settle"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["lease"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        settled.iter().any(|l| l.ends_with('c')),
        "the lookup's lease is settled: {settled:?}"
    );
    assert!(calls_record(&f, &k)
        .leases
        .iter()
        .all(|l| l.id & LOOKUP_LEASE == 0));
}

#[test]
fn an_exhausted_lease_in_the_lookup_answer_denies_with_the_quota_until_the_retry() {
    let config = r#"{"control_plane":{"cluster":"cp"},"limits":{"quota_status":429}}"#;
    let mut f = Filter::new(config);
    let k = key(7);
    let full = state("key_f", r#""quotas":{"daily":5},"usage":{"daily":5}"#);
    assert_eq!(f.request(10, &k), Seen::Wait);
    f.answer_with_leases(10, f.last_token(), &full);
    let resumed = f.take_resumed();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].1.status(), 429, "{resumed:?}");
    assert_eq!(
        f.worker.outcome(10).unwrap().denial,
        Some(Denial::QuotaExceeded(QuotaWindow::Daily))
    );
    f.worker.finish(10, true);
    for ctx in 11..20 {
        f.host.advance(50);
        assert_eq!(f.request(ctx, &k).status(), 429);
        f.worker.finish(ctx, true);
    }
    assert_eq!(f.callouts(), 1, "no callout before retry_ms");
    f.host.advance(1_000);
    f.request(30, &k);
    assert_eq!(lease_callouts(&f).len(), 1, "asks again after retry_ms");
}
