//! Hostile input against every route of the REST API (issue 20): malformed JSON, wrong types,
//! huge numbers, 1 MB strings, NUL bytes, unknown members, junk path segments, query strings
//! and tokens, and bodies past the limit (declared, and chunked without end). Every answer is a
//! 4xx with the API's JSON error, naming the field where there is one (`"field"`), and nothing
//! is written. The one list of routes is [`ROUTES`]; a route of the server it lacks, or one it
//! lists that no probe reaches, fails the tests.
//!
//! Over 600 lines: the probes of every route are one table, kept beside the walk that sends them.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_control_plane::server::api_routes;

use crate::common::{record, secret_hash, TestServer, ADMIN, FILTER};

/// Every route of the REST API and its methods (`ANY`: every method).
const ROUTES: [(&str, &[&str]); 21] = [
    ("/healthz", &["GET"]),
    ("/v1/openapi.json", &["GET"]),
    ("/v1/whoami", &["GET"]),
    ("/v1/plans", &["GET", "POST"]),
    ("/v1/workspaces", &["GET", "POST"]),
    ("/v1/workspaces/{workspace_id}", &["GET", "PATCH"]),
    ("/v1/workspaces/{workspace_id}/keys", &["GET", "POST"]),
    ("/v1/workspaces/{workspace_id}/usage", &["GET"]),
    (
        "/v1/workspaces/{workspace_id}/console-tokens",
        &["GET", "POST"],
    ),
    ("/v1/console-tokens/{id}", &["DELETE"]),
    ("/v1/keys/{key_id}", &["GET", "PATCH", "DELETE"]),
    ("/v1/keys/{key_id}/rotate", &["POST"]),
    ("/v1/keys/{key_id}/usage", &["GET"]),
    ("/v1/requests", &["GET"]),
    ("/v1/requests.csv", &["GET"]),
    ("/v1/filter/keys/{hash}", &["GET"]),
    ("/v1/filter/usage", &["POST"]),
    ("/v1/filter/leases", &["POST"]),
    ("/v1/ext-authz/check", &["ANY"]),
    ("/v1/ext-authz/check/", &["ANY"]),
    ("/v1/ext-authz/check/{*rest}", &["ANY"]),
];

/// The body limits the routes answer 413 past (the admin API's, and the filter's own).
const MAX_BODY: usize = 1024 * 1024;
const INGEST_MAX_BODY: usize = 16 * 1024 * 1024;

fn body_limit_of(route: &str) -> usize {
    if route == "/v1/filter/usage" {
        INGEST_MAX_BODY
    } else {
        MAX_BODY
    }
}

#[test]
fn every_route_of_the_server_is_listed() {
    let listed: BTreeSet<(String, Vec<String>)> = ROUTES
        .iter()
        .map(|(path, methods)| {
            let methods = methods.iter().map(|m| (*m).to_owned()).collect();
            ((*path).to_owned(), methods)
        })
        .collect();
    let served: BTreeSet<(String, Vec<String>)> = api_routes()
        .into_iter()
        .map(|(path, methods)| (path.to_owned(), methods))
        .collect();
    assert_eq!(
        served.difference(&listed).collect::<Vec<_>>(),
        Vec::<&(String, Vec<String>)>::new(),
        "routes the server has and ROUTES lacks"
    );
    assert_eq!(listed, served, "ROUTES lists a route the server lacks");
}

