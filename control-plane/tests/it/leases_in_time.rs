//! Budget leases at the store, with the clock set by the test (docs/protocol.md, "Filter →
//! control plane: budget leases"): expiry and the sweep, rolling windows, the end of a credit
//! period, and two control planes granting one key at once. Through the API: `leases.rs`.

use std::sync::Arc;

use serde_json::json;
use tokio::task::JoinSet;
use tollgate_control_plane::domain::{GrantRequest, LeaseRequest, Meter, Settlement};
use tollgate_control_plane::store::Store;

use crate::common::{now_ms, StoreFixture};
use crate::leases::spend_until_refused;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const TTL: i64 = 30_000;

/// The store's request of `instance`: settlements `(lease, spent)` and grants
/// `(lease, key, meter, want, min)`.
fn request(
    instance: &str,
    settle: &[(&str, u64)],
    grant: &[(&str, &str, Meter, u64, u64)],
) -> LeaseRequest {
    LeaseRequest {
        instance: instance.to_owned(),
        settle: settle
            .iter()
            .map(|(lease, spent)| Settlement {
                lease: (*lease).to_owned(),
                spent: *spent,
            })
            .collect(),
        grant: grant
            .iter()
            .map(|(lease, key, meter, want, min)| GrantRequest {
                lease: (*lease).to_owned(),
                key_id: (*key).to_owned(),
                meter: *meter,
                want: *want,
                min: *min,
            })
            .collect(),
    }
}

/// Two control planes (two `PostgresStore`s on one database) granting the same key at once:
/// together never more than the room. PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_control_planes_never_lease_more_than_the_room_together() {
    let f = StoreFixture::open().await;
    let Some(other) = f.second_store().await else {
        eprintln!("skipped: needs TOLLGATE_TEST_DATABASE_URL (a PostgreSQL shared by two stores)");
        return;
    };
    let (key, hash) = f.key(json!({"alias": "q", "quotas": {"daily": 300}})).await;
    let stores: [Arc<dyn Store>; 2] = [f.store.clone(), other.clone()];
    let mut tasks = JoinSet::new();
    for i in 0..64 {
        let store = stores[i % 2].clone();
        let key = key.clone();
        tasks.spawn(async move {
            let instance = format!("i_s{i}");
            let ask = |held: Option<(String, u64)>, id: String| {
                let (store, key, instance) = (store.clone(), key.clone(), instance.clone());
                tokio::spawn(async move {
                    let settle: Vec<(&str, u64)> =
                        held.iter().map(|(l, s)| (l.as_str(), *s)).collect();
                    let r = request(&instance, &settle, &[(&id, &key, Meter::Calls, 50, 1)]);
                    let a = store.lease(&r, now_ms(), TTL).await.unwrap();
                    let g = serde_json::to_value(&a.grants[0]).unwrap();
                    (a.grants[0].units, g)
                })
            };
            spend_until_refused(ask, &instance).await
        });
    }
    let mut total = 0;
    while let Some(got) = tasks.join_next().await {
        total += got.unwrap().iter().sum::<u64>();
    }
    assert_eq!(total, 300);
    let found = other.lookup_key(&hash, now_ms()).await.unwrap().unwrap();
    assert_eq!(found.usage.daily, 300);
    other.close().await;
    f.close().await;
}

#[tokio::test]
async fn a_credits_lease_ends_with_its_day_and_is_charged_to_it() {
    let f = StoreFixture::open().await;
    let (key, hash) = f
        .key(json!({"alias": "d", "credits": {"limit": 100, "period": "day"}}))
        .await;
    let now = now_ms();
    let midnight = now - now.rem_euclid(DAY) + DAY;
    let at = midnight - 5_000;
    let r = request("i_a", &[], &[("i_a.1", &key, Meter::Credits, 10, 1)]);
    let a = f.store.lease(&r, at, TTL).await.unwrap();
    assert_eq!((a.grants[0].units, a.grants[0].ttl_ms), (10, 5_000));
    // Never settled: swept 10 s after it ended, charged in full to the day that reserved it.
    assert_eq!(f.store.sweep_leases(midnight + 10_000).await.unwrap(), 0);
    assert_eq!(f.store.sweep_leases(midnight + 10_001).await.unwrap(), 1);
    let used = |t: i64| {
        let store = f.store.clone();
        let hash = hash.clone();
        async move {
            let found = store.lookup_key(&hash, t).await.unwrap().unwrap();
            found.credits.unwrap().used
        }
    };
    assert_eq!(used(midnight - 1).await, 10);
    assert_eq!(used(midnight + 20_000).await, 0);
    // In the next day, the budget is whole again.
    let r = request("i_a", &[], &[("i_a.2", &key, Meter::Credits, 1000, 1)]);
    let a = f.store.lease(&r, midnight + 20_000, TTL).await.unwrap();
    assert_eq!((a.grants[0].units, a.grants[0].ttl_ms), (50, 30_000));
    f.close().await;
}

