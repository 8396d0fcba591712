//! Budget leases (docs/protocol.md, "Filter → control plane: budget leases") through the API.
//! At the store with the clock set by the test (expiry, rolling windows, period ends, two
//! control planes): `leases_in_time.rs`.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::common::{lookup, now_ms, record, TestServer, ADMIN, FILTER};

const TTL: i64 = 30_000;

/// `POST /v1/filter/leases` of `body` with `token`: the status and the answer.
async fn post(srv: &TestServer, body: &str, token: Option<&str>) -> (StatusCode, Value) {
    srv.send(Method::POST, "/v1/filter/leases", token, Some(body))
        .await
}

/// `POST /v1/filter/leases` of `body`, expected 200.
async fn lease(srv: &TestServer, body: Value) -> Value {
    let (status, answer) = post(srv, &body.to_string(), Some(FILTER)).await;
    assert_eq!(status, 200, "{body} answered {answer}");
    answer
}

/// A grant request of `key`'s `meter`.
fn grant(lease: &str, key: &Value, meter: &str, want: u64) -> Value {
    json!({"lease": lease, "key_id": key["id"], "meter": meter, "want": want})
}

/// The one grant `instance` gets for `g`.
async fn one(srv: &TestServer, instance: &str, g: Value) -> Value {
    let a = lease(srv, json!({"instance": instance, "grant": [g]})).await;
    a["grants"][0].clone()
}

async fn key_json(srv: &TestServer, key: &Value) -> Value {
    srv.get(&format!("/v1/keys/{}", key["id"].as_str().unwrap()), 200)
        .await
}

