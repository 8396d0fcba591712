//! The request path of `worker.rs`, branch by branch, over the fixture of `fixture.rs` (a
//! worker on `FakeHost`, callouts answered as Envoy answers them, the root's ticks). Over the
//! same fixture: the limits a key carries itself and what it tells the upstream in
//! `key_limits.rs`; budgets spent from leases of `FakeControlPlane` (`control_plane.rs`) in
//! `leases.rs`; the end of a request (forgotten, its record batched for the usage service) in
//! `records.rs`; random interleavings of all of it, quotas and credit budgets, against a
//! reference model in `model.rs` (the Envoy it drives in `model/envoy.rs`).

use crate::action::{HEADER_KEY_ID, HEADER_WORKSPACE_ID};
use crate::api_key::parse_key;
use crate::budget::QuotaWindow;
use crate::config::FilterConfig;
use crate::denial::Denial;
use crate::host::FakeHost;
use crate::metrics::Counter;
use crate::rate_limit::RateWindow;
use crate::usage_record::{UsageRecord, UsageStatus};
use crate::worker::{request_facts, RequestHead, Worker};
use crate::worker_records::RECORD_BATCH;

mod control_plane;
mod fixture;
mod key_limits;
mod leases;
mod lookup_leases;
mod model;
mod records;

use crate::lease_wire::LEASES_PATH;
use control_plane::FakeControlPlane;
use fixture::*;
use std::collections::HashSet;

#[test]
fn miss_asks_the_control_plane_once_then_a_fresh_hit_passes_without_a_callout() {
    let mut f = Filter::plain();
    let k = key(1);
    assert_eq!(f.request(10, &k), Seen::Wait);
    let callout = f.host.last_callout().unwrap();
    let hash = parse_key(k.as_bytes()).unwrap().to_hex();
    assert_eq!(callout.cluster, "cp");
    assert_eq!(callout.ctx, 10);
    // A never-seen key: the lookup asks for its first leases too.
    let asked = format!("/v1/filter/keys/{hash}?lease=i_test.");
    assert!(callout.path.starts_with(&asked), "{callout:?}");
    assert!(callout.path.ends_with("&want=10"), "{callout:?}");
    f.answer(10, callout.token, "200", &state("key_1", ""));
    assert_eq!(f.take_resumed(), [(10, passed("key_1"))]);
    assert_eq!(f.worker.outcome(10).unwrap().key_id(), "key_1");

    // Fresh: decided at once, no host lookup beyond the VM-local cache.
    assert_eq!(f.request(11, &k), passed("key_1"));
    assert_eq!(f.callouts(), 1);
    assert_eq!(f.counted(Counter::CacheHit), 1);
    assert_eq!(f.counted(Counter::CacheMiss), 1);
    assert_eq!(f.counted(Counter::Allowed), 2);
}

#[test]
fn concurrent_misses_share_one_callout_and_each_is_decided_in_its_context() {
    let mut f = Filter::plain();
    let k = key(2);
    for ctx in [10, 11, 12] {
        assert_eq!(f.request(ctx, &k), Seen::Wait);
    }
    assert_eq!(f.callouts(), 1, "coalesced");
    // The answer arrives at the dispatching request's context.
    f.answer(10, f.last_token(), "200", &state("key_2", ""));
    let resumed = f.take_resumed();
    assert_eq!(
        resumed,
        [10, 11, 12].map(|ctx| (ctx, passed("key_2"))).to_vec()
    );
}

#[test]
fn a_waiter_that_ended_is_skipped_and_an_answer_nobody_waits_for_is_dropped() {
    let mut f = Filter::plain();
    let k = key(3);
    f.request(10, &k);
    f.request(11, &k);
    f.host.ended.borrow_mut().insert(11);
    f.answer(10, f.last_token(), "200", &state("key_3", ""));
    assert_eq!(f.take_resumed(), [(10, passed("key_3"))]);
    // A second answer for the same token finds nobody.
    f.answer(10, f.last_token(), "200", &state("key_3", ""));
    assert!(f.take_resumed().is_empty());
}

