//! PostgreSQL only: several control planes on one database (what the backend is for). Every
//! other test runs on PostgreSQL too when `TOLLGATE_TEST_DATABASE_URL` is set; these need a
//! shared database, so on SQLite they return at once (saying so).

use serde_json::json;

use crate::common::{now_ms, record, secret_hash, TestServer};

/// A second control plane on `first`'s database (same tokens); `None` on SQLite.
async fn second(first: &TestServer) -> Option<TestServer> {
    let Some(url) = first.database_url().map(str::to_owned) else {
        eprintln!("skipped: needs TOLLGATE_TEST_DATABASE_URL (a PostgreSQL shared by two servers)");
        return None;
    };
    Some(TestServer::start_with(|c| c.database_url = Some(url)).await)
}

#[tokio::test]
async fn a_lookup_on_one_control_plane_blocks_deletion_on_another() {
    let a = TestServer::start().await;
    let Some(b) = second(&a).await else { return };
    let ws = a.workspace("pro").await;
    let key = a.key(&ws, json!({"alias": "k"})).await;
    let id = key["id"].as_str().unwrap();

    // B answers for the key A created; A then refuses to delete it.
    let (status, found) = b.lookup(&secret_hash(&key)).await;
    assert_eq!(status, 200, "{found}");
    a.delete(&format!("/v1/keys/{id}"), 409).await;
    assert!(a.get(&format!("/v1/keys/{id}"), 200).await["last_used_at"].is_string());

    // A change made through A is what B's next lookup sees (nothing cached per process).
    a.patch(&format!("/v1/keys/{id}"), json!({"active": false}), 200)
        .await;
    let (_, found) = b.lookup(&secret_hash(&key)).await;
    assert_eq!(found["active"], false, "{found}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn the_same_batch_sent_to_two_control_planes_is_stored_once() {
    let a = TestServer::start().await;
    let Some(b) = second(&a).await else { return };
    let ws = a.workspace("pro").await;
    let key = a
        .key(&ws, json!({"alias": "k", "quotas": {"daily": 1000}}))
        .await;
    let t = now_ms() - 5_000;
    let batch: Vec<_> = (0..300)
        .map(|i| record(&key, &format!("r-{i}"), t + i))
        .collect();
    let (x, y) = tokio::join!(a.ingest(&batch), b.ingest(&batch));
    assert_eq!(
        x["accepted"].as_u64().unwrap() + y["accepted"].as_u64().unwrap(),
        300
    );
    assert_eq!(
        x["duplicates"].as_u64().unwrap() + y["duplicates"].as_u64().unwrap(),
        300
    );

    let (_, found) = b.lookup(&secret_hash(&key)).await;
    assert_eq!(found["usage"]["daily"], 300, "{found}");
    let id = key["id"].as_str().unwrap();
    assert_eq!(
        a.get(&format!("/v1/keys/{id}"), 200).await["calls_this_month"],
        300
    );
    b.stop().await;
    a.stop().await;
}