/// Who calls.
#[derive(Debug, Clone, Copy)]
enum Who {
    Admin,
    Filter,
    Nobody,
    /// This `Authorization` header.
    Header(&'static str),
}

/// What a probe must get, besides never a 5xx.
#[derive(Debug, Clone)]
enum Expect {
    /// A 4xx JSON error whose `"field"` is this (and whose message starts with it).
    Field(String),
    /// A 4xx JSON error whose message names this (serde's, for a member that is missing).
    Mentions(&'static str),
    /// A 4xx JSON error (a junk id is simply not found).
    Refused,
    /// The route ignores it: any status below 500, a JSON error when it is a 4xx.
    Ignored,
    /// Ingest: 200 with the batch's one record rejected, the error starting with this field.
    RejectedRecord(&'static str),
}

fn field(name: &str) -> Expect {
    Expect::Field(name.to_owned())
}

#[derive(Debug)]
struct Probe {
    route: &'static str,
    method: Method,
    path: String,
    who: Who,
    body: Option<Vec<u8>>,
    expect: Expect,
}

/// Numbers JSON can carry but `serde_json::Value` cannot: written as `num("1e400")` and
/// spliced into the body's text.
const RAW_NUMBERS: [&str; 5] = [
    "1e400",
    "-1e400",
    "18446744073709551616",
    "-9223372036854775809",
    "99999999999999999999999999",
];

fn num(text: &str) -> Value {
    Value::String(format!("__num:{text}__"))
}

fn body_text(body: &Value) -> Vec<u8> {
    let mut text = body.to_string();
    for n in RAW_NUMBERS {
        text = text.replace(&format!("\"__num:{n}__\""), n);
    }
    text.into_bytes()
}

/// `base` with `value` at the dotted `path` (`quotas.daily`, `grant.0.want`).
fn with_at(base: &Value, path: &str, value: Value) -> Value {
    let mut body = base.clone();
    let mut at = &mut body;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        at = match part.parse::<usize>() {
            Ok(index) => &mut at[index],
            Err(_) if last => {
                at[*part] = value;
                return body;
            }
            Err(_) => {
                if at
                    .get(*part)
                    .is_none_or(|v| !v.is_object() && !v.is_array())
                {
                    at[*part] = json!({});
                }
                &mut at[*part]
            }
        };
    }
    *at = value;
    body
}

const MB: usize = 1_000_000;

fn huge() -> Value {
    Value::String("x".repeat(MB))
}

/// What a fresh server holds for the probes to aim at.
struct Fixture {
    ws: String,
    key_id: String,
    hash: String,
    token_id: String,
}

impl Fixture {
    /// `route` with its `{…}` segments filled with real ids.
    fn path(&self, route: &str) -> String {
        route
            .replace("{workspace_id}", &self.ws)
            .replace("{key_id}", &self.key_id)
            .replace("{id}", &self.token_id)
            .replace("{hash}", &self.hash)
            .replace("{*rest}", "v1/things/1")
    }
}

async fn fixture(srv: &TestServer) -> Fixture {
    let ws = srv.workspace("pro").await;
    let key = srv
        .key(
            &ws,
            json!({"alias": "target", "quotas": {"daily": 100},
                   "credits": {"limit": 50, "period": "month"}}),
        )
        .await;
    let token = srv
        .post(
            &format!("/v1/workspaces/{ws}/console-tokens"),
            json!({"name": "console"}),
            201,
        )
        .await;
    Fixture {
        ws,
        key_id: key["id"].as_str().unwrap().to_owned(),
        hash: secret_hash(&key),
        token_id: token["id"].as_str().unwrap().to_owned(),
    }
}

/// Everything the probes could have written: workspaces, plans, keys (with their usage and
/// leased units), console tokens and the request log.
async fn snapshot(srv: &TestServer) -> Value {
    let workspaces = srv.get("/v1/workspaces", 200).await;
    let mut keys = Vec::new();
    let mut tokens = Vec::new();
    for ws in workspaces["data"].as_array().unwrap() {
        let id = ws["id"].as_str().unwrap();
        keys.push(srv.get(&format!("/v1/workspaces/{id}/keys"), 200).await);
        tokens.push(
            srv.get(&format!("/v1/workspaces/{id}/console-tokens"), 200)
                .await,
        );
    }
    let requests = srv
        .all_requests("from=2000-01-01T00:00:00Z", ADMIN)
        .await
        .len();
    json!({
        "workspaces": workspaces,
        "plans": srv.get("/v1/plans", 200).await,
        "keys": keys,
        "tokens": tokens,
        "requests": requests,
    })
}

/// Bodies no JSON route may take.
fn malformed_bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        "not json",
        "{",
        "{\"a\":",
        "{}{}",
        "[]",
        "[[]]",
        "[{\"alias\": \"a\"}]",
        "null",
        "\"text\"",
        "12",
        "{\"a\" 1}",
    ]
    .iter()
    .map(|b| b.as_bytes().to_vec())
    .collect();
    // Not UTF-8, and a string cut by a NUL byte outside any string.
    bodies.push(b"{\"alias\": \"\xff\xfe\"}".to_vec());
    bodies.push(b"{\"alias\": \"a\"\x00}".to_vec());
    bodies
}

/// The probes of a JSON route: the malformed bodies, then `base` with each `(member, value,
/// expected)` change.
fn json_probes(
    route: &'static str,
    method: Method,
    path: &str,
    who: Who,
    base: &Value,
    changes: Vec<(&str, Value, Expect)>,
) -> Vec<Probe> {
    let mut probes: Vec<Probe> = malformed_bodies()
        .into_iter()
        .map(|body| Probe {
            route,
            method: method.clone(),
            path: path.to_owned(),
            who,
            body: Some(body),
            expect: Expect::Refused,
        })
        .collect();
    for (member, value, expect) in changes {
        probes.push(Probe {
            route,
            method: method.clone(),
            path: path.to_owned(),
            who,
            body: Some(body_text(&with_at(base, member, value))),
            expect,
        });
    }
    probes
}

