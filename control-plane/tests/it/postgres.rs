//! PostgreSQL only: several control planes on one database (what the backend is for). Every
//! other test runs on PostgreSQL too when `TOLLGATE_TEST_DATABASE_URL` is set; these need a
//! shared database, so on SQLite they return at once (saying so).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinSet;

use crate::common::{
    lookup, month_bounds, now_ms, record, secret_hash, with, TestServer, ADMIN, FILTER,
};

/// A second control plane on `first`'s database (same tokens); `None` on SQLite.
pub(crate) async fn second(first: &TestServer) -> Option<TestServer> {
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

    // Records are analytics: the quota is charged by leases only.
    let (_, found) = b.lookup(&secret_hash(&key)).await;
    assert_eq!(found["usage"]["daily"], 0, "{found}");
    let id = key["id"].as_str().unwrap();
    assert_eq!(
        a.get(&format!("/v1/keys/{id}"), 200).await["calls_this_month"],
        300
    );
    b.stop().await;
    a.stop().await;
}

/// A fresh database with the first `count` PostgreSQL migrations applied (what an earlier build
/// made), and a pool on it; `None` (saying so) without `TOLLGATE_TEST_DATABASE_URL`.
async fn migrated_through(count: usize) -> Option<(crate::common::TestDatabase, sqlx::PgPool)> {
    let Some(admin_url) = crate::common::postgres_url() else {
        eprintln!("skipped: needs TOLLGATE_TEST_DATABASE_URL");
        return None;
    };
    let db = crate::common::TestDatabase::create(&admin_url).await;
    let dir = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let mut names: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in &names[..count] {
        std::fs::copy(src.join(name), dir.path().join(name)).unwrap();
    }
    let previous = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    previous.run(&pool).await.unwrap();
    Some((db, pool))
}

/// Migration 0003 on a database the previous build made (migrations 0001 and 0002, with a
/// key and its records): the key keeps its data, and the credits its stored admitted records
/// spent are counted all time and per day, so a budget set now starts from them (0006 keeps
/// them as charges). PostgreSQL only (the SQLite one: `migration.rs`).
#[tokio::test]
async fn migration_0003_keeps_keys_and_counts_the_credits_already_spent() {
    use tollgate_control_plane::domain::{CreditBudget, CreditPeriod, KeyPatch};
    use tollgate_control_plane::secret::SecretHash;
    use tollgate_control_plane::store::{PostgresStore, Store};

    let Some((db, pool)) = migrated_through(2).await else {
        return;
    };
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
        let found = store.lookup_key(&hash, t + 10_000).await.unwrap().unwrap();
        assert_eq!(found.credits.map(|c| c.used), Some(used), "{period:?}");
        assert_eq!(found.quotas.daily, Some(100));
    }
    store.close().await;
}

/// The two instance names of the corpora (two Envoys).
const INSTANCES: [&str; 2] = ["i_a", "i_b"];
/// Credit budget of the corpora's second key (period `total`: no day or month boundary).
const BUDGET: u64 = 1_000_000_000;

/// A workspace with three keys, each with daily and total quotas; the second also has a credit
/// budget.
async fn corpus_keys(srv: &TestServer) -> (String, Vec<Value>) {
    let ws = srv.workspace("pro").await;
    let quotas = json!({"daily": 100_000_000, "total": 1_000_000_000});
    let mut keys = Vec::new();
    for (alias, credits) in [
        ("k0", Value::Null),
        ("k1", json!({"limit": BUDGET, "period": "total"})),
        ("k2", Value::Null),
    ] {
        keys.push(
            srv.key(
                &ws,
                json!({"alias": alias, "quotas": quotas, "credits": credits}),
            )
            .await,
        );
    }
    (ws, keys)
}

