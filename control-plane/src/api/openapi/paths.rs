//! `paths` of the API's description: every route of `server::api_routes()` (a test holds the two
//! to the same routes and methods), each operation with its token, parameters, body, answers and
//! errors. The errors every operation of a kind can answer are added by the kind ([`Op::admin`],
//! [`Op::body`], ...) so that no operation forgets one.

use serde_json::{json, Map, Value};

use super::schemas::reference;
use crate::api::analytics::{REQUESTS_LIMIT_DEFAULT, REQUESTS_LIMIT_MAX};
use crate::api::ext_authz::{
    EXTERNAL_ID_HEADER, KEY_ID_HEADER, PATH_PREFIX as EXT_AUTHZ, WORKSPACE_ID_HEADER,
};
use crate::domain::lease::MAX_WANT;
use crate::domain::{UsageStatus, INTERVALS};

/// The methods of a route that answers any (`ANY` in `server::api_routes()`), as OpenAPI names
/// them.
pub const EVERY_METHOD: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The errors, as `components.responses`, by status.
const ERRORS: [(u16, &str, &str); 8] = [
    (400, "BadRequest", "Bad input: `field` names the member or query parameter at fault, when there is one."),
    (401, "Unauthorized", "The token is missing, malformed or not this route's."),
    (403, "Forbidden", "A console token asked for an admin-only action."),
    (404, "NotFound", "No such resource, or not in the console token's workspace."),
    (409, "Conflict", "The change conflicts with what is stored (a taken name, the plan's key limit, a key with request history)."),
    (413, "PayloadTooLarge", "The body is over the route's limit (1 MiB; 16 MiB for usage ingest), refused before it is read."),
    (500, "Internal", "An internal error, logged with its cause."),
    (503, "Unavailable", "The database cannot take writes for now (its disk is full): retry after `Retry-After` seconds."),
];

/// `components.responses`: the errors and the ext_authz check's answers.
pub fn responses() -> Map<String, Value> {
    let mut responses = error_responses();
    responses.extend(ext_authz_responses());
    responses
}

fn error_responses() -> Map<String, Value> {
    ERRORS
        .iter()
        .map(|&(status, name, description)| {
            let mut response = json!({
                "description": description,
                "content": { "application/json": { "schema": reference("Error") } },
            });
            match status {
                401 => {
                    response["headers"] = json!({ "WWW-Authenticate": {
                        "description": "`Bearer`.",
                        "required": true,
                        "schema": { "type": "string" },
                    } });
                }
                503 => {
                    response["headers"] = json!({ "Retry-After": {
                        "description": "Seconds to wait before retrying.",
                        "required": true,
                        "schema": { "type": "integer", "minimum": 1 },
                    } });
                }
                _ => {}
            }
            (name.to_owned(), response)
        })
        .collect()
}

/// One operation as it is built.
struct Op {
    value: Value,
}

impl Op {
    /// Every route has a body limit, GETs too (a body sent with one past it is refused): 413.
    fn new(id: &str, tag: &str, summary: &str) -> Self {
        Self {
            value: json!({
                "operationId": id,
                "tags": [tag],
                "summary": summary,
                "parameters": [],
                "responses": {},
            }),
        }
        .errors(&[413])
    }

    fn describe(mut self, text: &str) -> Self {
        self.value["description"] = json!(text);
        self
    }

    /// With the admin (or console) token.
    fn admin(self) -> Self {
        self.secured("adminToken")
    }

    /// With the filter token.
    fn filter(self) -> Self {
        self.secured("filterToken")
    }

    fn secured(mut self, scheme: &str) -> Self {
        self.value["security"] = json!([{ scheme: [] }]);
        self.errors(&[401, 500, 503])
    }