/// Wrong types, huge and negative numbers, 1 MB strings and NUL bytes for a member that takes
/// a positive integer.
fn bad_counts(member: &'static str, name: &str) -> Vec<(&'static str, Value, Expect)> {
    let mut cases: Vec<(&'static str, Value, Expect)> = RAW_NUMBERS
        .iter()
        .map(|n| (member, num(n), field(name)))
        .collect();
    for v in [
        json!(-1),
        json!(0),
        json!(1.5),
        json!("10"),
        json!([1]),
        huge(),
    ] {
        cases.push((member, v, field(name)));
    }
    cases
}

/// A 1 MB string, a NUL byte, a wrong type and an empty string for a text member.
fn bad_texts(member: &'static str, name: &str) -> Vec<(&'static str, Value, Expect)> {
    vec![
        (member, huge(), field(name)),
        (member, json!("a\u{0}b"), field(name)),
        (member, json!(17), field(name)),
        (member, json!({"nested": true}), field(name)),
    ]
}

fn admin_body_probes(f: &Fixture) -> Vec<Probe> {
    let mut probes = Vec::new();

    let plan = json!({"name": "gold", "max_keys": 5, "rate_limit_per_second": 10,
                      "rate_limit_per_minute": 100});
    let mut changes = bad_texts("name", "name");
    changes.push(("name", json!(""), field("name")));
    changes.extend(bad_counts("max_keys", "max_keys"));
    changes.extend(bad_counts("rate_limit_per_second", "rate_limit_per_second"));
    changes.extend(bad_counts("rate_limit_per_minute", "rate_limit_per_minute"));
    changes.push(("colour", json!("red"), field("colour")));
    probes.extend(json_probes(
        "/v1/plans",
        Method::POST,
        "/v1/plans",
        Who::Admin,
        &plan,
        changes,
    ));
    probes.push(json_probe(
        "/v1/plans",
        Method::POST,
        "/v1/plans",
        &json!({"max_keys": 5}),
        Expect::Mentions("name"),
    ));

    let workspace = json!({"name": "Hostile", "plan": "pro"});
    let mut changes = bad_texts("name", "name");
    changes.push(("name", json!("   "), field("name")));
    changes.extend(bad_texts("plan", "plan"));
    changes.push(("plan", json!("gold"), field("plan")));
    changes.push(("colour", json!(1), field("colour")));
    probes.extend(json_probes(
        "/v1/workspaces",
        Method::POST,
        "/v1/workspaces",
        Who::Admin,
        &workspace,
        changes,
    ));

    let ws_path = format!("/v1/workspaces/{}", f.ws);
    let mut changes = bad_texts("plan", "plan");
    changes.push(("plan", Value::Null, field("plan")));
    changes.push(("name", json!("renamed"), field("name")));
    probes.extend(json_probes(
        "/v1/workspaces/{workspace_id}",
        Method::PATCH,
        &ws_path,
        Who::Admin,
        &json!({"plan": "pro"}),
        changes,
    ));

    probes.extend(json_probes(
        "/v1/workspaces/{workspace_id}/keys",
        Method::POST,
        &format!("/v1/workspaces/{}/keys", f.ws),
        Who::Admin,
        &json!({"alias": "hostile"}),
        key_changes(),
    ));
    probes.push(json_probe(
        "/v1/workspaces/{workspace_id}/keys",
        Method::POST,
        &format!("/v1/workspaces/{}/keys", f.ws),
        &json!({"description": "no alias"}),
        Expect::Mentions("alias"),
    ));

    let mut changes = vec![
        ("alias", Value::Null, field("alias")),
        ("active", json!("yes"), field("active")),
        ("active", Value::Null, field("active")),
        ("expires_at", json!(5), field("expires_at")),
        ("expires_at", json!("a\u{0}"), field("expires_at")),
        ("expires_at", huge(), field("expires_at")),
        ("quotas.daily", num("1e400"), field("quotas.daily")),
        (
            "rate_limits.per_hour",
            json!(-3),
            field("rate_limits.per_hour"),
        ),
        (
            "credits",
            json!({"limit": 5, "period": "week"}),
            field("credits.period"),
        ),
        ("meta.tier", json!(1), field("meta.tier")),
        ("hash", json!("x"), field("hash")),
        ("secret", json!("tg_x"), field("secret")),
    ];
    changes.extend(arrays_for_objects());
    changes.extend(bad_texts("description", "description"));
    changes.extend(bad_texts("alias", "alias"));
    probes.extend(json_probes(
        "/v1/keys/{key_id}",
        Method::PATCH,
        &format!("/v1/keys/{}", f.key_id),
        Who::Admin,
        &json!({}),
        changes,
    ));

    // 0 is no grace: a good value here.
    let mut changes: Vec<_> = bad_counts("grace_seconds", "grace_seconds")
        .into_iter()
        .filter(|(_, v, _)| *v != json!(0))
        .collect();
    changes.push(("grace_seconds", json!(604_801), field("grace_seconds")));
    changes.push(("grace", json!(60), field("grace")));
    probes.extend(json_probes(
        "/v1/keys/{key_id}/rotate",
        Method::POST,
        &format!("/v1/keys/{}/rotate", f.key_id),
        Who::Admin,
        &json!({"grace_seconds": 60}),
        changes,
    ));

    let mut changes = bad_texts("name", "name");
    changes.push(("name", json!(" "), field("name")));
    changes.push(("ttl", json!(60), field("ttl")));
    probes.extend(json_probes(
        "/v1/workspaces/{workspace_id}/console-tokens",
        Method::POST,
        &format!("/v1/workspaces/{}/console-tokens", f.ws),
        Who::Admin,
        &json!({"name": "hostile"}),
        changes,
    ));
    probes
}

fn json_probe(
    route: &'static str,
    method: Method,
    path: &str,
    body: &Value,
    expect: Expect,
) -> Probe {
    Probe {
        route,
        method,
        path: path.to_owned(),
        who: Who::Admin,
        body: Some(body_text(body)),
        expect,
    }
}

/// Every member of a new key, wrong in every way.
fn key_changes() -> Vec<(&'static str, Value, Expect)> {
    let mut changes = bad_texts("alias", "alias");
    changes.push(("alias", json!(""), field("alias")));
    changes.push(("alias", Value::Null, field("alias")));
    changes.extend(bad_texts("description", "description"));
    changes.extend(bad_texts("category", "category"));
    changes.extend(bad_texts("expires_at", "expires_at"));
    for past in [
        "1970-01-01T00:00:00Z",
        "2001-01-01T00:00:00Z",
        "0001-01-01T00:00:00Z",
    ] {
        changes.push(("expires_at", json!(past), field("expires_at")));
    }
    changes.push((
        "expires_at",
        json!("2027-13-45T00:00:00Z"),
        field("expires_at"),
    ));
    changes.push(("quotas", json!("lots"), field("quotas")));
    changes.extend(bad_counts("quotas.daily", "quotas.daily"));
    changes.extend(bad_counts("quotas.total", "quotas.total"));
    changes.push(("quotas.hourly", json!(5), field("quotas.hourly")));
    changes.push(("allowed", json!({"GET": "/"}), field("allowed")));
    changes.push((
        "allowed",
        json!([{"method": "GET", "path": "/a\u{0}"}]),
        field("allowed[0].path"),
    ));
    changes.push((
        "allowed",
        json!([{"path": format!("/{}", "a".repeat(MB))}]),
        field("allowed[0].path"),
    ));
    changes.push((
        "allowed",
        json!([{"method": "FETCH", "path": "/"}]),
        field("allowed[0].method"),
    ));
    changes.push((
        "allowed",
        json!([{"path": "/", "verb": "GET"}]),
        field("allowed[0].verb"),
    ));
    changes.push((
        "allowed",
        json!(vec![json!({"path": "/"}); 101]),
        field("allowed"),
    ));
    changes.push(("rate_limits", json!(7), field("rate_limits")));
    changes.extend(bad_counts(
        "rate_limits.per_second",
        "rate_limits.per_second",
    ));
    changes.push((
        "rate_limits.per_day",
        json!(5),
        field("rate_limits.per_day"),
    ));
    changes.push(("credits", json!("lots"), field("credits")));
    changes.extend(
        bad_counts("credits.limit", "credits.limit")
            .into_iter()
            .map(|(_, v, e)| ("credits", json!({"limit": v, "period": "day"}), e)),
    );
    changes.push((
        "credits",
        json!({"limit": 5, "period": "week"}),
        field("credits.period"),
    ));
    changes.push(("credits", json!({"limit": 5}), field("credits.period")));
    changes.push((
        "credits",
        json!({"limit": 5, "period": "day", "rollover": true}),
        field("credits.rollover"),
    ));
    changes.extend(bad_texts("external_id", "external_id"));
    changes.push(("external_id", json!("has space"), field("external_id")));
    changes.push(("meta", json!(["a"]), field("meta")));
    changes.push(("meta", json!({"tier": "a\u{0}"}), field("meta.tier")));
    changes.push(("meta", json!({"tier": "x".repeat(MB)}), field("meta")));
    changes.push(("meta", json!({"Bad\u{0}": "x"}), field("meta.Bad\u{0}")));
    changes.push(("meta", json!({"tier": {"a": 1}}), field("meta.tier")));
    changes.push(("colour", json!("red"), field("colour")));
    changes.push(("secret", json!("tg_mine"), field("secret")));
    changes.extend(arrays_for_objects());
    changes
}

/// Arrays in place of a key's nested objects, each one serde would otherwise fill by position
/// (a daily quota of 5, a `GET /` rule, three rate limits, a daily budget of 5).
fn arrays_for_objects() -> Vec<(&'static str, Value, Expect)> {
    vec![
        ("quotas", json!([null, 5]), field("quotas")),
        ("allowed", json!([["GET", "/"]]), field("allowed[0]")),
        ("rate_limits", json!([1, 2, 3]), field("rate_limits")),
        ("credits", json!([5, "day"]), field("credits")),
    ]
}

fn filter_body_probes(f: &Fixture) -> Vec<Probe> {
    let mut probes = Vec::new();
    let lease = json!({"instance": "i_h", "grant": [{"lease": "i_h.a1", "key_id": f.key_id,
                                                     "meter": "calls", "want": 5}]});
    let mut changes = bad_texts("instance", "instance");
    changes.push(("instance", json!(""), field("instance")));
    changes.extend(bad_counts("grant.0.want", "grant[0].want"));
    changes.extend(bad_counts("grant.0.min", "grant[0].min"));
    changes.push(("grant.0.meter", json!("bytes"), field("grant[0].meter")));
    changes.push(("grant.0.meter", json!(1), field("grant[0].meter")));
    changes.extend(bad_texts("grant.0.key_id", "grant[0].key_id"));
    changes.extend(bad_texts("grant.0.lease", "grant[0].lease"));
    changes.push(("grant.0.color", json!("red"), field("grant[0].color")));
    changes.push(("grant", json!({"a": 1}), field("grant")));
    // Entries by position, complete and valid but for being arrays.
    changes.push((
        "grant",
        json!([["i_h.a1", f.key_id, "calls", 5]]),
        field("grant[0]"),
    ));
    changes.push(("settle", json!([["i_h.a1", 1]]), field("settle[0]")));
    changes.push((
        "settle",
        json!([{"lease": "i_h.a1", "spent": "__num:1e400__"}]),
        field("settle[0].spent"),
    ));
    changes.push((
        "settle",
        json!([{"lease": "i_h.a1", "spent": -1}]),
        field("settle[0].spent"),
    ));
    changes.push((
        "settle",
        json!([{"lease": "i_h.\u{0}", "spent": 1}]),
        field("settle[0].lease"),
    ));
    // Strict: a lease is a reservation, and a member this control plane does not know could
    // change what is reserved (README, "API").
    changes.push(("extra", json!(1), field("extra")));
    probes.extend(json_probes(
        "/v1/filter/leases",
        Method::POST,
        "/v1/filter/leases",
        Who::Filter,
        &lease,
        changes,
    ));

    // Ingest: a batch that is not `{"records": [...]}` is a 400; within a good batch, each bad
    // record is rejected on its own (200), naming its field, and nothing of it is stored.
    for p in json_probes(
        "/v1/filter/usage",
        Method::POST,
        "/v1/filter/usage",
        Who::Filter,
        &json!({"records": []}),
        vec![
            ("records", json!({"a": 1}), Expect::Mentions("records")),
            (
                "records",
                json!("x".repeat(MB)),
                Expect::Mentions("records"),
            ),
            ("records", json!(vec![json!({}); 10_001]), field("records")),
        ],
    ) {
        probes.push(Probe {
            who: Who::Filter,
            ..p
        });
    }
    let key = json!({"id": f.key_id, "workspace_id": f.ws});
    let good = record(&key, "r-hostile", 1_795_465_967_031);
    let bad_records: Vec<(&str, Value, &'static str)> = vec![
        ("timestamp", num("1e400"), "timestamp"),
        ("timestamp", num("18446744073709551616"), "timestamp"),
        ("timestamp", json!(-1), "timestamp"),
        ("credits", num("18446744073709551616"), "credits"),
        ("credits", json!(-5), "credits"),
        ("response_code", json!(-1), "response_code"),
        ("duration_ms", num("1e400"), "duration_ms"),
        ("request_id", json!("r\u{0}"), "request_id"),
        ("request_id", huge(), "request_id"),
        ("key_id", huge(), "key_id"),
        ("endpoint", json!("/a\u{0}"), "endpoint"),
        ("client_ip", json!("1\u{0}"), "client_ip"),
        ("method", json!("G\u{0}T"), "method"),
        ("admitted", json!("yes"), "admitted"),
        ("status", json!(3), "status"),
        ("key_id", json!("key_nope"), "key_id"),
    ];
    // A record by position, each member in the order of the record's fields.
    let members = [
        "request_id",
        "timestamp",
        "key_id",
        "workspace_id",
        "method",
        "endpoint",
        "resource_id",
        "response_code",
        "status",
        "duration_ms",
        "client_ip",
        "credits",
        "admitted",
        "instance",
    ];
    let positional: Vec<Value> = members.iter().map(|m| good[*m].clone()).collect();
    probes.push(Probe {
        route: "/v1/filter/usage",
        method: Method::POST,
        path: "/v1/filter/usage".to_owned(),
        who: Who::Filter,
        body: Some(body_text(&json!({ "records": [positional] }))),
        expect: Expect::RejectedRecord("record"),
    });
    for (member, value, name) in bad_records {
        let body = json!({"records": [with_at(&good, member, value)]});
        probes.push(Probe {
            route: "/v1/filter/usage",
            method: Method::POST,
            path: "/v1/filter/usage".to_owned(),
            who: Who::Filter,
            body: Some(body_text(&body)),
            expect: Expect::RejectedRecord(name),
        });
    }
    probes
}

/// Query strings no route may take.
fn query_probes(f: &Fixture) -> Vec<Probe> {
    let mut probes = Vec::new();
    let get = |route: &'static str, path: String, query: String, who: Who, expect: Expect| Probe {
        route,
        method: Method::GET,
        path: format!("{path}?{query}"),
        who,
        body: None,
        expect,
    };
    let long = "r".repeat(10_000);
    let usage_cases: Vec<(String, Expect)> = vec![
        ("from=yesterday".into(), field("from")),
        ("from=%FF%FE".into(), field("from")),
        ("from=1e400".into(), field("from")),
        ("to=2027-02-30T00:00:00Z".into(), field("to")),
        ("to=%00".into(), field("to")),
        ("interval=7m".into(), field("interval")),
        ("interval=%00".into(), field("interval")),
        (
            "from=0001-01-01T00:00:00Z&to=9999-12-31T23:59:59Z&interval=1m".into(),
            field("interval"),
        ),
        (
            "from=0001-01-01T00:00:00Z&to=9999-12-31T23:59:59Z".into(),
            field("from"),
        ),
        (
            "from=2027-01-02T00:00:00Z&to=2027-01-01T00:00:00Z".into(),
            field("from"),
        ),
        ("external_id=a%00b".into(), field("external_id")),
        ("external_id=has%20space".into(), field("external_id")),
        (format!("external_id={long}"), field("external_id")),
        ("from=a&from=b".into(), Expect::Refused),
    ];
    for (route, path) in [
        (
            "/v1/workspaces/{workspace_id}/usage",
            format!("/v1/workspaces/{}/usage", f.ws),
        ),
        (
            "/v1/keys/{key_id}/usage",
            format!("/v1/keys/{}/usage", f.key_id),
        ),
    ] {
        for (query, expect) in &usage_cases {
            probes.push(get(
                route,
                path.clone(),
                query.clone(),
                Who::Admin,
                expect.clone(),
            ));
        }
    }
    let mut log_cases: Vec<(String, Expect)> = vec![
        ("status=weird".into(), field("status")),
        ("method=%00".into(), field("method")),
        ("method=GET%20X".into(), field("method")),
        ("response_code=1e400".into(), field("response_code")),
        ("response_code=-1".into(), field("response_code")),
        (
            "response_code=99999999999999999999".into(),
            field("response_code"),
        ),
        ("key_id=key_%00".into(), field("key_id")),
        ("workspace_id=%00".into(), field("workspace_id")),
        (format!("resource_id={long}"), field("resource_id")),
        ("resource_id=a%00".into(), field("resource_id")),
        ("endpoint=/a%00".into(), field("endpoint")),
        (format!("endpoint=/{long}"), field("endpoint")),
        ("external_id=a%00".into(), field("external_id")),
        ("from=bad".into(), field("from")),
        ("to=%FF".into(), field("to")),
        (
            "from=2027-01-02T00:00:00Z&to=2027-01-01T00:00:00Z".into(),
            field("from"),
        ),
        ("status=a&status=b".into(), Expect::Refused),
    ];
    for (query, expect) in &log_cases {
        probes.push(get(
            "/v1/requests.csv",
            "/v1/requests.csv".into(),
            query.clone(),
            Who::Admin,
            expect.clone(),
        ));
    }
    // Only the JSON log pages: the export ignores `limit` and `cursor`.
    log_cases.extend([
        ("limit=0".into(), field("limit")),
        ("limit=501".into(), field("limit")),
        ("limit=-1".into(), field("limit")),
        ("limit=99999999999999999999".into(), field("limit")),
        ("cursor=zz".into(), field("cursor")),
        ("cursor=%00".into(), field("cursor")),
        (
            "cursor=ffffffffffffffff.ffffffffffffffff".into(),
            field("cursor"),
        ),
        ("cursor=-1.-1".into(), field("cursor")),
        (format!("cursor={long}"), field("cursor")),
    ]);
    for (query, expect) in log_cases {
        probes.push(get(
            "/v1/requests",
            "/v1/requests".into(),
            query,
            Who::Admin,
            expect,
        ));
    }
    for (query, expect) in [
        ("external_id=a%00".to_owned(), field("external_id")),
        (format!("external_id={long}"), field("external_id")),
        ("external_id=a&external_id=b".to_owned(), Expect::Refused),
    ] {
        probes.push(get(
            "/v1/workspaces/{workspace_id}/keys",
            format!("/v1/workspaces/{}/keys", f.ws),
            query,
            Who::Admin,
            expect,
        ));
    }
    let lookup = format!("/v1/filter/keys/{}", f.hash);
    for (query, expect) in [
        ("lease=i_h.a1&want=1e400".to_owned(), field("want")),
        ("lease=i_h.a1&want=-1".to_owned(), field("want")),
        ("lease=i_h.a1&want=0".to_owned(), field("want")),
        (
            "lease=i_h.a1&want=18446744073709551616".to_owned(),
            field("want"),
        ),
        ("want=5".to_owned(), field("want")),
        ("lease=%00".to_owned(), field("lease")),
        ("lease=i_h.%00".to_owned(), field("lease")),
        (format!("lease=i_h.{long}"), field("lease")),
        ("lease=a&lease=b".to_owned(), Expect::Refused),
    ] {
        probes.push(get(
            "/v1/filter/keys/{hash}",
            lookup.clone(),
            query,
            Who::Filter,
            expect,
        ));
    }
    // Routes without parameters ignore any query string.
    for route in [
        "/healthz",
        "/v1/openapi.json",
        "/v1/whoami",
        "/v1/plans",
        "/v1/workspaces",
        "/v1/workspaces/{workspace_id}",
        "/v1/workspaces/{workspace_id}/console-tokens",
        "/v1/keys/{key_id}",
    ] {
        probes.push(get(
            route,
            f.path(route),
            "%FF=%00&x=1e400&&=&cursor=zz".into(),
            Who::Admin,
            Expect::Ignored,
        ));
    }
    probes
}

