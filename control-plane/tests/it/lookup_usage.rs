//! The lookup's `usage` windows (docs/protocol.md): the charges of settled and expired `calls`
//! leases in rolling windows, read at the store with the clock set by the test.

use reqwest::Method;
use serde_json::json;
use tollgate_control_plane::domain::{GrantRequest, LeaseRequest, Meter, Settlement, Usage};

use crate::common::{lookup, now_ms, secret_hash, StoreFixture, TestServer, FILTER};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Charges `units` of `key`'s calls at `at`: a lease granted then and settled in full at once.
async fn charge(f: &StoreFixture, key: &str, n: &mut u32, units: u64, at: i64) {
    *n += 1;
    let lease = format!("i_w.c{n}");
    let grant = LeaseRequest {
        instance: "i_w".to_owned(),
        settle: Vec::new(),
        grant: vec![GrantRequest {
            lease: lease.clone(),
            key_id: key.to_owned(),
            meter: Meter::Calls,
            want: units,
            min: units,
        }],
    };
    let answer = f.store.lease(&grant, at, 30_000).await.unwrap();
    assert_eq!(answer.grants[0].units, units, "{answer:?}");
    let settle = LeaseRequest {
        instance: "i_w".to_owned(),
        settle: vec![Settlement {
            lease,
            spent: units,
        }],
        grant: Vec::new(),
    };
    assert_eq!(f.store.lease(&settle, at, 30_000).await.unwrap().settled, 1);
}

#[tokio::test]
async fn usage_windows_roll_and_count_charges_only() {
    let f = StoreFixture::open().await;
    let (key, hash) = f
        .key(
            json!({"alias": "q", "quotas": {"daily": 1000, "weekly": 10000, "monthly": 100000,
                                             "total": 1000000}}),
        )
        .await;
    let now = now_ms();
    let usage = |t: i64| {
        let (store, hash) = (f.store.clone(), hash.clone());
        async move { store.lookup_key(&hash, t).await.unwrap().unwrap().usage }
    };
    assert_eq!(usage(now).await, Usage::default());
    let mut n = 0;
    // Charged in the order of time, as the leases are.
    for (units, at) in [
        (17, now - 31 * DAY),
        (13, now - 29 * DAY - 20 * HOUR),
        (11, now - 8 * DAY),
        (7, now - 6 * DAY),
        (5, now - DAY - 5 * MINUTE),
        (2, now - DAY + 5 * MINUTE),
        (3, now - 5 * MINUTE),
    ] {
        charge(&f, &key, &mut n, units, at).await;
    }
    let u = usage(now).await;
    assert_eq!(u.daily, 3 + 2, "{u:?}");
    assert_eq!(u.weekly, 3 + 2 + 5 + 7, "{u:?}");
    assert_eq!(u.monthly, 3 + 2 + 5 + 7 + 11 + 13, "{u:?}");
    assert_eq!(u.total, 3 + 2 + 5 + 7 + 11 + 13 + 17, "{u:?}");

    // The answer follows the next charge at once (no stale cache).
    charge(&f, &key, &mut n, 1, now - MINUTE).await;
    assert_eq!(usage(now).await.daily, 6);

    // Only the windows the key has a quota for are counted.
    let (daily, daily_hash) = f
        .key(json!({"alias": "daily", "quotas": {"daily": 10}}))
        .await;
    charge(&f, &daily, &mut n, 1, now - MINUTE).await;
    let found = f.store.lookup_key(&daily_hash, now).await.unwrap().unwrap();
    assert_eq!(
        found.usage,
        Usage {
            daily: 1,
            ..Usage::default()
        }
    );
    f.close().await;
}

#[tokio::test]
async fn query_parameters_of_older_filters_are_ignored() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(&ws, json!({"alias": "q", "quotas": {"total": 100000}}))
        .await;
    let plain = lookup(&srv, &key, "").await;
    for query in [
        "?instance=i_a&since_ms=1",
        "?instance=&since_ms=soon",
        "?x=1",
    ] {
        let (status, body) = srv
            .send(
                Method::GET,
                &format!("/v1/filter/keys/{}{query}", secret_hash(&key)),
                Some(FILTER),
                None,
            )
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        assert!(body.get("recent").is_none(), "{body}");
        assert_eq!(body["usage"], plain["usage"]);
        assert_eq!(body["key_id"], key["id"]);
    }
}