/// `batches` batches of `per_batch` distinct records over `keys` (request ids `{tag}-{b}-{j}`),
/// as one Envoy sends them: batch `b` comes from instance `INSTANCES[b % 2]`. Every fifth record
/// was not admitted (429), some admitted ones failed (500), credits 1 to 4. Timestamps lie
/// within one second from `base`.
fn corpus(
    keys: &[Value],
    tag: &str,
    batches: usize,
    per_batch: usize,
    base: i64,
) -> Vec<Vec<Value>> {
    (0..batches)
        .map(|b| {
            (0..per_batch)
                .map(|j| {
                    let n = b * per_batch + j;
                    let admitted = !n.is_multiple_of(5);
                    let (code, status) = match (admitted, n.is_multiple_of(13)) {
                        (false, _) => (429, "rate_limited"),
                        (true, true) => (500, "failed"),
                        (true, false) => (200, "completed"),
                    };
                    with(
                        record(
                            &keys[n % keys.len()],
                            &format!("{tag}-{b}-{j}"),
                            base + (n % 1000) as i64,
                        ),
                        json!({"admitted": admitted, "response_code": code, "status": status,
                               "credits": 1 + n % 4, "instance": INSTANCES[b % 2],
                               "resource_id": format!("c-{}", n % 17)}),
                    )
                })
                .collect()
        })
        .collect()
}

/// A timestamp base for a corpus: 30 s ago, but within this calendar month (so
/// `calls_this_month` and unbudgeted `credits_used` count every record).
fn corpus_times() -> i64 {
    let now = now_ms();
    let (month, _) = month_bounds(now);
    (now - 30_000).max(month)
}

/// What the records of one key must add up to.
#[derive(Debug, Default)]
struct Counts {
    calls: u64,
    completed: u64,
    failed: u64,
    rate_limited: u64,
    admitted: u64,
    /// Credits of admitted records (spent).
    credits: u64,
}

fn counts_of<'a>(records: impl Iterator<Item = &'a Value>) -> Counts {
    let mut c = Counts::default();
    for r in records {
        c.calls += 1;
        match r["status"].as_str().unwrap() {
            "completed" => c.completed += 1,
            "failed" => c.failed += 1,
            _ => c.rate_limited += 1,
        }
        if r["admitted"] == true {
            c.admitted += 1;
            c.credits += r["credits"].as_u64().unwrap();
        }
    }
    c
}

fn assert_totals(report: &Value, want: &Counts, what: &str) {
    assert_eq!(
        report["totals"],
        json!({"total": want.calls, "completed": want.completed, "failed": want.failed,
               "rate_limited": want.rate_limited, "credits": want.credits}),
        "{what}: totals"
    );
}