#[test]
fn stale_state_is_refreshed_and_kept_while_the_control_plane_fails() {
    let mut f = Filter::new(r#"{"control_plane":{"cluster":"cp"},"cache":{"ttl":"2s"}}"#);
    let k = f.known(4, &state("key_4", ""));
    f.host.advance(2_500);
    // Stale: the request waits for a refresh.
    assert_eq!(f.request(10, &k), Seen::Wait);
    assert_eq!(f.callouts(), 2);
    f.answer(10, f.last_token(), "503", "down");
    assert_eq!(
        f.take_resumed(),
        [(10, passed("key_4"))],
        "last known state"
    );
    assert_eq!(f.counted(Counter::LookupFailed), 1);
    // Within the back-off the stale state is used at once, without another callout.
    f.host.advance(500);
    assert_eq!(f.request(11, &k), passed("key_4"));
    assert_eq!(f.callouts(), 2);
    // After it, the filter asks again.
    f.host.advance(600);
    assert_eq!(f.request(12, &k), Seen::Wait);
    assert_eq!(f.callouts(), 3);
}

#[test]
fn control_plane_down_and_key_never_seen_follows_the_failure_mode() {
    let mut closed = Filter::plain();
    closed.request(10, &key(5));
    closed.answer(10, closed.last_token(), "500", "");
    let resumed = closed.take_resumed();
    assert_eq!(resumed.len(), 1);
    let (ctx, seen) = &resumed[0];
    assert_eq!(*ctx, 10);
    assert_eq!(
        (seen.status(), seen.header("retry-after")),
        (503, Some("1"))
    );
    assert!(
        closed.worker.outcome(10).is_none(),
        "no key state, no outcome"
    );

    let mut open = Filter::new(r#"{"control_plane":{"cluster":"cp"},"failure_mode":"open"}"#);
    open.request(10, &key(5));
    open.answer(10, open.last_token(), "500", "");
    let unverified = Seen::Pass {
        identity: None,
        headers: vec![
            format!("Remove({HEADER_KEY_ID:?})"),
            format!("Remove({HEADER_WORKSPACE_ID:?})"),
            "Remove(\"x-api-key\")".to_string(),
        ],
    };
    assert_eq!(open.take_resumed(), [(10, unverified)]);
    assert_eq!(open.counted(Counter::AllowedUnverified), 1);
}

#[test]
fn a_callout_that_cannot_be_sent_settles_the_request_at_once() {
    let mut f = Filter::plain();
    f.host.dispatch_fails.set(true);
    assert_eq!(f.request(10, &key(6)), Seen::Wait);
    let resumed = f.take_resumed();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].1.status(), 503);
    assert_eq!(f.counted(Counter::LookupFailed), 1);
    // Nothing is left in flight: the next request tries again.
    f.host.dispatch_fails.set(false);
    assert_eq!(f.request(11, &key(6)), Seen::Wait);
    assert_eq!(f.callouts(), 1);
}

#[test]
fn too_many_lookups_in_flight_treats_a_new_key_as_unavailable() {
    let mut f = Filter::plain();
    for n in 0..4_096 {
        assert_eq!(f.request(1_000 + n, &key(10_000 + n)), Seen::Wait);
    }
    let seen = f.request(20_000, &key(99_999));
    assert_eq!(seen.status(), 503, "{seen:?}");
    assert_eq!(f.callouts(), 4_096);
}

#[test]
fn unknown_key_is_invalid_and_remembered() {
    let mut f = Filter::plain();
    let k = key(7);
    f.request(10, &k);
    f.answer(
        10,
        f.last_token(),
        "404",
        r#"{"error":"API key not found"}"#,
    );
    let resumed = f.take_resumed();
    assert_eq!(resumed[0].1.status(), 401);
    // Negative cache: no second callout.
    let seen = f.request(11, &k);
    assert!(
        matches!(
            seen,
            Seen::Deny {
                code: "invalid_key",
                ..
            }
        ),
        "{seen:?}"
    );
    assert_eq!(f.callouts(), 1);
}