/// Junk in every `{…}` segment, for every method of the route.
fn path_probes(f: &Fixture) -> Vec<Probe> {
    let long = "x".repeat(5_000);
    let junk: Vec<(String, Option<&str>)> = vec![
        ("%00".into(), None),
        ("key_%00".into(), None),
        ("%FF".into(), Some("invalid UTF-8")),
        ("%C0%AF".into(), Some("invalid UTF-8")),
        ("a%2Fb".into(), None),
        ("%2E%2E".into(), None),
        ("k%20y".into(), None),
        ("%E2%80%AE".into(), None),
        ("%25".into(), None),
        ("1e400".into(), None),
        ("-1".into(), None),
        ("'%3B%20DROP%20TABLE%20api_keys%3B--".into(), None),
        (long, None),
    ];
    let mut probes = Vec::new();
    for (route, methods) in ROUTES {
        let Some(start) = route.find('{') else {
            continue;
        };
        if route.starts_with("/v1/ext-authz") {
            continue;
        }
        let name = route[start + 1..route.find('}').unwrap()].to_owned();
        for method in methods.iter() {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            for (segment, kind) in &junk {
                let path = f
                    .path(&route.replace(&format!("{{{name}}}"), segment))
                    .replace("{hash}", segment);
                let expect = match kind {
                    Some(_) => Expect::Field(name.clone()),
                    None => Expect::Refused,
                };
                let body = match method {
                    Method::POST | Method::PATCH => Some(
                        body_text(&json!({"alias": "j", "name": "j", "plan": "pro"}))
                            .into_iter()
                            .collect(),
                    ),
                    _ => None,
                };
                probes.push(Probe {
                    route,
                    method: method.clone(),
                    path,
                    who: if route.starts_with("/v1/filter") {
                        Who::Filter
                    } else {
                        Who::Admin
                    },
                    body,
                    expect,
                });
            }
        }
    }
    probes
}