/// Everything `srv` reports about `records` (the distinct records sent) is exact: the request
/// log holds each once with its fields, the usage reports of every key and of the workspace,
/// each key's `calls_this_month` and unbudgeted `credits_used`; and they charge no budget (the
/// lookup's `usage` and `credits.used` are the leases').
async fn assert_stored_exactly_once(
    srv: &TestServer,
    ws: &str,
    keys: &[Value],
    records: &[&Value],
) {
    let log = srv.all_requests(&format!("workspace_id={ws}"), ADMIN).await;
    let sent: HashMap<&str, &Value> = records
        .iter()
        .map(|r| (r["request_id"].as_str().unwrap(), *r))
        .collect();
    assert_eq!(sent.len(), records.len(), "the corpus has distinct ids");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for r in &log {
        let id = r["request_id"].as_str().unwrap();
        *seen.entry(id).or_default() += 1;
        let s = sent
            .get(id)
            .unwrap_or_else(|| panic!("the request log holds a record never sent: {r}"));
        for field in [
            "key_id",
            "status",
            "response_code",
            "credits",
            "resource_id",
        ] {
            assert_eq!(r[field], s[field], "{field} of {id}: {r}");
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "request ids stored more than once: {twice:?}"
    );
    let missing: Vec<_> = sent
        .keys()
        .filter(|id| !seen.contains_key(*id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} records missing from the request log, e.g. {missing:?}",
        sent.len() - seen.len(),
        sent.len()
    );
    assert_eq!(log.len(), records.len());

    let all = counts_of(records.iter().copied());
    let usage = srv.get(&format!("/v1/workspaces/{ws}/usage"), 200).await;
    assert_totals(&usage, &all, "workspace usage");
    for key in keys {
        let id = key["id"].as_str().unwrap();
        let want = counts_of(records.iter().copied().filter(|r| r["key_id"] == key["id"]));
        assert!(want.calls > 0 && want.admitted < want.calls);
        let usage = srv.get(&format!("/v1/keys/{id}/usage"), 200).await;
        assert_totals(&usage, &want, &format!("usage of {id}"));
        let k = srv.get(&format!("/v1/keys/{id}"), 200).await;
        assert_eq!(k["calls_this_month"], want.calls, "{k}");
        let budget = !key["credits"].is_null();
        if budget {
            assert_eq!(k["credits_used"], 0, "{k}");
            assert_eq!(k["credits_remaining"], BUDGET, "{k}");
        } else {
            assert_eq!(k["credits_used"], want.credits, "{k}");
        }
        let l = lookup(srv, key, "").await;
        assert_eq!(l["usage"]["daily"], 0, "{id}: {l}");
        assert_eq!(l["usage"]["total"], 0, "{id}: {l}");
        if budget {
            assert_eq!(l["credits"]["used"], 0, "{id}: {l}");
        }
    }
}

/// `POST /v1/filter/usage` of `body` (a serialised batch): the answer, or why there is none.
async fn post_batch(client: &reqwest::Client, base: &str, body: &str) -> Result<Value, String> {
    let resp = client
        .post(format!("{base}/v1/filter/usage"))
        .bearer_auth(FILTER)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("{status}, no body: {e}"))?;
    // A replica killed on purpose may not answer at all; what it does answer is as described.
    crate::openapi_check::check(
        &reqwest::Method::POST,
        "/v1/filter/usage",
        status,
        &headers,
        &bytes,
    );
    let text = String::from_utf8_lossy(&bytes);
    if status != 200 {
        return Err(format!("{status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// The answer's `(accepted, duplicates)`, which account for every one of the batch's `len`
/// records (none rejected).
fn accounted(answer: &Value, len: usize) -> (u64, u64) {
    assert_eq!(answer["rejected"], json!([]), "{answer}");
    let (a, d) = (
        answer["accepted"].as_u64().unwrap(),
        answer["duplicates"].as_u64().unwrap(),
    );
    assert_eq!(
        a + d,
        len as u64,
        "accepted + duplicates of a batch of {len}: {answer}"
    );
    (a, d)
}

fn bodies(batches: &[Vec<Value>]) -> Vec<Arc<String>> {
    batches
        .iter()
        .map(|b| Arc::new(json!({ "records": b }).to_string()))
        .collect()
}

/// Two control planes, many distinct batches, each delivered to both at the same time (as an
/// Envoy re-delivering to another replica behind a load balancer): every record is stored once
/// and everything counted from the records is exact on either control plane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_delivered_to_two_control_planes_at_once_are_each_stored_once() {
    const BATCHES: usize = 20;
    const PER_BATCH: usize = 250;
    let a = TestServer::start().await;
    let Some(b) = second(&a).await else { return };
    let (ws, keys) = corpus_keys(&a).await;
    let base = corpus_times();
    let batches = corpus(&keys, "twice", BATCHES, PER_BATCH, base);
    let bodies = bodies(&batches);

    // Every batch to both at once: A in order, B from the last, all 40 POSTs concurrent.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut posts = JoinSet::new();
    for i in 0..BATCHES {
        for (srv, batch) in [(&a, i), (&b, BATCHES - 1 - i)] {
            let (client, base, body) = (client.clone(), srv.base.clone(), bodies[batch].clone());
            posts.spawn(async move { (batch, post_batch(&client, &base, &body).await) });
        }
    }
    let mut accepted = [0u64; BATCHES];
    let mut duplicates = [0u64; BATCHES];
    while let Some(done) = posts.join_next().await {
        let (batch, answer) = done.unwrap();
        let answer = answer.unwrap_or_else(|e| panic!("batch {batch}: {e}"));
        let (x, d) = accounted(&answer, PER_BATCH);
        accepted[batch] += x;
        duplicates[batch] += d;
    }
    for batch in 0..BATCHES {
        assert_eq!(
            (accepted[batch], duplicates[batch]),
            (PER_BATCH as u64, PER_BATCH as u64),
            "batch {batch}: accepted and duplicates over both deliveries"
        );
    }

    let records: Vec<&Value> = batches.iter().flatten().collect();
    assert_stored_exactly_once(&a, &ws, &keys, &records).await;
    assert_stored_exactly_once(&b, &ws, &keys, &records).await;

    // A third delivery, to either, stores nothing.
    for (i, body) in bodies.iter().enumerate() {
        let srv = if i % 2 == 0 { &a } else { &b };
        let answer = post_batch(&client, &srv.base, body).await.unwrap();
        assert_eq!(accounted(&answer, PER_BATCH), (0, PER_BATCH as u64), "{i}");
    }
    let id = keys[0]["id"].as_str().unwrap();
    let want = counts_of(
        records
            .iter()
            .copied()
            .filter(|r| r["key_id"] == keys[0]["id"]),
    );
    assert_eq!(
        b.get(&format!("/v1/keys/{id}"), 200).await["calls_this_month"],
        want.calls
    );
    b.stop().await;
    a.stop().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// `tollgate serve` (the binary) on `database_url` with the test tokens, listening on a port of
/// its own; its address.
async fn spawn_replica(
    database_url: &str,
    data_dir: &std::path::Path,
) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .arg("--database-url")
        .arg(database_url)
        .env_remove("TOLLGATE_DATA_DIR")
        .env_remove("TOLLGATE_DATABASE_URL")
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .env("TOLLGATE_FILTER_TOKEN", FILTER)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(30), async {
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("Listening on ") {
                return addr.to_owned();
            }
            seen.push(line);
        }
        panic!("serve exited before listening: {seen:?}");
    })
    .await
    .expect("serve listening within 30 s");
    // Whatever it prints later is drained, so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, base)
}

/// A replica killed (SIGKILL) while large batches are in flight: some answers never come, and
/// some of those batches may be stored, in part or whole. Delivering every batch again to
/// another control plane on the database (the filter's retry) stores each record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_ingest_loses_and_duplicates_nothing_on_redelivery() {
    const BATCHES: usize = 40;
    const PER_BATCH: usize = 2_000;
    let a = TestServer::start().await;
    let Some(url) = a.database_url().map(str::to_owned) else {
        eprintln!("skipped: needs TOLLGATE_TEST_DATABASE_URL (a PostgreSQL shared by two servers)");
        return;
    };
    let (ws, keys) = corpus_keys(&a).await;
    let base = corpus_times();
    let batches = corpus(&keys, "killed", BATCHES, PER_BATCH, base);
    let bodies = bodies(&batches);
    let dir = tempfile::tempdir().unwrap();
    let (mut replica, replica_base) = spawn_replica(&url, dir.path()).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let mut posts = JoinSet::new();
    for (i, body) in bodies.iter().enumerate() {
        let (client, base, body) = (client.clone(), replica_base.clone(), body.clone());
        posts.spawn(async move { (i, post_batch(&client, &base, &body).await) });
    }
    // Killed as soon as one batch is stored: the others are still being sent, queued for a
    // connection or inside their transaction.
    let mut answers: Vec<Option<Result<Value, String>>> = vec![None; BATCHES];
    while let Some(done) = posts.join_next().await {
        let (i, answer) = done.unwrap();
        let stored = answer.is_ok();
        answers[i] = Some(answer);
        if stored {
            break;
        }
    }
    replica.start_kill().unwrap();
    let status = replica.wait().await.unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    while let Some(done) = posts.join_next().await {
        let (i, answer) = done.unwrap();
        answers[i] = Some(answer);
    }
    let answered: Vec<usize> = (0..BATCHES)
        .filter(|i| matches!(answers[*i], Some(Ok(_))))
        .collect();
    let mut accepted_before = 0;
    for i in &answered {
        if let Some(Ok(answer)) = &answers[*i] {
            accepted_before += accounted(answer, PER_BATCH).0;
        }
    }
    println!(
        "replica killed: {} of {BATCHES} batches answered ({accepted_before} records accepted)",
        answered.len()
    );
    assert!(
        !answered.is_empty(),
        "no batch stored before the kill: {answers:?}"
    );
    assert!(
        answered.len() < BATCHES,
        "every batch was answered before the kill: it interrupted nothing"
    );

    // The filter's retry: every batch again (it cannot know which were stored), to A.
    let mut redelivered = JoinSet::new();
    let mut accepted_after = 0;
    for (i, body) in bodies.iter().enumerate() {
        if redelivered.len() >= 4 {
            let (i, answer): (usize, Result<Value, String>) =
                redelivered.join_next().await.unwrap().unwrap();
            accepted_after += check_redelivery(i, answer, &answered, PER_BATCH);
        }
        let (client, base, body) = (client.clone(), a.base.clone(), body.clone());
        redelivered.spawn(async move { (i, post_batch(&client, &base, &body).await) });
    }
    while let Some(done) = redelivered.join_next().await {
        let (i, answer) = done.unwrap();
        accepted_after += check_redelivery(i, answer, &answered, PER_BATCH);
    }
    let distinct = (BATCHES * PER_BATCH) as u64;
    // Records the replica committed without answering show as duplicates, not accepted.
    assert!(
        accepted_before + accepted_after <= distinct,
        "{accepted_before} + {accepted_after} records accepted of {distinct} distinct"
    );

    let records: Vec<&Value> = batches.iter().flatten().collect();
    assert_stored_exactly_once(&a, &ws, &keys, &records).await;
    a.stop().await;
}

