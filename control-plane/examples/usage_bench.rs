//! Usage ingest and analytics at scale, straight against the store (SQLite, or PostgreSQL with
//! `--database-url`):
//!
//! ```sh
//! cargo run --release -p tollgate-control-plane --example usage_bench -- \
//!     [--records 1000000] [--batch 1000] [--keys 20] [--days 30] [--live] [--db /path/tollgate.db]
//!     [--database-url postgres://user@host/db]
//! ```
//!
//! Fills `--records` records spread over the last `--days` days (in time order, as the filter
//! delivers them) in batches of `--batch`, printing the ingest rate (store time only, and with
//! the HTTP handler's JSON parsing and validation), then times the analytics queries (p50/p95 of
//! 20 runs each), store lookups, and lookups read from the database by credit budget period.
//! With `--db` pointing at an existing file (or `--database-url` at a database already filled),
//! `--records 0` reuses its data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_control_plane::api::ingest::parse_batch;
use tollgate_control_plane::clock;
use tollgate_control_plane::domain::{Alias, Category, PlanName, WorkspaceName};
use tollgate_control_plane::domain::{
    CreditBudget, CreditPeriod, KeyPatch, NewKey, NewWorkspace, Quotas, RequestFilter, UsageQuery,
    UsageRecord, UsageScope, UsageStatus,
};
use tollgate_control_plane::domain::{DAY_MS, HOUR_MS};
use tollgate_control_plane::secret::ApiKeySecret;
use tollgate_control_plane::store::{PostgresStore, SqliteStore, Store};

struct Args {
    records: u64,
    batch: usize,
    keys: usize,
    days: i64,
    db: Option<PathBuf>,
    /// PostgreSQL instead of SQLite (the database is migrated; use an empty one to fill).
    database_url: Option<String>,
    /// Timestamps 10 µs apart ending now (live traffic at 100k requests/s) instead of spread
    /// over `days`.
    live: bool,
}

