//! Migrations 0004 (narrow raw records, workspace rollups), 0005 (time-ordered idempotency
//! index), 0006 (resource references) and 0007 (idempotency keys) keep what older versions
//! stored.
//!
//! SQLite only: these tests open `SqliteStore` on files left by older SQLite migrations, so they
//! do not use `TestServer` and run against SQLite even when `TOLLGATE_TEST_DATABASE_URL` selects
//! PostgreSQL for the rest of the suite (the PostgreSQL schema has no older versions to migrate).

use std::path::Path;

use rusqlite::{params, Connection};
use tollgate_control_plane::domain::{
    CreditBudget, CreditPeriod, KeyPatch, RateLimits, RequestFilter, UsageQuery, UsageRecord,
    UsageScope, UsageStatus,
};
use tollgate_control_plane::domain::{DAY_MS, HOUR_MS, MINUTE_MS};
use tollgate_control_plane::secret::SecretHash;
use tollgate_control_plane::store::sqlite::migrate::migrate;
use tollgate_control_plane::store::{SqliteStore, Store};

const UP_TO_0003: [&str; 3] = ["0001_initial.sql", "0002_usage.sql", "0003_usage_days.sql"];

/// A database at the last of `names` (migrations), as an older control plane left it.
async fn old_database(path: &Path, migrations: &Path, names: &[&str]) -> Connection {
    std::fs::create_dir_all(migrations).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for name in names {
        std::fs::copy(src.join(name), migrations.join(name)).unwrap();
    }
    let migrator = sqlx::migrate::Migrator::new(migrations).await.unwrap();
    let mut conn = Connection::open(path).unwrap();
    migrate(&mut conn, &migrator).unwrap();
    conn
}