/// Checks a redelivered batch's answer (`answered`: the batches the killed replica answered,
/// all duplicates now); its accepted count.
fn check_redelivery(
    i: usize,
    answer: Result<Value, String>,
    answered: &[usize],
    len: usize,
) -> u64 {
    let answer = answer.unwrap_or_else(|e| panic!("redelivery of batch {i}: {e}"));
    let (accepted, duplicates) = accounted(&answer, len);
    if answered.contains(&i) {
        assert_eq!(
            duplicates, len as u64,
            "batch {i} was stored before: {answer}"
        );
    }
    accepted
}

const DAY: i64 = 86_400_000;

/// The day partitions of `usage_records` in the database at `url`, as their days' starts.
async fn partition_days(url: &str) -> Vec<i64> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = CAST('usage_records' AS regclass) ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    names
        .into_iter()
        .map(|(name,)| {
            let digits = name.trim_start_matches("usage_records_");
            let number = |range: std::ops::Range<usize>| -> u16 { digits[range].parse().unwrap() };
            let month = time::Month::try_from(u8::try_from(number(4..6)).unwrap()).unwrap();
            let date = time::Date::from_calendar_date(
                i32::from(number(0..4)),
                month,
                u8::try_from(number(6..8)).unwrap(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            date.midnight().assume_utc().unix_timestamp() * 1000
        })
        .collect()
}

/// Retention on PostgreSQL drops the partitions of the UTC days wholly before the cutoff, with
/// their records; the day the cutoff falls in stays whole (its records older than the cutoff
/// too), later days stay, and the rollups still count every record.
#[tokio::test]
async fn retention_drops_only_the_partitions_of_days_wholly_before_the_cutoff() {
    if !crate::common::on_postgres() {
        eprintln!("skipped: retention by partition is PostgreSQL's (TOLLGATE_TEST_DATABASE_URL)");
        return;
    }
    let srv = TestServer::start_with(|c| {
        c.retention.raw_days = 30;
        c.retention.every = Duration::from_millis(100);
    })
    .await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "a"})).await;
    let now = now_ms();
    let cutoff = now - 30 * DAY;
    let cutoff_day = cutoff - cutoff.rem_euclid(DAY);
    let times = [
        ("two-days-before", cutoff_day - DAY + 5_000),
        ("last-ms-of-the-day-before", cutoff_day - 1),
        ("first-ms-of-the-cutoff-day", cutoff_day),
        ("just-before-the-cutoff", (cutoff - 1).max(cutoff_day)),
        ("after-the-cutoff", cutoff + 60_000),
        ("now", now - 1_000),
    ];
    let batch: Vec<Value> = times.iter().map(|(id, t)| record(&key, id, *t)).collect();
    let stored = srv.ingest(&batch).await;
    assert_eq!(stored["accepted"], times.len(), "{stored}");

    let kept: Vec<&str> = times[2..].iter().rev().map(|(id, _)| *id).collect();
    let ids = srv.request_ids_once(kept.len()).await;
    assert_eq!(ids, kept);
    // Still so after more passes: the cutoff's day is never dropped early.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        srv.all_requests("from=2000-01-01T00:00:00Z", ADMIN)
            .await
            .len(),
        kept.len()
    );

    let days = partition_days(srv.database_url().unwrap()).await;
    assert!(!days.contains(&(cutoff_day - DAY)), "{days:?}");
    assert!(days.contains(&cutoff_day), "{days:?}");
    assert!(days.contains(&(now - now.rem_euclid(DAY))), "{days:?}");

    let id = key["id"].as_str().unwrap();
    let usage = srv
        .get(
            &format!(
                "/v1/keys/{id}/usage?from={}&to={}",
                crate::common::rfc3339(cutoff_day - 2 * DAY),
                crate::common::rfc3339(now)
            ),
            200,
        )
        .await;
    assert_eq!(usage["totals"]["total"], times.len(), "{usage}");
    srv.stop().await;
}