    /// A `{name}` segment of the path: an id that is not found answers 404, one that is not
    /// UTF-8 once percent-decoded 400.
    fn id(self, name: &str, description: &str) -> Self {
        self.parameter(json!({
            "name": name,
            "in": "path",
            "required": true,
            "description": description,
            "schema": { "type": "string" },
        }))
        .errors(&[400, 404])
    }

    /// A query parameter; an empty value counts as absent.
    fn query(self, name: &str, schema: Value, description: &str) -> Self {
        self.parameter(json!({
            "name": name,
            "in": "query",
            "required": false,
            "description": description,
            "schema": schema,
        }))
        .errors(&[400])
    }

    fn parameter(mut self, parameter: Value) -> Self {
        if let Some(list) = self.value["parameters"].as_array_mut() {
            list.push(parameter);
        }
        self
    }

    /// A JSON body of `schema` (a JSON object; anything else is a 400).
    fn body(mut self, schema: &str, required: bool) -> Self {
        self.value["requestBody"] = json!({
            "required": required,
            "content": { "application/json": { "schema": reference(schema) } },
        });
        self.errors(&[400, 413])
    }

    /// Answers `status` with a JSON body of `schema`.
    fn answers(mut self, status: u16, schema: &str, description: &str) -> Self {
        self.value["responses"][status.to_string()] = json!({
            "description": description,
            "content": { "application/json": { "schema": reference(schema) } },
        });
        self
    }

    /// Answers 204 without a body.
    fn no_content(mut self, description: &str) -> Self {
        self.value["responses"]["204"] = json!({ "description": description });
        self
    }

    fn errors(mut self, statuses: &[u16]) -> Self {
        for status in statuses {
            if let Some(&(_, name, _)) = ERRORS.iter().find(|(s, _, _)| s == status) {
                self.value["responses"][status.to_string()] =
                    json!({ "$ref": format!("#/components/responses/{name}") });
            }
        }
        self
    }