/// Settles its last lease (spent in full) and asks for the next, until it gets none; the units
/// it got, in order.
pub(crate) async fn spend_until_refused(
    mut ask: impl FnMut(Option<(String, u64)>, String) -> tokio::task::JoinHandle<(u64, Value)>,
    instance: &str,
) -> Vec<u64> {
    let mut got = Vec::new();
    let mut held: Option<(String, u64)> = None;
    for round in 0.. {
        let id = format!("{instance}.r{round}");
        let (units, g) = ask(held.take(), id.clone()).await.unwrap();
        if units == 0 {
            assert_eq!(g["exhausted"], "daily", "{g}");
            assert_eq!(g["retry_ms"], 1000, "{g}");
            break;
        }
        got.push(units);
        held = Some((id, units));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_grants_never_exceed_the_room_and_hand_out_all_of_it() {
    let srv = Arc::new(TestServer::start().await);
    let ws = srv.workspace("enterprise").await;
    let key = srv
        .key(&ws, json!({"alias": "q", "quotas": {"daily": 300}}))
        .await;
    let mut tasks = JoinSet::new();
    for i in 0..64 {
        let (srv, key) = (srv.clone(), key.clone());
        tasks.spawn(async move {
            let instance = format!("i_t{i}");
            let ask = |held: Option<(String, u64)>, id: String| {
                let (srv, key, instance) = (srv.clone(), key.clone(), instance.clone());
                tokio::spawn(async move {
                    let settle: Vec<Value> = held
                        .iter()
                        .map(|(l, spent)| json!({"lease": l, "spent": spent}))
                        .collect();
                    let body = json!({"instance": instance, "settle": settle,
                                      "grant": [grant(&id, &key, "calls", 50)]});
                    let a = lease(&srv, body).await;
                    assert_eq!(a["settled"], settle.len(), "{a}");
                    let g = a["grants"][0].clone();
                    (g["units"].as_u64().unwrap(), g)
                })
            };
            spend_until_refused(ask, &instance).await
        });
    }
    let mut total = 0;
    while let Some(got) = tasks.join_next().await {
        total += got.unwrap().iter().sum::<u64>();
    }
    // Every unit granted was spent and settled: more than the quota would show here.
    assert_eq!(total, 300);
    let l = lookup(&srv, &key, "").await;
    assert_eq!(l["usage"]["daily"], 300, "{l}");
    assert_eq!(
        key_json(&srv, &key).await["leased"],
        json!({"calls": 0, "credits": 0, "envoys": 0})
    );
}

#[tokio::test]
async fn settling_charges_what_was_spent_and_frees_the_rest_at_once() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(&ws, json!({"alias": "q", "quotas": {"total": 8}}))
        .await;
    // Half of an even share: A alone gets 4 of 8; B, beside A, a quarter of the 4 left.
    assert_eq!(
        one(&srv, "i_a", grant("i_a.1", &key, "calls", 100)).await["units"],
        4
    );
    assert_eq!(
        one(&srv, "i_b", grant("i_b.1", &key, "calls", 100)).await["units"],
        1
    );
    assert_eq!(
        lookup(&srv, &key, "").await["usage"]["total"],
        0,
        "leased, not charged"
    );

    // A spent 1 of its 4: 1 is charged, 3 are free again.
    let a = lease(
        &srv,
        json!({"instance": "i_a", "settle": [{"lease": "i_a.1", "spent": 1}]}),
    )
    .await;
    assert_eq!(
        (a["settled"].clone(), a["grants"].clone()),
        (json!(1), json!([]))
    );
    assert_eq!(lookup(&srv, &key, "").await["usage"]["total"], 1);
    // So B, alone now, gets half of 8 - 1 charged - 1 leased.
    assert_eq!(
        one(&srv, "i_b", grant("i_b.2", &key, "calls", 100)).await["units"],
        3
    );
    assert_eq!(
        key_json(&srv, &key).await["leased"],
        json!({"calls": 4, "credits": 0, "envoys": 1})
    );

    // Settling again, or a lease never granted: ignored.
    let a = lease(
        &srv,
        json!({"instance": "i_a", "settle": [{"lease": "i_a.1", "spent": 1},
                                             {"lease": "i_a.nope", "spent": 5}]}),
    )
    .await;
    assert_eq!(a["settled"], 0, "{a}");
    assert_eq!(lookup(&srv, &key, "").await["usage"]["total"], 1);
    // At most the lease's units are charged.
    let a = lease(
        &srv,
        json!({"instance": "i_b", "settle": [{"lease": "i_b.1", "spent": 5}]}),
    )
    .await;
    assert_eq!(a["settled"], 1);
    assert_eq!(lookup(&srv, &key, "").await["usage"]["total"], 2);
    // Settlements go before the grants of the same request.
    let a = lease(
        &srv,
        json!({"instance": "i_b", "settle": [{"lease": "i_b.2", "spent": 3}],
               "grant": [grant("i_b.3", &key, "calls", 100)]}),
    )
    .await;
    assert_eq!(a["settled"], 1);
    assert_eq!(a["grants"][0]["units"], 1, "half of 8 - 5: {a}");
}

#[tokio::test]
async fn asking_again_for_a_live_lease_answers_it_and_reserves_nothing_more() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(
            &ws,
            json!({"alias": "q", "quotas": {"daily": 100},
                   "credits": {"limit": 100, "period": "total"}}),
        )
        .await;
    let body = json!({"instance": "i_a", "grant": [grant("i_a.x1", &key, "calls", 10)]});
    let first = lease(&srv, body.clone()).await;
    let g = &first["grants"][0];
    assert_eq!(
        (
            g["units"].clone(),
            g["ttl_ms"].clone(),
            g["exhausted"].clone(),
            g["retry_ms"].clone()
        ),
        (json!(10), json!(TTL), Value::Null, Value::Null),
        "{first}"
    );
    let again = lease(&srv, body).await;
    let g2 = &again["grants"][0];
    assert_eq!(g2["units"], 10);
    assert_eq!(g2["lease"], "i_a.x1");
    let (ttl, ttl2) = (
        g["ttl_ms"].as_i64().unwrap(),
        g2["ttl_ms"].as_i64().unwrap(),
    );
    let elapsed = again["now_ms"].as_i64().unwrap() - first["now_ms"].as_i64().unwrap();
    assert_eq!(ttl2, ttl - elapsed, "the rest of its ttl");
    assert_eq!(key_json(&srv, &key).await["leased"]["calls"], 10);
    // The same id for the other meter is not another lease.
    let g = one(&srv, "i_a", grant("i_a.x1", &key, "credits", 5)).await;
    assert_eq!(
        (g["units"].clone(), g["exhausted"].clone()),
        (json!(0), Value::Null)
    );
    assert_eq!(key_json(&srv, &key).await["leased"]["credits"], 0);
}

