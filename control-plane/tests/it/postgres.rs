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

/// Migration 0003 on a database the previous build made (migrations 0001 and 0002, with a
/// key and its records): the key keeps its data, and the credits its stored admitted records
/// spent are counted all time, per day and per instance bucket, so a budget set now starts from
/// them. PostgreSQL only (the SQLite one: `migration.rs`).
#[tokio::test]
async fn migration_0003_keeps_keys_and_counts_the_credits_already_spent() {
    use tollgate_control_plane::domain::{CreditBudget, CreditPeriod, KeyPatch, RecentQuery};
    use tollgate_control_plane::secret::SecretHash;
    use tollgate_control_plane::store::{PostgresStore, Store};

    let Some(admin_url) = crate::common::postgres_url() else {
        eprintln!("skipped: needs TOLLGATE_TEST_DATABASE_URL");
        return;
    };
    let db = crate::common::TestDatabase::create(&admin_url).await;
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    for name in ["0001_initial.sql", "0002_timestamp_column.sql"] {
        std::fs::copy(src.join(name), dir.path().join(name)).unwrap();
    }
    let previous = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    previous.run(&pool).await.unwrap();
    let t: i64 = 1_797_336_000_000; // 2026-12-15T12:00:00Z
    let hash = "ab".repeat(32);
    let rec = |id: &str, ts: i64, credits: i64, admitted: bool| {
        format!(
            "('{id}', {ts}, 'key_pg', 'ws_pg', 'GET', '/v1/x', NULL, 200, 'completed', 1.0, \
             '10.0.0.1', {credits}, {admitted}, 'i_pg')"
        )
    };
    let records = [
        rec("r-1", t, 2, true),
        rec("r-2", t + 1, 2, true),
        rec("r-3", t + 2, 2, true),
        rec("r-denied", t + 3, 5, false),
        rec("r-yesterday", t - 86_400_000, 7, true),
    ]
    .join(", ");
    let setup = format!(
        "INSERT INTO workspaces (id, name, plan, created_at) VALUES ('ws_pg', 'pg', 'pro', 0); \
         INSERT INTO api_keys (id, workspace_id, alias, category, active, quota_daily, \
             created_at, last_used_at, hash, prefix) \
         VALUES ('key_pg', 'ws_pg', 'old key', 'production', TRUE, 100, 0, {t}, '{hash}', 'tg_old'); \
         INSERT INTO key_secrets (hash, key_id, valid_until) VALUES ('{hash}', 'key_pg', NULL); \
         INSERT INTO usage_records (request_id, \"timestamp\", key_id, workspace_id, method, \
             endpoint, resource_id, response_code, status, duration_ms, client_ip, credits, \
             admitted, instance) VALUES {records}; \
         INSERT INTO key_admitted_totals (key_id, admitted) VALUES ('key_pg', 4); \
         INSERT INTO key_instance_buckets (key_id, instance, bucket, admitted) \
         VALUES ('key_pg', 'i_pg', {t}, 3), ('key_pg', 'i_pg', {}, 1);",
        t - 86_400_000
    );
    sqlx::raw_sql(&setup).execute(&pool).await.unwrap();
    pool.close().await;

    let store = PostgresStore::open(&db.url).await.unwrap();
    let key = store.key("key_pg").await.unwrap();
    assert_eq!(
        (key.alias.as_str(), key.quotas.daily),
        ("old key", Some(100))
    );
    assert_eq!((key.credits, key.external_id.as_deref()), (None, None));
    assert!(key.meta.is_empty());
    let hash = SecretHash::parse(&hash).unwrap();
    let recent = RecentQuery {
        instance: "i_pg".to_owned(),
        since_ms: t,
    };
    for (period, used) in [
        (CreditPeriod::Total, 13),
        (CreditPeriod::Month, 13),
        (CreditPeriod::Day, 6),
    ] {
        let patch = KeyPatch {
            credits: Some(Some(CreditBudget { limit: 100, period })),
            ..KeyPatch::default()
        };
        store.update_key("key_pg", patch).await.unwrap();
        let found = store
            .lookup_key(&hash, t + 10_000, Some(&recent))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.credits.map(|c| c.used), Some(used), "{period:?}");
        assert_eq!(found.recent.map(|r| r.credits), Some(6), "{period:?}");
        assert_eq!(found.quotas.daily, Some(100));
    }
    store.close().await;
}