#[tokio::test]
async fn records_and_rollups_survive_migration_0004() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.db");
    let conn = old_database(&path, &dir.path().join("migrations"), &UP_TO_0003).await;
    let day = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;
    let t0 = day + 3 * HOUR_MS + 5 * MINUTE_MS;
    conn.execute_batch(
        "INSERT INTO workspaces (id, name, plan, created_at) VALUES ('ws_m', 'm', 'pro', 0); \
         INSERT INTO api_keys (id, workspace_id, alias, category, active, created_at, hash, \
             prefix, last_used_at) \
         VALUES ('key_m1', 'ws_m', 'a', 'qa', 1, 0, 'h1', 'p1', 1), \
                ('key_m2', 'ws_m', 'b', 'qa', 1, 0, 'h2', 'p2', 1)",
    )
    .unwrap();
    // Raw records and the rollups an old ingest wrote for them.
    let rows = [
        (
            "old-1",
            t0,
            "key_m1",
            "GET",
            "/v1/a",
            Some("r-1"),
            200,
            "completed",
        ),
        (
            "old-2",
            t0 + 1,
            "key_m1",
            "POST",
            "/v1/b",
            None,
            429,
            "rate_limited",
        ),
        (
            "old-3",
            t0 + 2,
            "key_m2",
            "GET",
            "/v1/a",
            Some("r-2"),
            500,
            "failed",
        ),
        (
            "old-4",
            t0 + HOUR_MS,
            "key_m2",
            "GET",
            "/v1/a",
            Some("r-1"),
            200,
            "completed",
        ),
    ];
    for (rid, t, key, method, endpoint, resource, code, status) in rows {
        conn.execute(
            "INSERT INTO usage_records (request_id, timestamp, key_id, workspace_id, method, \
             endpoint, resource_id, response_code, status, duration_ms, client_ip, credits, \
             admitted, instance) VALUES (?, ?, ?, 'ws_m', ?, ?, ?, ?, ?, 1.5, '10.0.0.1', 2, \
             ?, 'i_old')",
            params![
                rid,
                t,
                key,
                method,
                endpoint,
                resource,
                code,
                status,
                status != "rate_limited"
            ],
        )
        .unwrap();
        for (table, column, step) in [
            ("usage_minutes", "minute", MINUTE_MS),
            ("usage_hours", "hour", HOUR_MS),
            ("usage_days", "day", DAY_MS),
        ] {
            conn.execute(
                &format!(
                    "INSERT INTO {table} (key_id, {column}, endpoint, method, response_code, \
                     status, workspace_id, count, credits, duration_ms) \
                     VALUES (?, ?, ?, ?, ?, ?, 'ws_m', 1, 2, 1.5) \
                     ON CONFLICT DO UPDATE SET count = count + 1"
                ),
                params![key, t - t.rem_euclid(step), endpoint, method, code, status],
            )
            .unwrap();
        }
    }
    drop(conn);

    let store = SqliteStore::open(&path).await.unwrap();

    // The request log reads the same records, with every filter.
    let page = |f: RequestFilter| {
        let store = store.clone();
        async move {
            store
                .requests(&RequestFilter { limit: 50, ..f })
                .await
                .unwrap()
                .records
        }
    };
    let all = page(RequestFilter::default()).await;
    let ids: Vec<&str> = all.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["old-4", "old-3", "old-2", "old-1"]);
    let r2 = &all[2];
    assert_eq!(
        (
            r2.key_id.as_str(),
            r2.workspace_id.as_str(),
            r2.method.as_str(),
            r2.endpoint.as_str(),
            r2.resource_id.as_deref(),
            r2.response_code,
            r2.status,
            r2.instance.as_str(),
            r2.client_ip.as_str(),
            r2.credits,
            r2.admitted,
        ),
        (
            "key_m1",
            "ws_m",
            "POST",
            "/v1/b",
            None,
            429,
            UsageStatus::RateLimited,
            "i_old",
            "10.0.0.1",
            2,
            false
        )
    );
    let ids_of = |records: Vec<tollgate_control_plane::domain::RequestRecord>| {
        records
            .into_iter()
            .map(|r| r.request_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids_of(
            page(RequestFilter {
                resource_id: Some("r-1".into()),
                ..RequestFilter::default()
            })
            .await
        ),
        ["old-4", "old-1"]
    );
    assert_eq!(
        ids_of(
            page(RequestFilter {
                workspace_id: Some("ws_m".into()),
                key_id: Some("key_m2".into()),
                method: Some("GET".into()),
                endpoint: Some("/v1/a".into()),
                status: Some(UsageStatus::Failed),
                response_code: Some(500),
                ..RequestFilter::default()
            })
            .await
        ),
        ["old-3"]
    );
    assert!(page(RequestFilter {
        endpoint: Some("/never".into()),
        ..RequestFilter::default()
    })
    .await
    .is_empty());

    // Workspace reports read the backfilled workspace rollups: same answers as the key rollups.
    for interval in [MINUTE_MS, HOUR_MS, DAY_MS] {
        let q = |scope| UsageQuery::new(scope, day, day + DAY_MS, Some(interval)).unwrap();
        let ws = store
            .usage_report(&q(UsageScope::Workspace("ws_m".into())))
            .await
            .unwrap();
        let k1 = store
            .usage_report(&q(UsageScope::Key("key_m1".into())))
            .await
            .unwrap();
        let k2 = store
            .usage_report(&q(UsageScope::Key("key_m2".into())))
            .await
            .unwrap();
        assert_eq!(ws.totals.total, 4);
        assert_eq!(ws.totals.total, k1.totals.total + k2.totals.total);
        assert_eq!((ws.totals.completed, ws.totals.failed), (2, 1));
        assert_eq!(ws.by_method[0].method, "GET");
        assert_eq!(ws.by_method[0].count, 3);
        assert_eq!(ws.top_endpoints[0].endpoint, "/v1/a");
        let series: u64 = ws
            .series
            .iter()
            .map(|b| b.completed + b.failed + b.rate_limited)
            .sum();
        assert_eq!(series, 4);
    }

    // Migrated records sent again (same request id and timestamp) are still duplicates; new
    // ones are stored and counted with the old.
    let record = |rid: &str, key: &str, timestamp: i64| UsageRecord {
        request_id: rid.to_owned(),
        timestamp,
        key_id: key.to_owned(),
        workspace_id: "ws_m".to_owned(),
        method: "GET".to_owned(),
        endpoint: "/v1/a".to_owned(),
        resource_id: None,
        response_code: 200,
        status: UsageStatus::Completed,
        duration_ms: 1.0,
        client_ip: "10.0.0.2".to_owned(),
        credits: 1,
        admitted: true,
        instance: "i_new".to_owned(),
    };
    let out = store
        .ingest_usage(vec![
            record("old-1", "key_m1", t0),
            record("old-4", "key_m2", t0 + HOUR_MS),
            record("new-1", "key_m1", t0 + 10),
        ])
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (1, 2), "{out:?}");
    let ws = store
        .usage_report(
            &UsageQuery::new(
                UsageScope::Workspace("ws_m".into()),
                day,
                day + DAY_MS,
                Some(HOUR_MS),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ws.totals.total, 5);

    // The writer gives every migrated row its request id hash (no collision here), between
    // ingest transactions.
    assert_eq!(wait_until_hashed(&path).await, 0);
    store.close().await;
}