    fn build(mut self) -> Value {
        // Parameters first, the way readers expect; none: no member.
        if self.value["parameters"]
            .as_array()
            .is_some_and(Vec::is_empty)
        {
            if let Some(op) = self.value.as_object_mut() {
                op.remove("parameters");
            }
        }
        self.value
    }
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn timestamp() -> Value {
    json!({ "type": "string", "format": "date-time" })
}

/// The query of a usage report: `from`, `to`, `interval`, `external_id`.
fn usage_report(op: Op) -> Op {
    let intervals: Vec<&str> = INTERVALS.iter().map(|(name, _)| *name).collect();
    op.query("from", timestamp(), "Start (RFC 3339); default: 24 hours before `to`. The range is aligned outwards to the interval.")
        .query("to", timestamp(), "End (RFC 3339); default: now.")
        .query("interval", json!({ "type": "string", "enum": intervals }), "Bucket size of `series`; default: chosen from the range.")
        .query("external_id", string(), "Only the keys of this owner.")
        .answers(200, "UsageReport", "Totals, breakdowns and a zero-filled series over the range.")
}

/// The filters of the request log (`GET /v1/requests`, and its CSV export).
fn request_filters(op: Op) -> Op {
    let statuses: Vec<&str> = UsageStatus::ALL.iter().map(|s| s.as_str()).collect();
    op.query("key_id", string(), "Only this key's requests.")
        .query("workspace_id", string(), "Only this workspace's requests.")
        .query("resource_id", string(), "Only requests for this resource.")
        .query(
            "external_id",
            string(),
            "Only the requests of this owner's keys.",
        )
        .query(
            "from",
            timestamp(),
            "Not before (RFC 3339); must be before `to`.",
        )
        .query("to", timestamp(), "Before (RFC 3339).")
        .query(
            "status",
            json!({ "type": "string", "enum": statuses }),
            "Only requests of this outcome.",
        )
        .query(
            "method",
            string(),
            "Only this HTTP method (case-insensitive).",
        )
        .query(
            "endpoint",
            string(),
            "Only this endpoint (the path without its query).",
        )
        .query(
            "response_code",
            json!({ "type": "integer", "minimum": 0, "maximum": 999 }),
            "Only this status code.",
        )
}

fn routes() -> Vec<(&'static str, &'static str, Op)> {
    let key_id = |op: Op| op.id("key_id", "The key's id (`key_...`).");
    let workspace_id = |op: Op| op.id("workspace_id", "The workspace's id (`ws_...`).");
    vec![
        (
            "/healthz",
            "get",
            Op::new("health", "service", "Health").answers(200, "Health", "The server answers."),
        ),
        (
            "/v1/openapi.json",
            "get",
            Op::new("openApiDocument", "service", "This document")
                .describe("OpenAPI 3.1; no token. The same as `docs/openapi.json` of the release.")
                .answers(200, "OpenApiDocument", "The document."),
        ),
        (
            "/v1/whoami",
            "get",
            Op::new("whoami", "console tokens", "Who the token is")
                .admin()
                .answers(200, "Whoami", "The admin, or a console token and its workspace."),
        ),
        (
            "/v1/plans",
            "get",
            Op::new("listPlans", "plans", "List plans")
                .admin()
                .answers(200, "PlanList", "Every plan, built-in and custom."),
        ),
        (
            "/v1/plans",
            "post",
            Op::new("createPlan", "plans", "Create a plan")
                .describe("Admin only. `null` (or absent) limits are unlimited.")
                .admin()
                .body("CreatePlan", true)
                .answers(201, "Plan", "The plan.")
                .errors(&[403, 409]),
        ),
        (
            "/v1/workspaces",
            "get",
            Op::new("listWorkspaces", "workspaces", "List workspaces")
                .describe("A console token lists its own workspace only.")
                .admin()
                .answers(200, "WorkspaceList", "The workspaces."),
        ),
        (
            "/v1/workspaces",
            "post",
            Op::new("createWorkspace", "workspaces", "Create a workspace")
                .describe("Admin only.")
                .admin()
                .body("CreateWorkspace", true)
                .answers(201, "Workspace", "The workspace.")
                .errors(&[403]),
        ),
        (
            "/v1/workspaces/{workspace_id}",
            "get",
            workspace_id(Op::new("getWorkspace", "workspaces", "Get a workspace").admin())
                .answers(200, "Workspace", "The workspace."),
        ),
        (
            "/v1/workspaces/{workspace_id}",
            "patch",
            workspace_id(
                Op::new("updateWorkspace", "workspaces", "Move a workspace to another plan")
                    .describe("Admin only: plans are what customers pay for.")
                    .admin(),
            )
            .body("UpdateWorkspace", true)
            .answers(200, "Workspace", "The workspace.")
            .errors(&[403]),
        ),
        (
            "/v1/workspaces/{workspace_id}/keys",
            "get",
            workspace_id(Op::new("listKeys", "keys", "List a workspace's keys").admin())
                .query("external_id", string(), "Only the keys of this owner.")
                .answers(200, "KeyList", "The keys (never their secrets)."),
        ),
        (
            "/v1/workspaces/{workspace_id}/keys",
            "post",
            workspace_id(
                Op::new("createKey", "keys", "Create a key")
                    .describe("The answer is the only one that carries the key's `secret`; only its hash and a display prefix are stored.")
                    .admin(),
            )
            .body("CreateKey", true)
            .answers(201, "Key", "The key, with its `secret`.")
            .errors(&[409]),
        ),
        (
            "/v1/workspaces/{workspace_id}/usage",
            "get",
            usage_report(workspace_id(
                Op::new("workspaceUsage", "analytics", "A workspace's usage").admin(),
            )),
        ),
        (
            "/v1/workspaces/{workspace_id}/console-tokens",
            "get",
            workspace_id(Op::new("listConsoleTokens", "console tokens", "List a workspace's console tokens").admin())
                .answers(200, "ConsoleTokenList", "The tokens (never the tokens themselves)."),
        ),
        (
            "/v1/workspaces/{workspace_id}/console-tokens",
            "post",
            workspace_id(
                Op::new("createConsoleToken", "console tokens", "Create a console token")
                    .describe("Admin only. The token is in this answer only; only its SHA-256 is stored.")
                    .admin(),
            )
            .body("CreateConsoleToken", true)
            .answers(201, "ConsoleToken", "The token, with `token`.")
            .errors(&[403]),
        ),
        (
            "/v1/console-tokens/{id}",
            "delete",
            Op::new("deleteConsoleToken", "console tokens", "Delete a console token")
                .describe("A console token may delete its own workspace's tokens, itself included.")
                .admin()
                .id("id", "The console token's id.")
                .no_content("Deleted."),
        ),
        (
            "/v1/keys/{key_id}",
            "get",
            key_id(Op::new("getKey", "keys", "Get a key").admin()).answers(200, "Key", "The key."),
        ),
        (
            "/v1/keys/{key_id}",
            "patch",
            key_id(Op::new("updateKey", "keys", "Change a key").admin())
                .body("UpdateKey", true)
                .answers(200, "Key", "The key as changed.")
                .errors(&[409]),
        ),
        (
            "/v1/keys/{key_id}",
            "delete",
            key_id(
                Op::new("deleteKey", "keys", "Delete a key")
                    .describe("Only a key without request history; deactivate the others (`active: false`).")
                    .admin(),
            )
            .no_content("Deleted.")
            .errors(&[409]),
        ),
        (
            "/v1/keys/{key_id}/rotate",
            "post",
            key_id(
                Op::new("rotateKey", "keys", "Rotate a key's secret")
                    .describe("A new secret, in this answer only; the old one keeps working for `grace_seconds`. The body is optional.")
                    .admin(),
            )
            .body("RotateKey", false)
            .answers(200, "Key", "The key, with its new `secret`."),
        ),
        (
            "/v1/keys/{key_id}/usage",
            "get",
            usage_report(key_id(Op::new("keyUsage", "analytics", "A key's usage").admin())),
        ),
        (
            "/v1/requests",
            "get",
            request_filters(
                Op::new("listRequests", "analytics", "The request log")
                    .describe("Newest first, one page at a time (follow `next_cursor`). A console token sees its workspace's requests only.")
                    .admin(),
            )
            .query(
                "limit",
                json!({ "type": "integer", "minimum": 1, "maximum": REQUESTS_LIMIT_MAX, "default": REQUESTS_LIMIT_DEFAULT }),
                "Records per page.",
            )
            .query("cursor", string(), "`next_cursor` of the previous page.")
            .answers(200, "RequestPage", "A page of the log."),
        ),
        ("/v1/requests.csv", "get", requests_csv()),
        (
            "/v1/filter/keys/{hash}",
            "get",
            Op::new("lookupKey", "filter", "Look a key up by its secret's hash")
                .describe("What the filter needs to decide about the key's requests (`docs/protocol.md`), with its first budget leases when `lease` is given.")
                .filter()
                .id("hash", "SHA-256 of the secret, 64 lower-case hex characters.")
                .query("lease", string(), "The base of the first leases' ids (`{instance}.{suffix}`): the lookup then grants `{base}c` (calls) and `{base}k` (credits).")
                .query("want", json!({ "type": "integer", "minimum": 1, "maximum": MAX_WANT }), "Units wanted per lease (with `lease` only).")
                .answers(200, "KeyLookup", "The key."),
        ),
        (
            "/v1/filter/usage",
            "post",
            Op::new("ingestUsage", "filter", "Store the filter's usage records")
                .describe("Idempotent by `request_id`: a record stored before counts as a duplicate, so the filter retries a batch until it is answered. A bad record is listed in `rejected` and never blocks the others; a body that is not `{\"records\": [...]}` is a 400 and the filter drops the batch.")
                .filter()
                .body("UsageBatch", true)
                .answers(200, "IngestAnswer", "What was stored."),
        ),
        (
            "/v1/filter/leases",
            "post",
            Op::new("lease", "filter", "Settle and grant budget leases")
                .describe("Settlements first, then grants, at the control plane's clock (`docs/protocol.md`, \"budget leases\").")
                .filter()
                .body("LeaseRequest", true)
                .answers(200, "LeaseAnswer", "What was settled and granted."),
        ),
    ]
}

fn requests_csv() -> Op {
    let mut op = request_filters(
        Op::new("exportRequests", "analytics", "The request log as CSV")
            .describe("Every record the filters select, newest first (no pages).")
            .admin(),
    );
    op.value["responses"]["200"] = json!({
        "description": "The records, one per line after a header line.",
        "headers": { "Content-Disposition": { "schema": { "type": "string" } } },
        "content": { "text/csv": { "schema": { "type": "string" } } },
    });
    op
}

/// The ext_authz check's answers, as `components.responses` (each of its 24 operations refers
/// to them).
fn ext_authz_responses() -> Map<String, Value> {
    let denial = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": reference("Denial") } },
        })
    };
    let mut responses = Map::new();
    responses.insert(
        "ExtAuthzAllowed".to_owned(),
        json!({
            "description": "The key may make this request.",
            "headers": {
                KEY_ID_HEADER: { "required": true, "schema": { "type": "string" } },
                WORKSPACE_ID_HEADER: { "required": true, "schema": { "type": "string" } },
                EXTERNAL_ID_HEADER: { "description": "When the key has an owner.", "schema": { "type": "string" } },
            },
        }),
    );
    responses.insert(
        "ExtAuthzDenied".to_owned(),
        denial("Missing, invalid, inactive or expired key."),
    );
    responses.insert(
        "ExtAuthzNotAllowed".to_owned(),
        denial("The key may not call this endpoint."),
    );
    responses
}