/// Junk credentials on every route that takes one, and junk at the ext_authz check.
fn token_probes(f: &Fixture) -> Vec<Probe> {
    let mut probes = Vec::new();
    let bad: [Who; 5] = [
        Who::Nobody,
        Who::Header("Basic YWRtaW46YWRtaW4="),
        Who::Header("Bearer"),
        Who::Header("Bearer tgc_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Who::Header("bearer  test-admin-token-not"),
    ];
    for (route, methods) in ROUTES {
        if without_token(route) {
            continue;
        }
        for method in methods.iter() {
            for who in bad {
                probes.push(Probe {
                    route,
                    method: Method::from_bytes(method.as_bytes()).unwrap(),
                    path: f.path(route),
                    who,
                    body: Some(b"{}".to_vec()),
                    expect: Expect::Refused,
                });
            }
        }
    }
    for route in ["/v1/ext-authz/check", "/v1/ext-authz/check/"] {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            probes.push(Probe {
                route,
                method,
                path: route.to_owned(),
                who: Who::Nobody,
                body: Some(b"\x00\xff not json".to_vec()),
                expect: Expect::Refused,
            });
        }
    }
    for path in ["%00/%FF", "..%2F..%2Fv1/keys", &"seg/".repeat(2_000)] {
        probes.push(Probe {
            route: "/v1/ext-authz/check/{*rest}",
            method: Method::PUT,
            path: format!("/v1/ext-authz/check/{path}"),
            who: Who::Header("Bearer tg_notakey"),
            body: None,
            expect: Expect::Refused,
        });
    }
    probes
}

