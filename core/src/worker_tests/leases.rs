//! Budgets spent against the control plane's leases, on the request path against `FakeHost`
//! and `FakeControlPlane` (docs/protocol.md, "Budget leases"): the first request of a key waits
//! for a lease, the next spend it without a callout, the renewal goes out at the low-water mark
//! from the root, an idle key gives its units back, a control plane that is down never lets a
//! key above its budget.

use super::*;
use crate::budget::Meter;
use crate::budgets::IDLE_MS;
use crate::lease_record::{self, RecordKey, INITIAL_WANT};
use serde_json::Value;

fn body(callout: &crate::host::FakeCallout) -> Value {
    serde_json::from_slice(callout.body.as_deref().unwrap()).unwrap()
}

#[test]
fn the_first_request_waits_for_a_lease_and_the_next_spend_it_without_a_callout() {
    let mut f = Filter::plain();
    f.hold_leases = true;
    let k = key(1);
    assert_eq!(f.request(10, &k), Seen::Wait);
    f.answer(10, f.last_token(), "200", &daily("key_l", 100));
    let asked = lease_callouts(&f);
    assert_eq!(asked.len(), 1);
    assert_eq!((asked[0].ctx, asked[0].cluster.as_str()), (10, "cp"));
    let sent = body(&asked[0]);
    assert_eq!(sent["instance"], "i_test");
    assert_eq!(sent["settle"], serde_json::json!([]));
    let grant = &sent["grant"][0];
    assert_eq!(
        (
            &grant["key_id"],
            &grant["meter"],
            &grant["want"],
            &grant["min"]
        ),
        (
            &Value::from("key_l"),
            &Value::from("calls"),
            &Value::from(INITIAL_WANT),
            &Value::from(1)
        )
    );
    assert!(grant["lease"].as_str().unwrap().starts_with("i_test."));
    assert!(f.take_resumed().is_empty(), "still waiting for the lease");
    f.serve_leases();
    assert_eq!(f.take_resumed(), [(10, passed("key_l"))]);
    f.worker.finish(10, true);
    // Nine more units in the lease: no callout for them.
    let before = f.callouts();
    for ctx in 11..20 {
        assert_eq!(f.request(ctx, &k), passed("key_l"));
    }
    assert_eq!(f.callouts(), before);
}

#[test]
fn never_above_the_budget_and_the_callouts_stay_few() {
    let mut f = Filter::plain();
    let k = f.known(2, &daily("key_n", 25));
    let mut admitted = 1;
    for ctx in 100..200 {
        if f.request(ctx, &k).status() == 200 {
            admitted += 1;
        }
        f.worker.finish(ctx, true);
        if ctx % 10 == 0 {
            f.host.advance(300);
            f.tick();
        }
    }
    assert_eq!(admitted, 25);
    let denied = f.request(300, &k);
    assert_eq!(
        f.worker.outcome(300).unwrap().denial,
        Some(Denial::QuotaExceeded(QuotaWindow::Daily)),
        "{denied:?}"
    );
    // A few leases, and after the budget was full the record stays quiet: no callout per
    // denied request.
    assert!(
        lease_callouts(&f).len() <= 8,
        "{}",
        lease_callouts(&f).len()
    );
}

#[test]
fn the_renewal_goes_out_at_the_low_water_mark_from_the_root_and_nobody_waits() {
    let mut f = Filter::plain();
    let k = f.known(3, &daily("key_r", 1_000));
    // The first lease: 10 units, one spent by the request that asked.
    for ctx in 10..17 {
        assert_eq!(f.request(ctx, &k).status(), 200);
    }
    let queued = lease_callouts(&f).len();
    // Two left = a quarter of 10, rounded up... after the next take, which claims.
    assert_eq!(f.request(17, &k).status(), 200);
    assert_eq!(
        lease_callouts(&f).len(),
        queued,
        "sent by the tick, not the request"
    );
    f.tick();
    let renewal = lease_callouts(&f);
    assert_eq!(renewal.len(), queued + 1);
    assert_eq!(renewal.last().unwrap().ctx, ROOT);
    for ctx in 18..40 {
        assert_eq!(f.request(ctx, &k).status(), 200, "request {ctx}");
    }
    assert!(f.take_resumed().is_empty());
}