/// The ext_authz check: any method, under [`EXT_AUTHZ`] alone, with a slash, or with the
/// original path (which may hold slashes: Envoy appends the whole path).
fn ext_authz_item(original_path: bool) -> Value {
    let mut item = Map::new();
    item.insert("summary".to_owned(), json!("Check a request's API key"));
    item.insert(
        "description".to_owned(),
        json!("Envoy's ext_authz filter forwards the original method, the original path under this prefix and the `x-api-key` and `authorization` headers; no token. The key is checked as the filter checks it (format, checksum, rotation grace, inactive, expired, allowed endpoints); quotas, rate limits, credits and usage records are the filter's alone."),
    );
    if original_path {
        item.insert(
            "parameters".to_owned(),
            json!([{
                "name": "path",
                "in": "path",
                "required": true,
                "description": "The original request's path, slashes included.",
                "schema": { "type": "string" },
            }]),
        );
    }
    for method in EVERY_METHOD {
        let op = json!({
            "tags": ["ext_authz"],
            "responses": {
                "200": { "$ref": "#/components/responses/ExtAuthzAllowed" },
                "401": { "$ref": "#/components/responses/ExtAuthzDenied" },
                "403": { "$ref": "#/components/responses/ExtAuthzNotAllowed" },
                "500": { "$ref": "#/components/responses/Internal" },
                "503": { "$ref": "#/components/responses/Unavailable" },
            },
        });
        item.insert(method.to_owned(), op);
    }
    Value::Object(item)
}

pub fn paths() -> Map<String, Value> {
    let mut paths = Map::new();
    for (path, method, op) in routes() {
        let item = paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        item[method] = op.build();
    }
    paths.insert(EXT_AUTHZ.to_owned(), ext_authz_item(false));
    paths.insert(format!("{EXT_AUTHZ}/"), ext_authz_item(false));
    paths.insert(format!("{EXT_AUTHZ}/{{path}}"), ext_authz_item(true));
    paths
}
