//! `GET /metrics`: each count moves by what the calls did, the route is the template the router
//! matched (never the raw path), and `promtool check metrics` accepts the exposition.

use std::collections::BTreeMap;
use std::process::Stdio;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::common::{now_ms, on_postgres, program, record, sha256, with, TestServer, ADMIN};

/// A scrape: every sample by its name and its labels (sorted), e.g.
/// `("tollgate_lookups_total", "source=cache")`.
struct Scrape {
    text: String,
    samples: BTreeMap<(String, String), f64>,
}

impl Scrape {
    async fn of(srv: &TestServer) -> Scrape {
        // No token: scrapers are configured without one.
        let response = srv.answer(srv.request(Method::GET, "/metrics")).await;
        assert_eq!(response.status, StatusCode::OK);
        let content_type = response.headers["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let text = response.text();
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, labels(rest.strip_suffix('}').unwrap())),
                    None => (series, String::new()),
                };
                ((name.to_owned(), labels), value.parse().unwrap())
            })
            .collect();
        Scrape { text, samples }
    }

    /// The sample `name{labels}` (labels as `a=x,b=y` in any order); 0 when absent.
    fn get(&self, name: &str, labels: &str) -> f64 {
        let mut wanted: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
        wanted.sort_unstable();
        let key = (name.to_owned(), wanted.join(","));
        self.samples.get(&key).copied().unwrap_or(0.0)
    }
}

/// `a="x",b="y"` → `a=x,b=y`, sorted (values here hold no quotes or commas).
fn labels(text: &str) -> String {
    let mut pairs: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let (value, after) = after.split_once('"').unwrap();
        pairs.push(format!("{}={value}", name.trim_start_matches(',')));
        rest = after;
    }
    pairs.sort_unstable();
    pairs.join(",")
}

/// How far each sample moved from `before` to `after`.
fn moved(before: &Scrape, after: &Scrape, name: &str, labels: &str) -> f64 {
    after.get(name, labels) - before.get(name, labels)
}

#[tokio::test]
async fn metrics_count_requests_lookups_and_ingest_where_they_happen() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let key = srv.key(&ws, json!({"alias": "metrics"})).await;
    let key_id = key["id"].as_str().unwrap();
    let before = Scrape::of(&srv).await;

    // The API: two reads of a key, one of a key that does not exist, a path no route has.
    srv.get(&format!("/v1/keys/{key_id}"), 200).await;
    srv.get(&format!("/v1/keys/{key_id}"), 200).await;
    srv.get("/v1/keys/key_nope", 404).await;
    let (status, _) = srv
        .send(Method::GET, "/no/such/path", Some(ADMIN), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Lookups: the key twice (the second from the lookup cache on SQLite), an unknown hash.
    let hash = sha256(key["secret"].as_str().unwrap());
    let minute = now_ms() / 60_000;
    assert_eq!(srv.lookup(&hash).await.0, StatusCode::OK);
    assert_eq!(srv.lookup(&hash).await.0, StatusCode::OK);
    let same_minute = now_ms() / 60_000 == minute;
    assert_eq!(srv.lookup(&sha256("nope")).await.0, StatusCode::NOT_FOUND);

    // Ingest: 2 stored and 1 malformed, then 1 duplicate and 1 of an unknown key.
    let t = now_ms();
    srv.ingest(&[
        record(&key, "m-1", t),
        record(&key, "m-2", t),
        with(record(&key, "m-3", t), json!({"method": "get"})),
    ])
    .await;
    srv.ingest(&[
        record(&key, "m-1", t),
        with(record(&key, "m-4", t), json!({"key_id": "key_nope"})),
    ])
    .await;

    let after = Scrape::of(&srv).await;
    let requests = "tollgate_http_requests_total";
    let key_route = "method=GET,route=/v1/keys/{key_id}";
    let lookup_route = "method=GET,route=/v1/filter/keys/{hash}";
    let counted = [
        (format!("{key_route},status=200"), 2.0),
        (format!("{key_route},status=404"), 1.0),
        ("method=GET,route=unmatched,status=404".to_owned(), 1.0),
        (format!("{lookup_route},status=200"), 2.0),
        (format!("{lookup_route},status=404"), 1.0),
        (
            "method=POST,route=/v1/filter/usage,status=200".to_owned(),
            2.0,
        ),
        // The scrape before this one counts too.
        ("method=GET,route=/metrics,status=200".to_owned(), 1.0),
    ];
    for (series, want) in counted {
        assert_eq!(moved(&before, &after, requests, &series), want, "{series}");
    }
    assert!(
        !after.text.contains("key_nope") && !after.text.contains(key_id),
        "a raw path in a label:\n{}",
        after.text
    );

    let durations = "tollgate_http_request_duration_seconds_count";
    assert_eq!(moved(&before, &after, durations, key_route), 3.0);
    assert_eq!(
        after.get(
            "tollgate_http_request_duration_seconds_bucket",
            &format!("{key_route},le=+Inf")
        ),
        after.get(durations, key_route)
    );

    let lookups = "tollgate_lookups_total";
    let (cache, database) = (
        moved(&before, &after, lookups, "source=cache"),
        moved(&before, &after, lookups, "source=database"),
    );
    assert_eq!(cache + database, 3.0);
    if on_postgres() {
        assert_eq!(cache, 0.0, "PostgreSQL has no lookup cache");
    } else if same_minute {
        // Cached answers last until the minute turns.
        assert_eq!((cache, database), (1.0, 2.0));
    }

    let records = "tollgate_ingest_records_total";
    assert_eq!(moved(&before, &after, records, "outcome=accepted"), 2.0);
    assert_eq!(moved(&before, &after, records, "outcome=duplicate"), 1.0);
    assert_eq!(moved(&before, &after, records, "outcome=rejected"), 2.0);
    assert_eq!(
        moved(
            &before,
            &after,
            "tollgate_ingest_batch_duration_seconds_count",
            ""
        ),
        2.0
    );
    assert_eq!(
        after.get("tollgate_store_errors_total", "operation=ingest_usage"),
        0.0
    );
    // Retention runs once at startup.
    assert_eq!(after.get("tollgate_retention_runs_total", "result=ok"), 1.0);

    promtool_accepts(&after.text).await;
    srv.stop().await;
}

/// `promtool check metrics` (the Prometheus project's linter) passes the exposition.
async fn promtool_accepts(text: &str) {
    let mut child = Command::new(program("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