#[test]
fn control_plane_down_spends_what_is_held_then_denies_with_the_quota() {
    let mut f = Filter::plain();
    let k = f.known(4, &daily("key_d", 1_000));
    f.cp_down = true;
    let statuses: Vec<u32> = (10..30).map(|ctx| f.request(ctx, &k).status()).collect();
    // The lease held 10: nine more pass, then the quota's denial (never above what the control
    // plane reserved).
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        9,
        "{statuses:?}"
    );
    let outcome = f.worker.outcome(29).unwrap();
    assert_eq!(
        outcome.denial,
        Some(Denial::QuotaExceeded(QuotaWindow::Daily))
    );
    assert!(f.counted(Counter::LeaseFailed) >= 1);
    let failed_calls = lease_callouts(&f).len();
    for ctx in 30..40 {
        f.request(ctx, &k);
    }
    assert_eq!(
        lease_callouts(&f).len(),
        failed_calls,
        "backs off: no callout per request"
    );
    // Back up: the next request after the backoff gets a lease.
    f.cp_down = false;
    f.host.advance(1_500);
    assert_eq!(f.request(50, &k).status(), 200);
}

#[test]
fn an_idle_key_gives_its_units_back_on_the_tick() {
    let mut f = Filter::plain();
    let k = f.known(5, &daily("key_i", 100));
    assert_eq!(f.request(10, &k).status(), 200);
    assert_eq!(f.cp.leased("key_i", "calls"), INITIAL_WANT);
    f.host.advance(IDLE_MS + 1_000);
    f.tick();
    let settle = lease_callouts(&f).last().map(body).unwrap();
    assert_eq!(settle["grant"], serde_json::json!([]));
    assert_eq!(settle["settle"][0]["spent"], 2);
    assert_eq!(f.cp.leased("key_i", "calls"), 0);
    assert_eq!(f.cp.charged[&("key_i".to_string(), "calls".to_string())], 2);
    // The record is empty: the next request asks for a new lease.
    let at = RecordKey::new(Meter::Calls, parse_key(k.as_bytes()).unwrap(), 8192);
    let record = lease_record::read(&f.host, &at).unwrap();
    assert!(record.leases.iter().all(|l| l.is_empty()));
    // (The key's state is stale by now: looked up again.)
    assert_eq!(f.request(11, &k), Seen::Wait);
    f.answer(11, f.last_token(), "200", &daily("key_i", 100));
    assert_eq!(f.take_resumed(), [(11, passed("key_i"))]);
}

#[test]
fn a_lease_asked_by_a_request_that_left_is_asked_again_unchanged_by_the_root() {
    let mut f = Filter::plain();
    let k = f.known(6, &daily("key_o", 100));
    f.cp_down = false;
    f.hold_leases = true;
    // Use the first lease up.
    for ctx in 10..19 {
        assert_eq!(f.request(ctx, &k).status(), 200);
    }
    f.host.advance(10);
    assert_eq!(f.request(20, &k), Seen::Wait, "no units left: waits");
    let first = lease_callouts(&f).last().cloned().unwrap();
    assert_eq!(first.ctx, 20);
    // The client leaves: Envoy drops the answer (the SDK has nobody to give it to).
    f.host.ended.borrow_mut().insert(20);
    f.served.insert(first.token);
    f.cp.answer(first.body.as_deref().unwrap());
    let leased = f.cp.leased("key_o", "calls");
    f.worker.finish(20, true);
    f.tick();
    let again = lease_callouts(&f).last().cloned().unwrap();
    assert_eq!(
        (again.ctx, &again.body),
        (ROOT, &first.body),
        "the same lease id"
    );
    f.serve_leases();
    // The control plane answered the same lease again: one reservation, and it is in the
    // record for the next request.
    assert_eq!(f.cp.leased("key_o", "calls"), leased);
    f.hold_leases = false;
    assert_eq!(f.request(21, &k).status(), 200);
    assert_eq!(lease_callouts(&f).len(), 3);
}