#[test]
fn every_denial_before_the_cache() {
    let mut f = Filter::plain();
    let missing = f.request_with(10, &[], "10.0.0.2");
    assert_eq!(
        (missing.status(), missing.header("www-authenticate")),
        (401, Some("ApiKey realm=\"tollgate\""))
    );
    let k = key(8);
    let repeated = f.request_with(11, &[("x-api-key", &k), ("x-api-key", &k)], "10.0.0.2");
    let malformed = f.request_with(12, &[("x-api-key", "tg_short")], "10.0.0.2");
    for seen in [&repeated, &malformed] {
        assert!(
            matches!(
                seen,
                Seen::Deny {
                    status: 401,
                    code: "invalid_key",
                    ..
                }
            ),
            "{seen:?}"
        );
    }
    assert_eq!(f.callouts(), 0, "none of them asks the control plane");
    assert_eq!(f.counted(Counter::Denied(Denial::InvalidKey)), 2);
}

#[test]
fn every_denial_of_a_known_key() {
    let mut f = Filter::plain();
    let cases = [
        (r#""active":false"#, Denial::InactiveKey),
        (r#""expires_at_ms":1"#, Denial::ExpiredKey),
        (
            r#""allowed":[{"method":"POST","path":"/v1/things/*"}]"#,
            Denial::EndpointNotAllowed,
        ),
        (
            r#""quotas":{"daily":5},"usage":{"daily":5}"#,
            Denial::QuotaExceeded(QuotaWindow::Daily),
        ),
    ];
    for (n, (extra, denial)) in cases.into_iter().enumerate() {
        // `state` says active; the inactive case overrides it.
        let body =
            state("key_x", extra).replace(r#""active":true,"active":false"#, r#""active":false"#);
        let k = f.known(20 + n as u32, &body);
        let seen = f.request(30 + n as u32, &k);
        let Seen::Deny { status, code, .. } = &seen else {
            panic!("{extra}: {seen:?}");
        };
        assert_eq!((*status, *code), denied(denial), "{extra}");
        let outcome = f.worker.outcome(30 + n as u32).unwrap();
        assert_eq!(outcome.denial, Some(denial));
        assert!(!outcome.admitted());
    }
}

#[test]
fn quota_is_exact_and_answers_the_configured_status() {
    let mut f = Filter::new(r#"{"control_plane":{"cluster":"cp"},"limits":{"quota_status":429}}"#);
    let k = f.known(
        40,
        &state("key_q", r#""quotas":{"total":3},"usage":{"total":1}"#),
    );
    // 3 - 1 stored - 1 (the request that asked the control plane) = 1 left.
    let seen: Vec<u32> = (0..4).map(|i| f.request(50 + i, &k).status()).collect();
    assert_eq!(seen, [200, 429, 429, 429]);
    let outcome = f.worker.outcome(51).unwrap();
    assert_eq!(
        outcome.denial,
        Some(Denial::QuotaExceeded(QuotaWindow::Total))
    );
}

#[test]
fn plan_limit_denies_with_retry_after_and_gives_the_quota_unit_back() {
    let mut f = Filter::plain();
    let body = state(
        "key_p",
        r#""quotas":{"daily":3},"plan":{"name":"tiny","rate_limit_per_second":1}"#,
    );
    let k = f.known(60, &body);
    f.host.now_ms.set(T0 - T0 % 1_000 + 1_000);
    assert_eq!(f.request(70, &k).status(), 200);
    let limited = f.request(71, &k);
    let Seen::Deny { status, code, .. } = &limited else {
        panic!("{limited:?}");
    };
    assert_eq!(
        (*status, *code),
        denied(Denial::RateLimited(RateWindow::Second))
    );
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.header("ratelimit"), Some("\"per-second\";r=0;t=1"));
    // The default is the IETF pair alone.
    assert_eq!(limited.header("x-ratelimit-limit"), None);
    // The refused request did not spend the daily quota (3: the first request, 70 and 72),
    // so the next second admits one more, and only then is the quota used up.
    f.host.advance(1_000);
    assert_eq!(f.request(72, &k).status(), 200);
    f.host.advance(1_000);
    let seen = f.request(73, &k);
    assert!(
        matches!(
            seen,
            Seen::Deny {
                code: "quota_exceeded",
                ..
            }
        ),
        "{seen:?}"
    );
    // The admitted request's outcome carries the plan status for the response headers.
    let view = f.worker.outcome(72).unwrap().rate.unwrap();
    assert_eq!(view.status.remaining, 0);
}

#[test]
fn failed_authentications_block_the_ip_and_only_that_ip() {
    let config = r#"{"control_plane":{"cluster":"cp"},
        "ip_blocking":{"max_failures":3,"window":"60s","block_for":"5m"}}"#;
    let mut f = Filter::new(config);
    let k = f.known(80, &state("key_ip", ""));
    for ctx in 0..3 {
        let seen = f.request_with(100 + ctx, &[], "10.9.9.9");
        assert_eq!(seen.status(), 401);
    }
    assert_eq!(f.counted(Counter::IpBlocked), 1);
    assert!(f.worker.blocks_any_ip());
    let blocked = f.request_with(110, &[("x-api-key", &k)], "10.9.9.9");
    assert!(
        matches!(
            blocked,
            Seen::Deny {
                status: 403,
                code: "ip_blocked",
                ..
            }
        ),
        "{blocked:?}"
    );
    assert_eq!(
        f.request_with(111, &[("x-api-key", &k)], "10.1.1.1"),
        passed("key_ip")
    );
    // The block ends after `block_for`: the request goes on to its key (stale by now).
    f.host.advance(300_001);
    f.worker.refresh_blocked(&f.host, f.host.now_ms.get());
    assert!(!f.worker.blocks_any_ip());
    assert_eq!(
        f.request_with(112, &[("x-api-key", &k)], "10.9.9.9"),
        Seen::Wait
    );
}

#[test]
fn the_peer_address_is_read_only_for_a_failure_and_in_the_waiters_context() {
    let mut f = Filter::new(
        r#"{"control_plane":{"cluster":"cp"},"ip_blocking":{"max_failures":1,"window":"60s"}}"#,
    );
    *f.host.peer_ip.borrow_mut() = "10.7.7.7".into();
    let k = f.known(81, &state("key_d", ""));
    assert_eq!(
        f.request_with(10, &[("x-api-key", &k)], ""),
        passed("key_d")
    );
    assert_eq!(f.host.peer_reads.get(), 0, "a pass needs no address");
    // An unknown key waits, and its failure is counted once it is decided, as its own context.
    f.request_with(11, &[("x-api-key", &key(82))], "");
    f.answer(ROOT, f.last_token(), "404", "");
    assert_eq!(f.take_resumed()[0].1.status(), 401);
    assert_eq!(f.host.peer_reads.get(), 1);
    assert_eq!(f.counted(Counter::IpBlocked), 1, "10.7.7.7 is blocked");
}

#[test]
fn a_lookup_whose_requester_left_is_sent_again_by_the_root() {
    let mut f = Filter::plain();
    let k = key(90);
    f.request(10, &k);
    f.request(11, &k);
    // The dispatcher's client went away: Envoy drops the answer meant for it.
    f.worker.finish(10, true);
    f.tick();
    assert_eq!(f.counted(Counter::LookupRescued), 1);
    let again = f.host.last_callout().unwrap();
    assert_eq!((f.callouts(), again.ctx), (2, ROOT));
    f.answer(ROOT, again.token, "200", &state("key_r", ""));
    assert_eq!(f.take_resumed(), [(11, passed("key_r"))]);
    // With nobody left waiting, nothing is sent again.
    f.request(12, &key(91));
    f.worker.finish(12, true);
    f.tick();
    assert_eq!(f.callouts(), 3);
}
