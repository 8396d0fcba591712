//! Every answer the suite receives, held to the API's description (`GET /v1/openapi.json`, the
//! same as `docs/openapi.json`): its route and method are described, its status is one the
//! operation lists, the headers that status requires are there, and a JSON body matches the
//! status's schema (closed schemas: a member the description lacks fails too).
//!
//! Outside the description: `/metrics` and the dashboard under `/ui` (not the REST API). A path
//! no route matches must be the router's JSON 404, and a described path with a method it lacks
//! its JSON 405 (both answer on every path, so no operation lists them).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use jsonschema::Validator;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;

struct Description {
    document: Value,
    /// Compiled schemas by their JSON pointer in `document`.
    validators: Mutex<HashMap<String, Arc<Validator>>>,
}

static DESCRIPTION: LazyLock<Description> = LazyLock::new(|| Description {
    document: tollgate_control_plane::api::openapi::document(),
    validators: Mutex::new(HashMap::new()),
});

/// Panics, naming the request, unless the answer is as described.
pub fn check(method: &Method, path: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) {
    if let Err(why) = DESCRIPTION.verdict(method, path, status, headers, body) {
        panic!(
            "{method} {path} answered {status}, not as docs/openapi.json describes: {why}\nbody: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
    }
}

/// The described path `template` matches `path`: `{name}` is one segment, except the
/// ext_authz check's final `{path}`, which is the rest of the original path, slashes included.
fn matches(template: &str, path: &str) -> bool {
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some("{path}"), Some(_)) if template.starts_with("/v1/ext-authz/") => return true,
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// `text` as one token of a JSON pointer.
fn pointer_token(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

impl Description {
    fn verdict(
        &self,
        method: &Method,
        full_path: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), String> {
        let path = full_path.split('?').next().unwrap_or_default();
        if path == "/metrics" || path == "/ui" || path.starts_with("/ui/") {
            return Ok(());
        }
        let paths = self.document["paths"].as_object().unwrap();
        // The literal route before a templated one that also matches (`/v1/ext-authz/check/`).
        let template = paths
            .keys()
            .filter(|t| matches(t, path))
            .min_by_key(|t| t.matches('{').count());
        let Some(template) = template else {
            return self.router_error(StatusCode::NOT_FOUND, status, body);
        };
        let verb = method.as_str().to_ascii_lowercase();
        if paths[template].get(&verb).is_none() {
            return self.router_error(StatusCode::METHOD_NOT_ALLOWED, status, body);
        }
        let mut at = format!(
            "/paths/{}/{verb}/responses/{}",
            pointer_token(template),
            status.as_u16()
        );
        record_coverage(template, &verb, status);
        let mut response = self
            .document
            .pointer(&at)
            .ok_or_else(|| format!("{template} {verb} does not list {status}"))?;
        if let Some(reference) = response.get("$ref").and_then(Value::as_str) {
            at = reference.trim_start_matches('#').to_owned();
            response = self.document.pointer(&at).unwrap();
        }
        self.judge(&at, response, method, headers, body)
    }

    /// The router's own 404 or 405: a JSON error, described or not.
    fn router_error(
        &self,
        expected: StatusCode,
        status: StatusCode,
        body: &[u8],
    ) -> Result<(), String> {
        if status != expected {
            return Err(format!(
                "no described route answers this (expected the router's {expected})"
            ));
        }
        self.json_matches("/components/schemas/Error", body)
    }

    /// The answer against the described response at `at`.
    fn judge(
        &self,
        at: &str,
        response: &Value,
        method: &Method,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), String> {
        for (name, header) in response["headers"].as_object().into_iter().flatten() {
            if header["required"] == Value::Bool(true) && !headers.contains_key(name.as_str()) {
                return Err(format!("header {name} is missing"));
            }
        }
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return if body.is_empty() {
                Ok(())
            } else {
                Err("a body, where none is described".to_owned())
            };
        };
        // HEAD: the headers of GET, no body.
        if method == Method::HEAD {
            return Ok(());
        }
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if !content.contains_key(media) {
            return Err(format!(
                "content type {content_type:?}, described: {:?}",
                content.keys().collect::<Vec<_>>()
            ));
        }
        if media != "application/json" {
            return Ok(());
        }
        self.json_matches(&format!("{at}/content/application~1json/schema"), body)
    }

    /// `body` is JSON that the schema at `pointer` accepts.
    fn json_matches(&self, pointer: &str, body: &[u8]) -> Result<(), String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let validator = self.validator(pointer);
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{pointer}: {}", errors.join("; ")))
        }
    }

    fn validator(&self, pointer: &str) -> Arc<Validator> {
        let mut cache = self.validators.lock().unwrap();
        cache
            .entry(pointer.to_owned())
            .or_insert_with(|| {
                // The whole document as the root, so that its `#/components/...` resolve; its
                // members are not schema keywords, and `$ref` makes it the schema at `pointer`.
                let mut root = self.document.clone();
                root["$ref"] = Value::String(format!("#{}", percent_braces(pointer)));
                let validator = jsonschema::draft202012::options()
                    .should_validate_formats(true)
                    .build(&root)
                    .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}"));
                Arc::new(validator)
            })
            .clone()
    }
}