/// 0005 rebuilds the idempotency index over the rows of a 0004 database: they stay readable,
/// a re-delivered record (same request id and timestamp) is a duplicate before and after the
/// writer gives them their hashes, and the same request id at another time is stored.
#[tokio::test]
async fn idempotency_survives_migration_0005() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.db");
    let names: Vec<&str> = UP_TO_0003
        .into_iter()
        .chain(["0004_narrow_usage.sql"])
        .collect();
    let conn = old_database(&path, &dir.path().join("migrations"), &names).await;
    let t0 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS + 3 * HOUR_MS;
    conn.execute_batch(
        "INSERT INTO workspaces (id, name, plan, created_at) VALUES ('ws_m', 'm', 'pro', 0); \
         INSERT INTO api_keys (id, workspace_id, alias, category, active, created_at, hash, \
             prefix) VALUES ('key_m', 'ws_m', 'a', 'qa', 1, 0, 'h1', 'p1'); \
         INSERT INTO usage_names (id, name) VALUES (1, 'key_m'), (2, 'ws_m'), (3, 'GET'), \
             (4, '/v1/a'), (5, 'i_old')",
    )
    .unwrap();
    // As 0004 left them: rows copied from 0003 have no hash yet; one row has its hash
    // (`request_id_hash`, pinned by a unit test of the writer).
    let hashed = "8d189948-9b1a-4e3b-9a71-a4f242816ea6";
    let rows = [
        (1, "old-1", None),
        (2, "old-2", None),
        (3, hashed, Some(-1_249_828_607_231_379_034_i64)),
    ];
    for (i, rid, hash) in rows {
        conn.execute(
            "INSERT INTO usage_records (id, rid_hash, request_id, timestamp, key_ref, \
             workspace_ref, method_ref, endpoint_ref, resource_id, response_code, status, \
             duration_ms, client_ip, credits, admitted, instance_ref) \
             VALUES (?, ?, ?, ?, 1, 2, 3, 4, 'r-1', 200, 1, 1.5, '10.0.0.1', 1, 1, 5)",
            params![i, hash, rid, t0 + i],
        )
        .unwrap();
    }
    drop(conn);

    let store = SqliteStore::open(&path).await.unwrap();
    let record = |rid: &str, timestamp: i64| UsageRecord {
        request_id: rid.to_owned(),
        timestamp,
        key_id: "key_m".to_owned(),
        workspace_id: "ws_m".to_owned(),
        method: "GET".to_owned(),
        endpoint: "/v1/a".to_owned(),
        resource_id: Some("r-1".to_owned()),
        response_code: 200,
        status: UsageStatus::Completed,
        duration_ms: 1.0,
        client_ip: "10.0.0.2".to_owned(),
        credits: 1,
        admitted: true,
        instance: "i_new".to_owned(),
    };
    let out = store
        .ingest_usage(vec![record("old-1", t0 + 1), record(hashed, t0 + 3)])
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (0, 2), "{out:?}");

    // Once the writer has hashed every migrated row, through the new index.
    assert_eq!(wait_until_hashed(&path).await, 0);
    // Migrations 0006 and 0007 moved the resource index and the idempotency index into tables
    // the writer fills: every migrated row is in both (the unhashed ones once hashed).
    // So did 0008 with the key and workspace indexes.
    // 0011 put the resource references into generations, with their time ranges.
    let conn = Connection::open(&path).unwrap();
    let (refs, keys, through, key_refs, ws_refs): (i64, i64, i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM usage_resource_refs WHERE gen = 0 AND timestamp BETWEEN \
         (SELECT min_ts FROM usage_resource_gens WHERE gen = 0) AND \
         (SELECT max_ts FROM usage_resource_gens WHERE gen = 0)), \
         (SELECT count(*) FROM usage_request_keys), \
         (SELECT through_id FROM usage_tail_state), \
         (SELECT count(*) FROM usage_key_refs WHERE key_ref = 1), \
         (SELECT count(*) FROM usage_workspace_refs WHERE workspace_ref = 2)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!((refs, keys, through, key_refs, ws_refs), (3, 3, 3, 3, 3));
    drop(conn);
    let out = store
        .ingest_usage(vec![
            record("old-1", t0 + 1),
            record("old-2", t0 + 2),
            record(hashed, t0 + 3),
            record("old-2", t0 + 20),
            record("new-1", t0 + 1),
        ])
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (2, 3), "{out:?}");

    let mut stored: Vec<(String, i64)> = store
        .requests(&RequestFilter {
            limit: 50,
            resource_id: Some("r-1".into()),
            ..RequestFilter::default()
        })
        .await
        .unwrap()
        .records
        .into_iter()
        .map(|r| (r.request_id, r.timestamp - t0))
        .collect();
    stored.sort();
    let want = [
        (hashed, 3),
        ("new-1", 1),
        ("old-1", 1),
        ("old-2", 2),
        ("old-2", 20),
    ]
    .map(|(id, t)| (id.to_owned(), t));
    assert_eq!(stored, want);
    store.close().await;
}