#[test]
fn a_costly_request_gives_a_too_small_lease_back_and_asks_for_its_cost() {
    let config = r#"{"control_plane":{"cluster":"cp"},
        "usage":{"routes":[{"method":"POST","path":"/v1/things","credits":5}]}}"#;
    let mut f = Filter::new(config);
    let budget = r#""credits":{"limit":12,"period":"total","used":0,"period_start_ms":0}"#;
    let k = f.known(7, &state("key_c", budget));
    let post = |f: &mut Filter, ctx| {
        f.request_to(ctx, "POST", "/v1/things", &[("x-api-key", &k)], "10.0.0.1")
            .status()
    };
    // The lookup's GET took a lease of 10 and spent 1; 5 more: 6.
    assert_eq!(post(&mut f, 10), 200);
    // 4 left in the lease, the request costs 5: the lease goes back, min 5 is asked.
    assert_eq!(post(&mut f, 11), 200);
    let asked = body(lease_callouts(&f).last().unwrap());
    assert_eq!(asked["grant"][0]["min"], 5);
    assert_eq!(asked["settle"][0]["spent"], 6);
    assert_eq!(
        f.cp.charged[&("key_c".to_string(), "credits".to_string())],
        6
    );
    // 11 spent of 12: a POST no longer fits, a GET does.
    assert_eq!(post(&mut f, 12), 401);
    assert_eq!(f.request(13, &k).status(), 200);
}

/// Two workers of one Envoy (one shared data, one control plane), requests of 1 and 5 credits
/// alternating between them until the budget is spent: never above, and once the key is idle
/// every lease is settled and the charges are what was admitted.
#[test]
fn two_workers_spend_a_credit_budget_and_settle_everything_when_idle() {
    let config = r#"{"control_plane":{"cluster":"cp"},
        "usage":{"routes":[{"method":"POST","path":"/v1/things","credits":5}]}}"#;
    let config = FilterConfig::parse(config.as_bytes(), |_| Some("t0k".into())).unwrap();
    let host = FakeHost::at(T0).with_queue();
    let roots = [1u32, 2];
    let workers = [
        Worker::new(config.clone(), "i_test".into(), roots[0], 11),
        Worker::new(config, "i_test".into(), roots[1], 22),
    ];
    let mut cp = FakeControlPlane::new();
    let body = state(
        "key_w",
        r#""credits":{"limit":300,"period":"total","used":0,"period_start_ms":0}"#,
    );
    cp.learn(&body);
    let k = key(77);
    let mut served: HashSet<u32> = HashSet::new();
    let mut decided: Vec<(u32, Seen)> = Vec::new();
    // Contexts 1000.. on worker 0 (even) and worker 1 (odd); Envoy answers a callout to the
    // context that sent it, on that context's worker.
    let worker_of = |ctx: u32| -> usize {
        if roots.contains(&ctx) {
            (ctx - 1) as usize
        } else {
            (ctx % 2) as usize
        }
    };
    let serve = |cp: &mut FakeControlPlane,
                 served: &mut HashSet<u32>,
                 decided: &mut Vec<(u32, Seen)>,
                 lookup: Option<&str>| loop {
        let pending: Vec<_> = host
            .callouts
            .borrow()
            .iter()
            .filter(|c| !served.contains(&c.token))
            .cloned()
            .collect();
        if pending.is_empty() {
            return;
        }
        for c in pending {
            served.insert(c.token);
            let answer = if c.path == LEASES_PATH {
                cp.answer(c.body.as_deref().unwrap())
            } else {
                lookup.unwrap_or(&body).to_string()
            };
            host.current.set(c.ctx);
            workers[worker_of(c.ctx)].on_callout_answer(
                &host,
                c.ctx,
                c.token,
                Some("200"),
                Some(answer.as_bytes()),
                &mut |id, action| decided.push((id, Seen::of(action))),
            );
        }
    };
    let mut spent = 0;
    for ctx in 1_000u32..1_200 {
        let post = ctx % 4 >= 2;
        let (method, cost) = if post { ("POST", 5) } else { ("GET", 1) };
        let w = &workers[worker_of(ctx)];
        host.current.set(ctx);
        let headers: Vec<(&str, &[u8])> = vec![
            (":method", method.as_bytes()),
            (":path", b"/v1/things"),
            ("x-api-key", k.as_bytes()),
        ];
        let head = RequestHead {
            headers: &headers,
            facts: request_facts(&headers, "10.0.0.1".into()),
            now_ms: host.now_ms.get(),
        };
        let seen = Seen::of(w.on_request_headers(&host, ctx, &head, &mut |id, a| {
            decided.push((id, Seen::of(a)))
        }));
        if seen != Seen::Wait {
            decided.push((ctx, seen));
        }
        // The control plane answers a few requests later: callouts overlap.
        if ctx % 3 == 0 {
            serve(&mut cp, &mut served, &mut decided, None);
        }
        for (id, seen) in decided.drain(..) {
            if seen.status() == 200 {
                spent += if id % 4 >= 2 { 5 } else { 1 };
            }
            workers[worker_of(id)].finish(id, true);
        }
        host.advance(7);
        if ctx % 25 == 0 {
            for (w, root) in workers.iter().zip(roots) {
                host.current.set(root);
                w.tick_leases(&host, &mut |id, a| decided.push((id, Seen::of(a))));
            }
            serve(&mut cp, &mut served, &mut decided, None);
        }
        let _ = cost;
    }
    assert!(spent <= 300, "{spent} credits admitted");
    assert!(spent >= 290, "{spent} credits admitted");
    // Idle: each worker's tick gives back what its Envoy holds.
    for _ in 0..10 {
        host.advance(1_000);
        for (w, root) in workers.iter().zip(roots) {
            host.current.set(root);
            w.tick_leases(&host, &mut |id, a| decided.push((id, Seen::of(a))));
        }
        serve(&mut cp, &mut served, &mut decided, None);
    }
    assert_eq!(cp.leased("key_w", "credits"), 0, "everything settled");
    assert_eq!(
        cp.charged[&("key_w".to_string(), "credits".to_string())],
        spent
    );
}

