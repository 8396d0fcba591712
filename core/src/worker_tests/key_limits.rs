//! What a key carries itself, on the request path against `FakeHost`: its own rate limits
//! (on top of its plan's, apart from the other keys of its workspace), its credit budget, the
//! owner it tells the upstream about, and a key sent in the query.

use super::*;
use crate::key_state::CreditPeriod;

/// The start of a second of the fake clock, so a test's requests share one window.
fn at_second_start(f: &Filter) {
    let now = f.host.now_ms.get();
    f.host.now_ms.set(now - now % 1_000 + 1_000);
}

#[test]
fn a_key_over_its_own_limit_is_refused_while_its_neighbour_passes() {
    let mut f = Filter::plain();
    let plan = r#""plan":{"name":"pro","rate_limit_per_second":100}"#;
    let hammered = f.known(
        1,
        &state(
            "key_a",
            &format!(r#"{plan},"rate_limits":{{"per_second":2}}"#),
        ),
    );
    let calm = f.known(2, &state("key_b", plan));
    at_second_start(&f);
    let statuses: Vec<u32> = (0..5)
        .map(|i| f.request(10 + i, &hammered).status())
        .collect();
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    let limited = f.request(20, &hammered);
    let Seen::Deny { status, code, .. } = &limited else {
        panic!("{limited:?}");
    };
    assert_eq!(
        (*status, *code),
        denied(Denial::KeyRateLimited(RateWindow::Second))
    );
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(
        limited.header("ratelimit-policy"),
        Some("\"per-second\";q=100;w=1, \"key-per-second\";q=2;w=1")
    );
    assert_eq!(
        limited.header("ratelimit"),
        Some("\"key-per-second\";r=0;t=1")
    );
    // The default is the IETF pair alone.
    assert_eq!(limited.header("x-ratelimit-limit"), None);
    // The other key of the workspace is never refused: only the plan's 100/s bind it.
    for i in 0..10 {
        assert_eq!(f.request(30 + i, &calm).status(), 200, "request {i}");
    }
    // Its response headers describe the plan, the only limit that applies to it.
    let view = f.worker.outcome(39).unwrap().rate.unwrap();
    assert_eq!((view.status.limit, view.key), (100, Default::default()));
    f.host.advance(1_000);
    assert_eq!(f.request(40, &hammered).status(), 200, "a new second");
}

#[test]
fn the_key_limit_applies_with_its_tightest_window_in_the_headers() {
    let mut f = Filter::plain();
    let k = f.known(
        3,
        &state(
            "key_h",
            r#""plan":{"name":"pro","rate_limit_per_second":50},
               "rate_limits":{"per_second":10,"per_hour":3}"#,
        ),
    );
    at_second_start(&f);
    assert_eq!(f.request(10, &k).status(), 200);
    let view = f.worker.outcome(10).unwrap().rate.unwrap();
    // After one request (the lookup's own counted too): the hour has 1 left, the tightest.
    assert_eq!(
        (view.status.window, view.status.remaining),
        (RateWindow::Hour, 1)
    );
    assert_eq!(f.request(11, &k).status(), 200);
    f.host.advance(2_000);
    let refused = f.request(12, &k);
    let reset_s = (3_600_000 - f.host.now_ms.get() % 3_600_000).div_ceil(1_000);
    assert_eq!(
        (refused.status(), refused.header("ratelimit")),
        (
            429,
            Some(format!("\"key-per-hour\";r=0;t={reset_s}").as_str())
        ),
        "a new second, but the hour is used up"
    );
}

#[test]
fn a_plan_refusal_gives_back_the_key_units_and_the_credits() {
    let mut f = Filter::plain();
    let k = f.known(
        4,
        &state(
            "key_c",
            r#""plan":{"name":"tiny","rate_limit_per_second":1},
               "rate_limits":{"per_second":5},
               "credits":{"limit":3,"period":"total","used":0,"period_start_ms":0}"#,
        ),
    );
    // The lookup's own request spent 1 credit and the plan's one request of its second.
    at_second_start(&f);
    assert_eq!(f.request(10, &k).status(), 200, "credit 2");
    for i in 0..4 {
        let seen = f.request(11 + i, &k);
        assert_eq!(seen.status(), 429, "{seen:?}");
        assert_eq!(
            f.worker.outcome(11 + i).unwrap().denial,
            Some(Denial::RateLimited(RateWindow::Second)),
            "the plan's limit, not the key's own 5/s: refused requests gave their units back"
        );
    }
    f.host.advance(1_000);
    assert_eq!(
        f.request(20, &k).status(),
        200,
        "credit 3: refused ones spent none"
    );
    f.host.advance(1_000);
    let seen = f.request(21, &k);
    assert_eq!(
        f.worker.outcome(21).unwrap().denial,
        Some(Denial::CreditsExhausted(CreditPeriod::Total)),
        "{seen:?}"
    );
}

#[test]
fn each_route_spends_its_credits_and_the_denial_names_the_period() {
    let config = r#"{"control_plane":{"cluster":"cp"},
        "usage":{"routes":[{"method":"POST","path":"/v1/things","credits":5}]}}"#;
    let mut f = Filter::new(config);
    let budget = format!(
        r#""credits":{{"limit":13,"period":"month","used":0,"period_start_ms":{},"resets_at_ms":{}}}"#,
        T0 - 86_400_000,
        T0 + 86_400_000
    );
    // The lookup's own request: a GET, 1 credit.
    let k = f.known(5, &state("key_m", &budget));
    let post = |f: &mut Filter, ctx| {
        f.request_to(ctx, "POST", "/v1/things", &[("x-api-key", &k)], "10.0.0.1")
            .status()
    };
    assert_eq!(post(&mut f, 10), 200, "6");
    assert_eq!(post(&mut f, 11), 200, "11");
    assert_eq!(post(&mut f, 12), 401, "16 would be over 13");
    let refused = f.worker.outcome(12).unwrap();
    assert_eq!(
        refused.denial,
        Some(Denial::CreditsExhausted(CreditPeriod::Month))
    );
    assert!(
        refused.denial.is_some_and(|d| d.is_quota()),
        "recorded as rate_limited"
    );
    assert_eq!(f.request(13, &k).status(), 200, "a GET still fits: 12");
    assert_eq!(f.request(14, &k).status(), 200, "13");
    let last = f.request(15, &k);
    let Seen::Deny { status, code, .. } = &last else {
        panic!("{last:?}");
    };
    assert_eq!((*status, *code), (401, "credits_exhausted"));
    assert_eq!(
        Denial::CreditsExhausted(CreditPeriod::Month).message(),
        "Rate limit exceeded: credits monthly"
    );
}