async fn send(srv: &TestServer, p: &Probe) -> (StatusCode, Value) {
    let mut req = srv.request(p.method.clone(), &p.path);
    req = match p.who {
        Who::Admin => req.bearer_auth(ADMIN),
        Who::Filter => req.bearer_auth(FILTER),
        Who::Nobody => req,
        Who::Header(value) => req.header("authorization", value),
    };
    if let Some(body) = &p.body {
        req = req
            .header("content-type", "application/json")
            .body(body.clone());
    }
    let answer = srv.answer(req).await;
    let (status, bytes) = (answer.status, answer.bytes);
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::String(format!(
            "NOT JSON: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        )))
    };
    (status, value)
}

/// `None` when the answer is what the probe expects, else what is wrong.
fn judge(p: &Probe, status: StatusCode, body: &Value) -> Option<String> {
    let error = body.get("error").and_then(Value::as_str);
    let json_error = || error.is_some() || body.get("code").is_some();
    if status.is_server_error() {
        return Some(format!("{status}: {body}"));
    }
    match &p.expect {
        Expect::Ignored => {
            (status.is_client_error() && !json_error()).then(|| format!("{status}: {body}"))
        }
        Expect::RejectedRecord(name) => {
            let rejected = body["rejected"][0]["error"].as_str().unwrap_or("");
            let ok = status == StatusCode::OK
                && body["accepted"] == 0
                && rejected.starts_with(&format!("{name}:"));
            (!ok).then(|| format!("{status}: {body}"))
        }
        _ if !status.is_client_error() || !json_error() => Some(format!("{status}: {body}")),
        Expect::Refused => None,
        Expect::Mentions(name) => {
            let ok = error.is_some_and(|e| e.contains(name));
            (!ok).then(|| format!("{status}: {body}"))
        }
        Expect::Field(name) => {
            let ok = body["field"].as_str() == Some(name.as_str())
                && error.is_some_and(|e| e.starts_with(name.as_str()));
            (!ok).then(|| format!("{status}: {body}"))
        }
    }
}

fn shortened(text: String) -> String {
    let mut end = 400.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end < text.len() {
        format!("{}…", &text[..end])
    } else {
        text
    }
}

#[tokio::test]
async fn hostile_input_is_a_clear_4xx_on_every_route_and_writes_nothing() {
    let srv = TestServer::start().await;
    let f = fixture(&srv).await;
    let before = snapshot(&srv).await;
    let mut probes = admin_body_probes(&f);
    probes.extend(filter_body_probes(&f));
    probes.extend(query_probes(&f));
    probes.extend(path_probes(&f));
    probes.extend(token_probes(&f));

    let mut failures = Vec::new();
    let mut reached = BTreeSet::new();
    for p in &probes {
        let (status, body) = send(&srv, p).await;
        if let Some(wrong) = judge(p, status, &body) {
            let sent = p
                .body
                .as_ref()
                .map(|b| shortened(String::from_utf8_lossy(b).into_owned()));
            failures.push(format!(
                "{} {} ({:?}) body {:?} expected {:?}: got {}",
                p.method,
                shortened(p.path.clone()),
                p.who,
                sent,
                p.expect,
                shortened(wrong)
            ));
        }
        reached.insert((p.route, p.method.as_str().to_owned()));
    }
    assert!(
        failures.is_empty(),
        "{} of {} probes:\n{}",
        failures.len(),
        probes.len(),
        failures.join("\n")
    );
    // Every route and method of the list got hostile input (ext_authz's `ANY` by any method).
    for (route, methods) in ROUTES {
        for method in methods.iter() {
            let hit = if *method == "ANY" {
                reached.iter().any(|(r, _)| *r == route)
            } else {
                reached.contains(&(route, (*method).to_owned()))
            };
            assert!(hit, "no probe for {method} {route}");
        }
    }
    assert_eq!(snapshot(&srv).await, before, "a refused request wrote");
}

#[tokio::test]
async fn filter_bodies_tolerate_unknown_members_where_ignoring_them_is_safe() {
    let srv = TestServer::start().await;
    let f = fixture(&srv).await;
    // A newer filter's extra member in a usage record, or in the batch, is ignored: records
    // are analytics, and a rejected batch would lose them.
    let key = json!({"id": f.key_id, "workspace_id": f.ws});
    let mut r = record(&key, "r-newer", 1_795_465_967_031);
    r["upstream_region"] = json!("eu");
    let body = json!({"records": [r], "compression": "none"}).to_string();
    let (status, answer) = srv
        .send(Method::POST, "/v1/filter/usage", Some(FILTER), Some(&body))
        .await;
    assert_eq!(
        (status.as_u16(), &answer["accepted"]),
        (200, &json!(1)),
        "{answer}"
    );
    // And the lookup ignores query parameters it does not know.
    let (status, _) = srv
        .send(
            Method::GET,
            &format!("/v1/filter/keys/{}?instance=i_1&since_ms=5&x=%00", f.hash),
            Some(FILTER),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

/// One raw HTTP/1.1 request: `head` (without the blank line), then no body bytes at all
/// (`endless: false`: the declared length is never sent) or chunks without end. The status and
/// JSON body of the answer, which must come within 20 s.
async fn raw(srv: &TestServer, head: &str, endless: bool) -> (u16, Value) {
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(format!("{head}\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        if endless {
            let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
            // At most 256 MiB: far past every limit.
            for _ in 0..4096 {
                if wr.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        // Kept open: the server must answer without the body it was promised.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(wr);
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if answer.len() >= end + 4 + length {
                    return;
                }
            }
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "{head}: no answer within 20 s");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{head}: {text}"));
    let (answer_head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    check_raw(head, status, answer_head, body);
    let value = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status, value)
}

/// A raw answer held to the API's description, as every answer the client receives is.
fn check_raw(request_head: &str, status: u16, answer_head: &str, body: &str) {
    let mut request_line = request_head.split_whitespace();
    let method = Method::from_bytes(request_line.next().unwrap().as_bytes()).unwrap();
    let path = request_line.next().unwrap();
    let mut headers = HeaderMap::new();
    for line in answer_head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).unwrap(),
                HeaderValue::from_str(value.trim()).unwrap(),
            );
        }
    }
    let status = StatusCode::from_u16(status).unwrap();
    crate::openapi_check::check(&method, path, status, &headers, body.as_bytes());
}