#[tokio::test]
async fn an_unsettled_lease_is_charged_in_full_at_its_expiry_minute() {
    let f = StoreFixture::open().await;
    let (key, hash) = f
        .key(json!({"alias": "q", "quotas": {"total": 1000, "daily": 1000}}))
        .await;
    let t0 = now_ms();
    let r = request(
        "i_a",
        &[],
        &[
            ("i_a.1", &key, Meter::Calls, 10, 1),
            ("i_a.2", &key, Meter::Calls, 7, 1),
        ],
    );
    let a = f.store.lease(&r, t0, TTL).await.unwrap();
    assert_eq!((a.grants[0].units, a.grants[1].units), (10, 7));
    let leased = f.store.key(&key).await.unwrap().leased;
    assert_eq!((leased.calls, leased.credits, leased.holders), (17, 0, 1));

    let expires = t0 + TTL;
    // Within the 10 s after its expiry it may still be settled.
    assert_eq!(f.store.sweep_leases(expires + 10_000).await.unwrap(), 0);
    let settle = request("i_a", &[("i_a.2", 3)], &[]);
    assert_eq!(
        f.store
            .lease(&settle, expires + 5_000, TTL)
            .await
            .unwrap()
            .settled,
        1
    );
    assert_eq!(f.store.sweep_leases(expires + 10_001).await.unwrap(), 1);
    assert_eq!(f.store.sweep_leases(expires + 20_000).await.unwrap(), 0);
    assert_eq!(f.store.key(&key).await.unwrap().leased.calls, 0);

    let usage = |t: i64| {
        let store = f.store.clone();
        let hash = hash.clone();
        async move { store.lookup_key(&hash, t).await.unwrap().unwrap().usage }
    };
    assert_eq!(usage(expires + 20_000).await.total, 13);
    // The daily window drops the swept lease's minute exactly a day later.
    let minute = (expires - 1) - (expires - 1).rem_euclid(MINUTE);
    assert_eq!(usage(minute + DAY + MINUTE - 1).await.daily, 13);
    assert_eq!(usage(minute + DAY + MINUTE).await.daily, 0);
    assert_eq!(usage(minute + DAY + MINUTE).await.total, 13);

    // A grant sweeps its key's expired leases too.
    let r = request("i_b", &[], &[("i_b.1", &key, Meter::Calls, 5, 1)]);
    let at = expires + 30_000;
    f.store.lease(&r, at, TTL).await.unwrap();
    let r = request("i_b", &[], &[("i_b.2", &key, Meter::Calls, 5, 1)]);
    f.store.lease(&r, at + TTL + 10_001, TTL).await.unwrap();
    assert_eq!(usage(at + TTL + 20_000).await.total, 18);
    f.close().await;
}

#[tokio::test]
async fn the_daily_window_rolls_and_the_total_counts_for_good() {
    let f = StoreFixture::open().await;
    let (key, hash) = f
        .key(json!({"alias": "q", "quotas": {"daily": 100, "total": 1000}}))
        .await;
    let now = now_ms();
    let t0 = now - 25 * HOUR;
    let r = request("i_a", &[], &[("i_a.1", &key, Meter::Calls, 10, 1)]);
    assert_eq!(
        f.store.lease(&r, t0, TTL).await.unwrap().grants[0].units,
        10
    );
    let r = request("i_a", &[("i_a.1", 7)], &[]);
    assert_eq!(f.store.lease(&r, t0 + 1_000, TTL).await.unwrap().settled, 1);
    let usage = |t: i64| {
        let store = f.store.clone();
        let hash = hash.clone();
        async move { store.lookup_key(&hash, t).await.unwrap().unwrap().usage }
    };
    let then = usage(t0 + 2_000).await;
    assert_eq!((then.daily, then.total), (7, 7));
    let later = usage(now).await;
    assert_eq!((later.daily, later.total), (0, 7));
    // Now the daily window has its whole 100: half of it, the total's 993 notwithstanding.
    let r = request("i_a", &[], &[("i_a.2", &key, Meter::Calls, 1000, 1)]);
    assert_eq!(
        f.store.lease(&r, now, TTL).await.unwrap().grants[0].units,
        50
    );
    f.close().await;
}

/// A settled lease is charged at its expiry minute, not when it is settled: its workers may
/// still spend units they took until its deadline, so the charge must not leave the daily
/// window before them.
#[tokio::test]
async fn a_settled_lease_is_charged_at_its_expiry_minute() {
    let f = StoreFixture::open().await;
    let (key, hash) = f.key(json!({"alias": "q", "quotas": {"daily": 100}})).await;
    // 50 s into a minute: the lease (30 s) expires in the next one.
    let start = now_ms() - 2 * DAY;
    let t0 = start - start.rem_euclid(MINUTE) + 50_000;
    let r = request("i_a", &[], &[("i_a.1", &key, Meter::Calls, 10, 1)]);
    assert_eq!(
        f.store.lease(&r, t0, TTL).await.unwrap().grants[0].units,
        10
    );
    let r = request("i_a", &[("i_a.1", 4)], &[]);
    assert_eq!(f.store.lease(&r, t0 + 100, TTL).await.unwrap().settled, 1);
    let daily = |t: i64| {
        let store = f.store.clone();
        let hash = hash.clone();
        async move {
            store
                .lookup_key(&hash, t)
                .await
                .unwrap()
                .unwrap()
                .usage
                .daily
        }
    };
    let settled_minute = t0 - t0.rem_euclid(MINUTE);
    let expiry_minute = settled_minute + MINUTE;
    // A day after the minute it was settled in, it still counts ...
    assert_eq!(daily(settled_minute + DAY + MINUTE).await, 4);
    // ... until a day after its expiry minute.
    assert_eq!(daily(expiry_minute + DAY + MINUTE - 1).await, 4);
    assert_eq!(daily(expiry_minute + DAY + MINUTE).await, 0);
    f.close().await;
}