fn args() -> Args {
    let mut a = Args {
        records: 1_000_000,
        batch: 1000,
        keys: 20,
        days: 30,
        db: None,
        database_url: None,
        live: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--live" {
            a.live = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--records" => a.records = value.parse().unwrap(),
            "--batch" => a.batch = value.parse().unwrap(),
            "--keys" => a.keys = value.parse().unwrap(),
            "--days" => a.days = value.parse().unwrap(),
            "--db" => a.db = Some(value.into()),
            "--database-url" => a.database_url = Some(value),
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

/// Cheap deterministic pseudo-randomness (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const ENDPOINTS: [&str; 10] = [
    "/v1/candidates/{id}",
    "/v1/candidates",
    "/v1/jobs/{id}",
    "/v1/jobs",
    "/v1/jobs/{job}/applications/{app}",
    "/v1/search",
    "/v1/things/{id}",
    "/v1/reports/{id}",
    "/v1/users/{id}",
    "/health",
];

fn record(rng: &mut Rng, i: u64, t: i64, keys: &[(String, String)]) -> UsageRecord {
    let (key_id, ws) = &keys[rng.below(keys.len() as u64) as usize];
    let (method, endpoint) = match rng.below(10) {
        0..=6 => ("GET", ENDPOINTS[rng.below(10) as usize]),
        7 | 8 => ("POST", ENDPOINTS[rng.below(3) as usize * 2 + 1]),
        _ => ("DELETE", ENDPOINTS[rng.below(3) as usize * 2]),
    };
    let (code, status) = match rng.below(100) {
        0..=84 => (200, UsageStatus::Completed),
        85..=89 => (201, UsageStatus::Completed),
        90..=94 => (404, UsageStatus::Failed),
        95..=97 => (429, UsageStatus::RateLimited),
        _ => (500, UsageStatus::Failed),
    };
    UsageRecord {
        request_id: format!("bench-{i:012}-{:08x}", rng.next() as u32),
        timestamp: t,
        key_id: key_id.clone(),
        workspace_id: ws.clone(),
        method: method.to_owned(),
        endpoint: endpoint.to_owned(),
        resource_id: (rng.below(2) == 0).then(|| format!("r-{}", rng.below(5000))),
        response_code: code,
        status,
        duration_ms: (rng.below(100_000) as f64) / 1000.0,
        client_ip: format!("10.0.{}.{}", rng.below(4), rng.below(250)),
        credits: 1,
        admitted: status != UsageStatus::RateLimited,
        instance: format!("i_{:016x}", rng.below(2)),
    }
}

fn to_json(r: &UsageRecord) -> serde_json::Value {
    json!({"request_id": r.request_id, "timestamp": r.timestamp, "key_id": r.key_id,
           "workspace_id": r.workspace_id, "method": r.method, "endpoint": r.endpoint,
           "resource_id": r.resource_id, "response_code": r.response_code,
           "status": r.status.as_str(), "duration_ms": r.duration_ms, "client_ip": r.client_ip,
           "credits": r.credits, "admitted": r.admitted, "instance": r.instance})
}

/// CPU time of this process (user + system, all threads), from /proc (Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| {
        ms(samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1])
    };
    (p(0.5), p(0.95), ms(*samples.last().unwrap()))
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let path =
        a.db.clone()
            .unwrap_or_else(|| dir.path().join("tollgate.db"));
    let store: Box<dyn Store> = match &a.database_url {
        Some(url) => Box::new(PostgresStore::open(url).await.unwrap()),
        None => Box::new(SqliteStore::open(&path).await.unwrap()),
    };
    let now = clock::now_ms();

    // Workspaces of 5 keys each, keys with a daily quota (so lookups count usage).
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut hashes = Vec::new();
    let existing = store.workspaces().await.unwrap();
    if existing.is_empty() {
        let plans = store.plans().await.unwrap();
        for w in 0..a.keys.div_ceil(5) {
            let ws = store
                .create_workspace(NewWorkspace {
                    id: format!("ws_bench{w:011}"),
                    name: WorkspaceName::parse(&format!("bench {w}")).unwrap(),
                    plan: PlanName::parse("enterprise", &plans).unwrap(),
                    created_at: now,
                })
                .await
                .unwrap();
            for k in 0..5.min(a.keys - w * 5) {
                let secret = ApiKeySecret::generate();
                let key = store
                    .create_key(NewKey {
                        id: format!("key_bench{w:05}{k:06}"),
                        workspace_id: ws.id.clone(),
                        alias: Alias::parse(&format!("k{k}")).unwrap(),
                        description: None,
                        category: Category::parse("production").unwrap(),
                        expires_at: None,
                        quotas: Quotas {
                            daily: Some(1_000_000_000),
                            ..Quotas::default()
                        },
                        allowed: vec![],
                        created_at: now,
                        hash: secret.hash(),
                        prefix: secret.display_prefix(),
                        rate_limits: Default::default(),
                        credits: None,
                        external_id: None,
                        meta: Default::default(),
                    })
                    .await
                    .unwrap();
                hashes.push(secret.hash());
                keys.push((key.id, key.workspace_id));
            }
        }
    } else {
        for ws in existing {
            for k in store.keys(&ws.id).await.unwrap() {
                hashes.push(tollgate_control_plane::secret::SecretHash::parse(&k.hash).unwrap());
                keys.push((k.id, k.workspace_id));
            }
        }
    }

    // Ingest.
    if a.records > 0 {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let span = if a.live {
            (a.records / 100) as i64
        } else {
            a.days * DAY_MS
        };
        let start = now - span;
        let step = span as f64 / a.records as f64;
        let mut store_time = Duration::ZERO;
        let mut store_cpu = Duration::ZERO;
        let mut parse_time = Duration::ZERO;
        let mut i = 0u64;
        let wall = Instant::now();
        let mut next_report = 1_000_000u64.min(a.records);
        while i < a.records {
            let n = (a.batch as u64).min(a.records - i);
            let batch: Vec<UsageRecord> = (0..n)
                .map(|j| {
                    record(
                        &mut rng,
                        i + j,
                        start + ((i + j) as f64 * step) as i64,
                        &keys,
                    )
                })
                .collect();
            // Measured on every 10th batch: what the HTTP handler adds (JSON parse + validate).
            if (i / a.batch as u64).is_multiple_of(10) {
                let body =
                    json!({"records": batch.iter().map(to_json).collect::<Vec<_>>()}).to_string();
                let t = Instant::now();
                let (good, rejected) = parse_batch(body.as_bytes()).unwrap();
                parse_time += t.elapsed() * 10;
                assert_eq!((good.len(), rejected.len()), (batch.len(), 0));
            }
            let t = Instant::now();
            let cpu = cpu_time();
            let outcome = store.ingest_usage(batch).await.unwrap();
            store_time += t.elapsed();
            store_cpu += cpu_time().saturating_sub(cpu);
            assert_eq!(outcome.accepted, n, "{outcome:?}");
            i += n;
            if i >= next_report {
                println!(
                    "ingest: {i:>10} records, store {:>9.0} records/s ({:.1} µs CPU/record), \
                     with JSON parsing {:>9.0} records/s (wall {:.1}s)",
                    i as f64 / store_time.as_secs_f64(),
                    store_cpu.as_secs_f64() * 1e6 / i as f64,
                    i as f64 / (store_time + parse_time).as_secs_f64(),
                    wall.elapsed().as_secs_f64()
                );
                next_report += 1_000_000;
            }
        }
    }

    if std::env::var_os("BENCH_INGEST_ONLY").is_some() {
        store.close().await;
        return;
    }

    // Statistics first, as a live database has them: `serve` analyzes the raw records with its
    // retention pass, and autovacuum the rest (this benchmark's own server may run without it).
    if let Some(url) = &a.database_url {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let t = Instant::now();
        sqlx::raw_sql("ANALYZE").execute(&pool).await.unwrap();
        println!("ANALYZE: {:.1} s", t.elapsed().as_secs_f64());
        pool.close().await;
    }

    // Analytics.
    let ws = keys[0].1.clone();
    let key = keys[0].0.clone();
    let usage =
        |scope: UsageScope, range: i64| UsageQuery::new(scope, now - range, now, None).unwrap();
    let queries: Vec<(String, Box<dyn Fn() -> Query>)> = vec![
        ("key usage 24h".into(), {
            let k = key.clone();
            Box::new(move || Query::Usage(usage(UsageScope::Key(k.clone()), DAY_MS)))
        }),
        ("key usage 7d".into(), {
            let k = key.clone();
            Box::new(move || Query::Usage(usage(UsageScope::Key(k.clone()), 7 * DAY_MS)))
        }),
        ("key usage 30d".into(), {
            let k = key.clone();
            Box::new(move || Query::Usage(usage(UsageScope::Key(k.clone()), 30 * DAY_MS)))
        }),
        ("key usage 1h (1m)".into(), {
            let k = key.clone();
            Box::new(move || Query::Usage(usage(UsageScope::Key(k.clone()), HOUR_MS)))
        }),
        ("workspace usage 24h".into(), {
            let w = ws.clone();
            Box::new(move || Query::Usage(usage(UsageScope::Workspace(w.clone()), DAY_MS)))
        }),
        ("workspace usage 7d".into(), {
            let w = ws.clone();
            Box::new(move || Query::Usage(usage(UsageScope::Workspace(w.clone()), 7 * DAY_MS)))
        }),
        ("workspace usage 30d".into(), {
            let w = ws.clone();
            Box::new(move || Query::Usage(usage(UsageScope::Workspace(w.clone()), 30 * DAY_MS)))
        }),
        ("workspace usage 12h (5m)".into(), {
            let w = ws.clone();
            Box::new(move || Query::Usage(usage(UsageScope::Workspace(w.clone()), 12 * HOUR_MS)))
        }),
        ("requests: workspace, page 1".into(), {
            let w = ws.clone();
            Box::new(move || {
                Query::Requests(RequestFilter {
                    workspace_id: Some(w.clone()),
                    limit: 50,
                    ..RequestFilter::default()
                })
            })
        }),
        (
            "requests: admin, all, page 1".into(),
            Box::new(|| {
                Query::Requests(RequestFilter {
                    limit: 50,
                    ..RequestFilter::default()
                })
            }),
        ),
        ("requests: key + status=failed".into(), {
            let k = key.clone();
            Box::new(move || {
                Query::Requests(RequestFilter {
                    key_id: Some(k.clone()),
                    status: Some(UsageStatus::Failed),
                    limit: 50,
                    ..RequestFilter::default()
                })
            })
        }),
        ("requests: workspace + resource_id".into(), {
            let w = ws.clone();
            Box::new(move || {
                Query::Requests(RequestFilter {
                    workspace_id: Some(w.clone()),
                    resource_id: Some("r-42".into()),
                    limit: 50,
                    ..RequestFilter::default()
                })
            })
        }),
        (
            "requests: resource_id (admin)".into(),
            Box::new(|| {
                Query::Requests(RequestFilter {
                    resource_id: Some("r-42".into()),
                    limit: 50,
                    ..RequestFilter::default()
                })
            }),
        ),
        (
            "requests: resource_id + status=failed".into(),
            Box::new(|| {
                Query::Requests(RequestFilter {
                    resource_id: Some("r-42".into()),
                    status: Some(UsageStatus::Failed),
                    limit: 50,
                    ..RequestFilter::default()
                })
            }),
        ),
        ("requests: workspace + endpoint + 500".into(), {
            let w = ws.clone();
            Box::new(move || {
                Query::Requests(RequestFilter {
                    workspace_id: Some(w.clone()),
                    endpoint: Some("/v1/search".into()),
                    response_code: Some(500),
                    limit: 50,
                    ..RequestFilter::default()
                })
            })
        }),
        ("requests: workspace, last 24h, limit 500".into(), {
            let w = ws.clone();
            Box::new(move || {
                Query::Requests(RequestFilter {
                    workspace_id: Some(w.clone()),
                    from_ms: Some(now - DAY_MS),
                    limit: 500,
                    ..RequestFilter::default()
                })
            })
        }),
    ];
    println!(
        "{:<42} {:>9} {:>9} {:>9}",
        "query", "p50 ms", "p95 ms", "max ms"
    );
    for (name, make) in &queries {
        let mut samples = Vec::new();
        for _ in 0..20 {
            let q = make();
            let t = Instant::now();
            match q {
                Query::Usage(u) => {
                    store.usage_report(&u).await.unwrap();
                }
                Query::Requests(f) => {
                    store.requests(&f).await.unwrap();
                }
            }
            samples.push(t.elapsed());
        }
        let (p50, p95, max) = percentiles(samples);
        println!("{name:<42} {p50:>9.2} {p95:>9.2} {max:>9.2}");
    }

    // Lookups through the store (the HTTP path adds axum + JSON on top).
    {
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed() < Duration::from_secs(2) {
            for h in &hashes {
                store.lookup_key(h, now).await.unwrap().unwrap();
                n += 1;
            }
        }
        println!(
            "lookups (cached): {:.0}/s",
            n as f64 / t.elapsed().as_secs_f64()
        );
    }

    // Lookups read from the database (each a minute after the one before: the answer cache
    // keeps an answer for its minute only, so it never serves them), by the first key's credit
    // budget: what counting credits charged costs.
    let mut misses = 0_i64;
    for period in [
        None,
        Some(CreditPeriod::Day),
        Some(CreditPeriod::Month),
        Some(CreditPeriod::Total),
    ] {
        let patch = KeyPatch {
            credits: Some(period.map(|period| CreditBudget {
                limit: 1_000_000_000,
                period,
            })),
            ..KeyPatch::default()
        };
        store.update_key(&keys[0].0, patch).await.unwrap();
        let mut samples = Vec::new();
        for _ in 0..2_000 {
            misses += 1;
            let at = now + misses * 60_000;
            let t = Instant::now();
            store.lookup_key(&hashes[0], at).await.unwrap().unwrap();
            samples.push(t.elapsed());
        }
        let (p50, p95, _) = percentiles(samples);
        let label = period.map_or("none", |p| p.as_str());
        println!(
            "lookup from the database, budget {label:<5}: p50 {:.1} µs, p95 {:.1} µs",
            p50 * 1000.0,
            p95 * 1000.0
        );
    }
    store.close().await;
}

enum Query {
    Usage(UsageQuery),
    Requests(RequestFilter),
}
