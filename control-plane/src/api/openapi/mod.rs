//! The REST API described as OpenAPI 3.1, served at `GET /v1/openapi.json` and written to
//! `docs/openapi.json` by `tollgate openapi` (`make openapi`); a test fails when the two differ.
//! Built here rather than derived from the handlers' types: most request members are read raw
//! (to name the member at fault), so their types say nothing a client could use, and the limits
//! a client needs are the validation's constants, which `request_bodies.rs` uses directly. The API suite
//! checks every answer it receives against this document (`control-plane/tests/it/openapi_check.rs`).

mod paths;
mod request_bodies;
mod schemas;

use std::sync::LazyLock;

use axum::Json;
use serde_json::{json, Value};

use crate::config::DEFAULT_LISTEN;

pub use paths::EVERY_METHOD;

/// The document, built once.
static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

/// `GET /v1/openapi.json` (no token: it says nothing about any workspace or key).
pub async fn serve() -> Json<&'static Value> {
    Json(&DOCUMENT)
}

/// The whole description.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Tollgate control plane",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "API keys, quotas, credits and usage analytics enforced at the Envoy edge.",
            "description": "The admin API (workspaces, plans, keys, console tokens, usage analytics, the request log), the Envoy filter's endpoints (key lookup, budget leases, usage ingest) and the check of Envoy's ext_authz filter. Every error is `{\"error\": ...}`, with `field` naming the member or query parameter at fault when there is one. `docs/protocol.md` describes the filter's endpoints in prose; `docs/analytics-api.md` the analytics.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "servers": [{
            "url": format!("http://{DEFAULT_LISTEN}"),
            "description": "`tollgate serve` on its default `--listen` address.",
        }],
        "tags": [
            { "name": "workspaces", "description": "A customer of the API and its plan." },
            { "name": "plans", "description": "Key counts and rate limits a workspace is on." },
            { "name": "keys", "description": "API keys: quotas, rate limits, credit budgets, allowed endpoints, owner." },
            { "name": "console tokens", "description": "A workspace's own token for this API: sees only its workspace." },
            { "name": "analytics", "description": "Usage reports and the request log." },
            { "name": "filter", "description": "The Envoy filter's calls, with the filter token." },
            { "name": "ext_authz", "description": "The check Envoy's ext_authz filter asks, without a token." },
            { "name": "service", "description": "Health and this document." },
        ],
        "paths": paths::paths(),
        "components": {
            "schemas": schemas::schemas(),
            "responses": paths::responses(),
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The admin token (`tollgate serve` writes it to `<data dir>/admin-token`), or a workspace's console token (`tgc_...`), which sees only its workspace: anything else answers 404, and admin-only actions 403.",
                },
                "filterToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The filter token (`<data dir>/filter-token`), which the Envoy filter is configured with.",
                },
            },
        },
    })
}

/// The document as `docs/openapi.json` holds it: pretty, with a final newline.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `docs/openapi.json` is what the server serves: regenerate it with `make openapi`.
    #[test]
    fn docs_openapi_json_is_the_served_document() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == document_text(),
            "docs/openapi.json differs from the document the server serves: run `make openapi`"
        );
    }

    /// Every route and method of the router is described, and nothing else.
    #[test]
    fn every_route_and_method_is_described() {
        let routed: BTreeSet<(String, String)> = crate::server::api_routes()
            .into_iter()
            .flat_map(|(path, methods)| {
                // axum's catch-all `{*rest}` is OpenAPI's `{path}` (which says it holds slashes).
                let path = path.replace("{*rest}", "{path}");
                methods.into_iter().flat_map(move |m| {
                    let methods: Vec<String> = if m == "ANY" {
                        EVERY_METHOD.iter().map(|m| (*m).to_owned()).collect()
                    } else {
                        vec![m.to_ascii_lowercase()]
                    };
                    let path = path.clone();
                    methods.into_iter().map(move |m| (path.clone(), m))
                })
            })
            .collect();
        let doc = document();
        let described: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|m| EVERY_METHOD.contains(&m.as_str()))
                    .map(move |m| (path.clone(), m.clone()))
            })
            .collect();
        let missing: Vec<_> = routed.difference(&described).collect();
        let extra: Vec<_> = described.difference(&routed).collect();
        assert!(
            missing.is_empty(),
            "routes without a description: {missing:?}"
        );
        assert!(extra.is_empty(), "described but not routed: {extra:?}");
    }

    /// Every `$ref` points at something in the document.
    #[test]
    fn every_reference_resolves() {
        fn refs(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(list) => list.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50, "{}", found.len());
        for r in found {
            let pointer = r.strip_prefix('#').unwrap();
            assert!(doc.pointer(pointer).is_some(), "{r} points at nothing");
        }
    }
}