/// The routes anyone may call: health, the API's description and the ext_authz check.
fn without_token(route: &str) -> bool {
    route == "/healthz" || route == "/v1/openapi.json" || route.starts_with("/v1/ext-authz")
}

fn token_for(route: &str) -> Option<&'static str> {
    if without_token(route) {
        None
    } else if route.starts_with("/v1/filter") {
        Some(FILTER)
    } else {
        Some(ADMIN)
    }
}

fn request_head(method: &str, path: &str, token: Option<&str>, framing: &str) -> String {
    let auth = token.map_or(String::new(), |t| format!("\r\nAuthorization: Bearer {t}"));
    format!("{method} {path} HTTP/1.1{auth}\r\nContent-Type: application/json\r\n{framing}")
}

#[tokio::test]
async fn a_declared_length_past_the_limit_is_413_before_the_body_is_read() {
    let srv = TestServer::start().await;
    let f = fixture(&srv).await;
    let before = snapshot(&srv).await;
    for (route, methods) in ROUTES {
        if route.starts_with("/v1/ext-authz") {
            continue;
        }
        for method in methods.iter() {
            for length in [body_limit_of(route) + 1, 1 << 40] {
                let head = request_head(
                    method,
                    &f.path(route),
                    token_for(route),
                    &format!("Content-Length: {length}"),
                );
                let (status, body) = raw(&srv, &head, false).await;
                assert_eq!(
                    (status, &body),
                    (413, &json!({"error": "request body is too large"})),
                    "{method} {route} with {length} bytes declared"
                );
            }
        }
    }
    // A declared length at the limit is read (and refused for what it holds, not its size).
    let head = request_head(
        "POST",
        "/v1/workspaces",
        Some(ADMIN),
        &format!("Content-Length: {MAX_BODY}"),
    );
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(&vec![b' '; MAX_BODY]).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.ok();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // The ext_authz check never reads a body: the client's own upload size is not refused.
    let head = request_head(
        "POST",
        "/v1/ext-authz/check/v1/upload",
        None,
        &format!("Content-Length: {}", 1 << 30),
    );
    let (status, body) = raw(&srv, &head, false).await;
    assert_eq!((status, &body["code"]), (401, &json!("missing_key")));
    assert_eq!(snapshot(&srv).await, before);
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_at_the_limit() {
    let srv = TestServer::start().await;
    let f = fixture(&srv).await;
    let before = snapshot(&srv).await;
    for (method, route) in [
        ("POST", "/v1/workspaces"),
        ("POST", "/v1/workspaces/{workspace_id}/keys"),
        ("PATCH", "/v1/keys/{key_id}"),
        ("POST", "/v1/keys/{key_id}/rotate"),
        ("POST", "/v1/filter/leases"),
        ("POST", "/v1/filter/usage"),
    ] {
        let head = request_head(
            method,
            &f.path(route),
            token_for(route),
            "Transfer-Encoding: chunked",
        );
        let (status, body) = raw(&srv, &head, true).await;
        assert_eq!(
            (status, &body),
            (413, &json!({"error": "request body is too large"})),
            "{method} {route}"
        );
    }
    assert_eq!(snapshot(&srv).await, before);
}