#[test]
fn the_owner_and_the_listed_meta_reach_the_upstream() {
    let config = r#"{"control_plane":{"cluster":"cp"},"forward_meta":["tier","region"]}"#;
    let mut f = Filter::new(config);
    let k = f.known(
        6,
        &state(
            "key_o",
            r#""external_id":"cus_42","meta":{"tier":"gold","internal":"x"}"#,
        ),
    );
    let Seen::Pass { headers, .. } = f.request(10, &k) else {
        panic!("not passed");
    };
    assert_eq!(
        headers,
        [
            format!("Add({HEADER_KEY_ID:?}, \"key_o\")"),
            format!("Add({HEADER_WORKSPACE_ID:?}, \"ws_1\")"),
            "Add(\"x-tollgate-external-id\", \"cus_42\")".to_string(),
            "Add(\"x-tollgate-meta-tier\", \"gold\")".to_string(),
            "Remove(\"x-api-key\")".to_string(),
        ],
        "meta not listed in forward_meta stays home"
    );
    // A key without an owner adds nothing more than before.
    let plain = f.known(7, &state("key_p", ""));
    assert_eq!(f.request(11, &plain), passed("key_p"));
}

#[test]
fn a_key_in_the_query_passes_hidden_and_a_key_in_two_places_is_invalid() {
    let config = r#"{"control_plane":{"cluster":"cp"},
        "key_sources":[{"header":"x-api-key"},{"query":"api_key"}]}"#;
    let mut f = Filter::new(config);
    let k = key(8);
    let path = format!("/v1/things/1?page=2&api_key={k}");
    assert_eq!(f.request_to(10, "GET", &path, &[], "10.0.0.1"), Seen::Wait);
    f.answer(10, f.last_token(), "200", &state("key_q", ""));
    let resumed = f.take_resumed();
    let [(10, Seen::Pass { headers, .. })] = resumed.as_slice() else {
        panic!("{resumed:?}");
    };
    assert_eq!(
        headers.last().map(String::as_str),
        Some("Set(\":path\", \"/v1/things/1?page=2\")"),
        "the upstream never sees the key"
    );
    let both = f.request_to(11, "GET", &path, &[("x-api-key", &k)], "10.0.0.1");
    assert_eq!(
        (
            both.status(),
            f.counted(Counter::Denied(Denial::InvalidKey))
        ),
        (401, 1)
    );
    let Seen::Pass { headers, .. } = f.request_to(12, "GET", &path, &[], "10.0.0.1") else {
        panic!("a cached key in the query passes at once");
    };
    assert_eq!(headers.len(), 3);
}