/// With `TOLLGATE_OPENAPI_COVERAGE=<file>`, a line `method path status` per answer, to see
/// which operations and statuses the suite reaches (`sort -u <file>`).
fn record_coverage(template: &str, verb: &str, status: StatusCode) {
    use std::io::Write;
    if let Some(file) = std::env::var_os("TOLLGATE_OPENAPI_COVERAGE") {
        if let Ok(mut out) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
        {
            // One write per line: the suite's tests answer in parallel.
            let line = format!("{verb} {template} {}\n", status.as_u16());
            let _ = out.write_all(line.as_bytes());
        }
    }
}

/// A JSON pointer as a URI fragment: `{` and `}` are not allowed there unescaped.
fn percent_braces(pointer: &str) -> String {
    pointer.replace('{', "%7B").replace('}', "%7D")
}

#[test]
fn templates_match_one_segment_and_the_ext_authz_rest() {
    assert!(matches("/v1/keys/{key_id}", "/v1/keys/key_1"));
    assert!(!matches("/v1/keys/{key_id}", "/v1/keys/"));
    assert!(!matches("/v1/keys/{key_id}", "/v1/keys/a/b"));
    assert!(matches(
        "/v1/ext-authz/check/{path}",
        "/v1/ext-authz/check/a/b/c"
    ));
    assert!(!matches(
        "/v1/ext-authz/check/{path}",
        "/v1/ext-authz/check"
    ));
}

#[test]
fn an_answer_the_description_lacks_fails() {
    let d = &*DESCRIPTION;
    let json = |text: &str| {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        (h, text.as_bytes().to_vec())
    };
    let (h, ok) = json(r#"{"status":"ok"}"#);
    assert!(d
        .verdict(&Method::GET, "/healthz", StatusCode::OK, &h, &ok)
        .is_ok());
    // A member the schema does not list, a status the operation does not list, a wrong type.
    let (h, extra) = json(r#"{"status":"ok","uptime":1}"#);
    assert!(d
        .verdict(&Method::GET, "/healthz", StatusCode::OK, &h, &extra)
        .is_err());
    assert!(d
        .verdict(&Method::GET, "/healthz", StatusCode::CREATED, &h, &ok)
        .is_err());
    let (h, plan) = json(
        r#"{"data":[{"name":"free","max_keys":"3","rate_limit_per_second":null,"rate_limit_per_minute":null}]}"#,
    );
    let plans = d.verdict(&Method::GET, "/v1/plans", StatusCode::OK, &h, &plan);
    assert!(plans.unwrap_err().contains("max_keys"));
    // The router's 404 and 405 are JSON errors.
    let (h, error) = json(r#"{"error":"not found"}"#);
    assert!(d
        .verdict(&Method::GET, "/nope", StatusCode::NOT_FOUND, &h, &error)
        .is_ok());
    assert!(d
        .verdict(&Method::GET, "/nope", StatusCode::OK, &h, &ok)
        .is_err());
    assert!(d
        .verdict(
            &Method::PUT,
            "/v1/plans",
            StatusCode::METHOD_NOT_ALLOWED,
            &h,
            &error
        )
        .is_ok());
}