#[tokio::test]
async fn unknown_keys_get_nothing_and_keys_without_a_budget_get_what_they_ask() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let free = srv.key(&ws, json!({"alias": "free"})).await;
    let a = lease(
        &srv,
        json!({"instance": "i_a", "grant": [
            {"lease": "i_a.1", "key_id": "key_gone", "meter": "calls", "want": 5},
            grant("i_a.2", &free, "calls", 40),
            grant("i_a.3", &free, "credits", 7)]}),
    )
    .await;
    assert_eq!(
        a["grants"][0],
        json!({"lease": "i_a.1", "key_id": "key_gone", "meter": "calls", "units": 0,
               "ttl_ms": 0, "exhausted": null, "retry_ms": 1000})
    );
    assert_eq!(
        a["grants"][1],
        json!({"lease": "i_a.2", "key_id": free["id"], "meter": "calls", "units": 40,
               "ttl_ms": TTL, "exhausted": null, "retry_ms": null})
    );
    assert_eq!(a["grants"][2]["units"], 7);
    assert!(a["now_ms"].as_i64().unwrap() > 0);
    // Nothing reserved: nothing to settle.
    assert_eq!(
        key_json(&srv, &free).await["leased"],
        json!({"calls": 0, "credits": 0, "envoys": 0})
    );
    let a = lease(
        &srv,
        json!({"instance": "i_a", "settle": [{"lease": "i_a.2", "spent": 40}]}),
    )
    .await;
    assert_eq!(a["settled"], 0);
}

#[tokio::test]
async fn usage_records_charge_no_budget() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(
            &ws,
            json!({"alias": "q", "quotas": {"daily": 10},
                   "credits": {"limit": 10, "period": "day"}}),
        )
        .await;
    let now = now_ms();
    let records: Vec<Value> = (0..20)
        .map(|i| record(&key, &format!("r-{i}"), now - 1_000 + i))
        .collect();
    srv.ingest(&records).await;
    let l = lookup(&srv, &key, "").await;
    assert_eq!(
        (l["usage"]["daily"].clone(), l["credits"]["used"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(
        one(&srv, "i_a", grant("i_a.1", &key, "calls", 100)).await["units"],
        5
    );
    let k = key_json(&srv, &key).await;
    assert_eq!(
        (k["credits_used"].clone(), k["calls_this_month"].clone()),
        (json!(0), json!(20))
    );
}

#[tokio::test]
async fn leases_shrink_to_min_near_the_end_and_share_with_other_holders() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(&ws, json!({"alias": "q", "quotas": {"total": 100}}))
        .await;
    assert_eq!(
        one(&srv, "i_a", grant("i_a.1", &key, "calls", 1000)).await["units"],
        50
    );
    // Room 50 with one other holder: at most a quarter.
    assert_eq!(
        one(&srv, "i_b", grant("i_b.1", &key, "calls", 1000)).await["units"],
        12
    );
    assert_eq!(
        key_json(&srv, &key).await["leased"],
        json!({"calls": 62, "credits": 0, "envoys": 2})
    );

    let small = srv
        .key(&ws, json!({"alias": "small", "quotas": {"total": 10}}))
        .await;
    let mut got = Vec::new();
    let mut held: Option<(String, u64)> = None;
    for round in 0..10 {
        let id = format!("i_a.s{round}");
        let settle: Vec<Value> = held
            .take()
            .map(|(l, s)| json!({"lease": l, "spent": s}))
            .into_iter()
            .collect();
        let a = lease(
            &srv,
            json!({"instance": "i_a", "settle": settle, "grant": [grant(&id, &small, "calls", 100)]}),
        )
        .await;
        let g = &a["grants"][0];
        let units = g["units"].as_u64().unwrap();
        got.push(units);
        if units == 0 {
            assert_eq!(g["exhausted"], "total", "{a}");
            break;
        }
        held = Some((id, units));
    }
    assert_eq!(got, [5, 2, 1, 1, 1, 0]);
}

#[tokio::test]
async fn credits_grants_honour_min_and_never_outlive_the_period() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    for period in ["day", "month", "total"] {
        let key = srv
            .key(
                &ws,
                json!({"alias": period, "credits": {"limit": 3, "period": period}}),
            )
            .await;
        let g = one(
            &srv,
            "i_a",
            json!({"lease": format!("i_a.{period}1"), "key_id": key["id"], "meter": "credits",
                   "want": 5, "min": 5}),
        )
        .await;
        assert_eq!(
            (
                g["units"].clone(),
                g["exhausted"].clone(),
                g["retry_ms"].clone()
            ),
            (json!(0), json!(period), json!(1000)),
            "{period}: {g}"
        );
        let a = lease(
            &srv,
            json!({"instance": "i_a", "grant": [{"lease": format!("i_a.{period}2"),
                   "key_id": key["id"], "meter": "credits", "want": 5, "min": 3}]}),
        )
        .await;
        let g = &a["grants"][0];
        assert_eq!(g["units"], 3, "{period}: {a}");
        let l = lookup(&srv, &key, "").await;
        if let Some(resets) = l["credits"]["resets_at_ms"].as_i64() {
            let ends = a["now_ms"].as_i64().unwrap() + g["ttl_ms"].as_i64().unwrap();
            assert!(ends <= resets, "{period}: {a} {l}");
        }
        // The key's calls are not limited: it has no quota.
        let calls = grant(&format!("i_a.{period}3"), &key, "calls", 9);
        assert_eq!(one(&srv, "i_a", calls).await["units"], 9);
    }
}