/// Migration 0004 on a database the previous build made (0001–0003, records in the one wide
/// table): every record is in the request log as before (same ids, names, statuses and
/// resource ids), in a partition of its day; delivered again, each is a duplicate; a new record
/// gets an id after the copied ones.
#[tokio::test]
async fn migration_0004_copies_the_records_into_day_partitions_and_keeps_them_idempotent() {
    let Some((db, pool)) = migrated_through(3).await else {
        return;
    };

    let now = now_ms();
    let today = now - now.rem_euclid(DAY);
    // (request id, timestamp, method, endpoint, resource, code, status, admitted, instance)
    let old = [
        (
            "m-1",
            today - 3 * DAY + 7,
            "GET",
            "/v1/a/{id}",
            Some("a-1"),
            200,
            "completed",
            true,
            "i_a",
        ),
        (
            "m-2",
            today - 3 * DAY + 7,
            "POST",
            "/v1/a",
            None,
            201,
            "completed",
            true,
            "i_b",
        ),
        (
            "m-3",
            today - DAY + 1,
            "GET",
            "/v1/a/{id}",
            Some("a-2"),
            429,
            "rate_limited",
            false,
            "i_a",
        ),
        (
            "m-4",
            today + 2,
            "DELETE",
            "/v1/a/{id}",
            Some("a-1"),
            500,
            "failed",
            true,
            "i_b",
        ),
    ];
    let values: Vec<String> = old
        .iter()
        .map(|(rid, t, m, e, res, code, status, admitted, inst)| {
            let res = res.map_or("NULL".to_owned(), |r| format!("'{r}'"));
            format!(
                "('{rid}', {t}, 'key_m', 'ws_m', '{m}', '{e}', {res}, {code}, '{status}', 2.5, \
                 '10.0.0.9', 1, {admitted}, '{inst}')"
            )
        })
        .collect();
    let hash = "cd".repeat(32);
    let setup = format!(
        "INSERT INTO workspaces (id, name, plan, created_at) VALUES ('ws_m', 'm', 'pro', 0); \
         INSERT INTO api_keys (id, workspace_id, alias, category, active, created_at, hash, \
             prefix) VALUES ('key_m', 'ws_m', 'old key', 'production', TRUE, 0, '{hash}', 'tg_old'); \
         INSERT INTO key_secrets (hash, key_id, valid_until) VALUES ('{hash}', 'key_m', NULL); \
         INSERT INTO usage_records (request_id, \"timestamp\", key_id, workspace_id, method, \
             endpoint, resource_id, response_code, status, duration_ms, client_ip, credits, \
             admitted, instance) VALUES {};",
        values.join(", ")
    );
    sqlx::raw_sql(&setup).execute(&pool).await.unwrap();
    let old_ids: Vec<(String, i64)> =
        sqlx::query_as("SELECT request_id, id FROM usage_records ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;

    let url = db.url.clone();
    let srv = TestServer::start_with(|c| c.database_url = Some(url)).await;
    let log = srv.all_requests("from=2000-01-01T00:00:00Z", ADMIN).await;
    let ms = |t: &str| {
        let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339);
        i64::try_from(t.unwrap().unix_timestamp_nanos() / 1_000_000).unwrap()
    };
    let seen: Vec<(&str, i64, &str, &str, Value, i64, &str)> = log
        .iter()
        .map(|r| {
            (
                r["request_id"].as_str().unwrap(),
                ms(r["timestamp"].as_str().unwrap()),
                r["method"].as_str().unwrap(),
                r["endpoint"].as_str().unwrap(),
                r["resource_id"].clone(),
                r["response_code"].as_i64().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    let want: Vec<(&str, i64, &str, &str, Value, i64, &str)> = old
        .iter()
        .rev()
        .map(|(rid, t, m, e, res, code, status, _, _)| {
            (*rid, *t, *m, *e, json!(res), *code, *status)
        })
        .collect();
    // Newest first; m-1 and m-2 share a millisecond, so their ids (kept) order them.
    assert_eq!(seen, want);

    let days = partition_days(srv.database_url().unwrap()).await;
    for day in [today - 3 * DAY, today - DAY, today] {
        assert!(days.contains(&day), "{day} not in {days:?}");
    }

    // Delivered again: every record is a duplicate. A new one is stored after them.
    let key = json!({"id": "key_m", "workspace_id": "ws_m"});
    let again: Vec<Value> = old
        .iter()
        .map(|(rid, t, m, e, res, code, status, admitted, inst)| {
            json!({
                "request_id": rid, "timestamp": t, "key_id": "key_m", "workspace_id": "ws_m",
                "method": m, "endpoint": e, "resource_id": res, "response_code": code,
                "status": status, "duration_ms": 2.5, "client_ip": "10.0.0.9", "credits": 1,
                "admitted": admitted, "instance": inst,
            })
        })
        .collect();
    let answer = srv.ingest(&again).await;
    assert_eq!(
        (answer["accepted"].as_u64(), answer["duplicates"].as_u64()),
        (Some(0), Some(4)),
        "{answer}"
    );
    let answer = srv.ingest(&[record(&key, "m-new", now - 1_000)]).await;
    assert_eq!(answer["accepted"], 1, "{answer}");
    let pool = sqlx::PgPool::connect(srv.database_url().unwrap())
        .await
        .unwrap();
    let ids: Vec<(String, i64)> =
        sqlx::query_as("SELECT request_id, id FROM usage_records ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let carried: Vec<(String, bool, String)> = sqlx::query_as(
        "SELECT r.request_id, r.admitted, i.name FROM usage_records r \
         JOIN usage_names i ON i.id = r.instance WHERE r.request_id LIKE 'm-_' ORDER BY r.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let want: Vec<(String, bool, String)> = old
        .iter()
        .map(|(rid, .., admitted, inst)| (rid.to_string(), *admitted, inst.to_string()))
        .collect();
    assert_eq!(carried, want);
    assert_eq!(&ids[..4], &old_ids[..]);
    assert_eq!(ids[4].0, "m-new");
    srv.stop().await;
    drop(db);
}