/// Rows still without a request id hash once the writer's backfill has had up to 5 s.
async fn wait_until_hashed(path: &Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    let mut unhashed = -1;
    for _ in 0..100 {
        unhashed = conn
            .query_row(
                "SELECT count(*) FROM usage_records WHERE rid_hash IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if unhashed == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    unhashed
}

/// A database made and migrated by an earlier Tollgate, whose migrations ran through sqlx's
/// runner (`tests/fixtures/sqlx-made-0011.sql`, dumped from it), opens: no migration runs
/// again, and its workspace, key and records are there.
#[tokio::test]
async fn a_database_migrated_by_sqlx_opens_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.db");
    let dump = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sqlx-made-0011.sql");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(&std::fs::read_to_string(dump).unwrap())
        .unwrap();
    let installed = |conn: &Connection| -> Vec<(i64, String)> {
        let mut stmt = conn
            .prepare("SELECT version, installed_on FROM _sqlx_migrations ORDER BY version")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.map(Result::unwrap).collect()
    };
    let before = installed(&conn);
    assert_eq!(before.len(), 11);
    drop(conn);

    let store = SqliteStore::open(&path).await.unwrap();
    let workspaces = store.workspaces().await.unwrap();
    assert_eq!(workspaces.len(), 1);
    assert_eq!(workspaces[0].name, "Fixture");
    let keys = store.keys(&workspaces[0].id).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].alias, "fixture-key");
    assert_eq!(keys[0].quotas.daily, Some(1000));
    let page = store
        .requests(&RequestFilter {
            limit: 10,
            ..RequestFilter::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = page.records.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["fx-1", "fx-2", "fx-3"]);

    // 0012: the key has no limits, budget or owner, and the credits its stored admitted
    // records spent (three of 1 credit) are counted all time and per day, so a budget set now
    // starts from them (0013 keeps them as charges).
    let key = &keys[0];
    assert_eq!(key.rate_limits, RateLimits::default());
    assert_eq!((key.credits, key.external_id.as_deref()), (None, None));
    assert!(key.meta.is_empty());
    let hash =
        SecretHash::parse("7b822270a735f719565cffa697681202e3a1c2553ee9b58981d29bce0ca57087")
            .unwrap();
    let at = 1_796_205_640_000; // just after the fixture's records
    for period in [CreditPeriod::Total, CreditPeriod::Day, CreditPeriod::Month] {
        let patch = KeyPatch {
            credits: Some(Some(CreditBudget { limit: 10, period })),
            ..KeyPatch::default()
        };
        store.update_key(&key.id, patch).await.unwrap();
        let found = store.lookup_key(&hash, at).await.unwrap().unwrap();
        assert_eq!(found.credits.map(|c| c.used), Some(3), "{period:?}");
    }
    store.close().await;

    let conn = Connection::open(&path).unwrap();
    // 0013: the month's credits of a key's records (what a key without a budget shows), from
    // the per-day credits; the per-instance buckets are gone, the leases' table is there.
    let month_credits: i64 = conn
        .query_row(
            "SELECT credits FROM key_month_calls WHERE key_id = ?1 AND month = 202612",
            [&key.id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(month_credits, 3);
    let tables = |name: &str| -> i64 {
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(
        (tables("key_instance_buckets"), tables("key_leases")),
        (0, 1)
    );
    let after = installed(&conn);
    assert_eq!(
        after[..before.len()],
        before[..],
        "an applied migration ran again"
    );
}