#[tokio::test]
async fn bad_requests_name_the_field_and_the_route_needs_the_filter_token() {
    let srv = TestServer::start().await;
    let g = json!({"lease": "i_1.a", "key_id": "key_x", "meter": "calls", "want": 5});
    let with = |field: &str, value: Value| {
        let mut g = g.clone();
        g[field] = value;
        json!({"instance": "i_1", "grant": [g.clone(), g]})
    };
    let cases = [
        (json!({"instance": ""}), "instance:"),
        (json!({"instance": "i 1"}), "instance:"),
        (json!({"grant": [g.clone()]}), "missing field `instance`"),
        (
            json!({"instance": "i_1", "extra": 1}),
            "unknown field `extra`",
        ),
        (with("lease", json!("i_2.a")), "grant[0].lease:"),
        (with("lease", json!("i_1.a-b")), "grant[0].lease:"),
        (with("key_id", json!("")), "grant[0].key_id:"),
        (with("meter", json!("bytes")), "grant[0].meter:"),
        (with("want", json!(0)), "grant[0].want:"),
        (with("want", json!(1_000_000_001)), "grant[0].want:"),
        (with("want", json!("5")), "grant[0].want:"),
        (with("min", json!(6)), "grant[0].min:"),
        (with("min", json!(0)), "grant[0].min:"),
        (
            with("color", json!("red")),
            "grant[0].color: unknown field `color`",
        ),
        (
            json!({"instance": "i_1", "settle": [{"lease": "i_1.a", "spent": -1}]}),
            "settle[0].spent:",
        ),
        (
            json!({"instance": "i_1", "settle": [{"lease": "x.a", "spent": 1}]}),
            "settle[0].lease:",
        ),
        (
            json!({"instance": "i_1", "settle": (0..1001)
                .map(|i| json!({"lease": format!("i_1.s{i}"), "spent": 1}))
                .collect::<Vec<_>>()}),
            "settle:",
        ),
        (
            json!({"instance": "i_1", "grant": (0..1001)
                .map(|i| json!({"lease": format!("i_1.g{i}"), "key_id": "k",
                                "meter": "calls", "want": 1}))
                .collect::<Vec<_>>()}),
            "grant:",
        ),
    ];
    for (body, prefix) in cases {
        let (status, answer) = post(&srv, &body.to_string(), Some(FILTER)).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with(prefix) || error.contains(prefix),
            "{body}: {error}"
        );
    }
    let (status, _) = post(&srv, "not json", Some(FILTER)).await;
    assert_eq!(status, 400);
    let ok = json!({"instance": "i_1", "grant": [g]}).to_string();
    assert_eq!(post(&srv, &ok, None).await.0, 401);
    assert_eq!(post(&srv, &ok, Some(ADMIN)).await.0, 401);
    assert_eq!(post(&srv, &ok, Some(FILTER)).await.0, 200);
    let big = format!(
        "{{\"instance\": \"i_1\", \"pad\": \"{}\"}}",
        "x".repeat(1024 * 1024)
    );
    assert_eq!(post(&srv, &big, Some(FILTER)).await.0, 413);
}

#[tokio::test]
async fn keys_show_what_is_leased_out() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(
            &ws,
            json!({"alias": "q", "quotas": {"total": 1000},
                   "credits": {"limit": 1000, "period": "total"}}),
        )
        .await;
    assert_eq!(
        key["leased"],
        json!({"calls": 0, "credits": 0, "envoys": 0})
    );
    lease(
        &srv,
        json!({"instance": "i_a", "grant": [grant("i_a.1", &key, "calls", 10),
                                            grant("i_a.2", &key, "credits", 40)]}),
    )
    .await;
    lease(
        &srv,
        json!({"instance": "i_b", "grant": [grant("i_b.1", &key, "calls", 2)]}),
    )
    .await;
    let want = json!({"calls": 12, "credits": 40, "envoys": 2});
    assert_eq!(key_json(&srv, &key).await["leased"], want);
    let list = srv.get(&format!("/v1/workspaces/{ws}/keys"), 200).await;
    assert_eq!(list["data"][0]["leased"], want);
    // Leased units are not charged (yet): the budget shows them as neither used nor gone.
    let k = key_json(&srv, &key).await;
    assert_eq!(
        (k["credits_used"].clone(), k["credits_remaining"].clone()),
        (json!(0), json!(1000))
    );
}