/// The answer of one request's lease callout decides every request that waited for it; one
/// that finds no unit left asks again, during that answer. Envoy gives the new callout's answer
/// to the context it was called for (the first request), so when that request has ended the
/// callout is sent again by the root, and the waiting request is decided.
#[test]
fn a_lease_asked_while_another_requests_answer_is_handled_survives_that_requests_end() {
    let mut f = Filter::plain();
    f.cp.max_units = Some(1);
    let k = f.known(9, &daily("key_s", 100));
    // The lookup's own request spent the first lease (1 unit).
    f.hold_leases = true;
    assert_eq!(f.request(10, &k), Seen::Wait);
    assert_eq!(f.request(11, &k), Seen::Wait);
    let asked = lease_callouts(&f).last().cloned().unwrap();
    assert_eq!(asked.answer_to, 10);
    f.served.insert(asked.token);
    let answer = f.cp.answer(asked.body.as_deref().unwrap());
    f.deliver(10, asked.token, "200", &answer);
    // 10 got the unit; 11 asked again while 10's answer was being handled.
    assert_eq!(f.take_resumed(), [(10, passed("key_s"))]);
    let again = lease_callouts(&f).last().cloned().unwrap();
    assert_eq!((again.ctx, again.answer_to), (11, 10));
    // 10 is done before that answer (2 units): Envoy drops it.
    f.cp.max_units = Some(2);
    f.worker.finish(10, true);
    f.host.ended.borrow_mut().insert(10);
    f.serve_leases();
    assert!(f.take_resumed().is_empty());
    // Another request finds no unit either: it sends the lost callout again, unchanged (the
    // control plane may have granted that lease id already).
    assert_eq!(f.request(12, &k), Seen::Wait);
    let resent = lease_callouts(&f).last().cloned().unwrap();
    assert_eq!((resent.answer_to, &resent.body), (12, &again.body));
    // Its answer (2 units) decides both, each in its own context, though it comes to 12 and
    // 11 waited first.
    let before = lease_callouts(&f).len();
    f.serve_leases();
    assert_eq!(
        f.take_resumed(),
        [(11, passed("key_s")), (12, passed("key_s"))]
    );
    assert_eq!(lease_callouts(&f).len(), before);
}
