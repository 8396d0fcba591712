//! `components.schemas` of the API's description: every body the API answers, and those it reads
//! (`request_bodies.rs`). Answers are closed (`additionalProperties: false`, every member it always writes `required`), so the
//! API suite's check of every answer (`control-plane/tests/it/openapi_check.rs`) fails on a member
//! added to the code and not here. Limits are the validation's own constants, not copies.

use serde_json::{json, Map, Value};

use super::request_bodies::request_bodies;
use crate::api::analytics::{REQUESTS_LIMIT_DEFAULT, REQUESTS_LIMIT_MAX};
use crate::domain::validate::{META_MAX_BYTES, META_MAX_ENTRIES, META_NAME_MAX};
use crate::domain::{CreditPeriod, Meter, UsageStatus, INTERVALS};

/// `#/components/schemas/{name}`.
pub fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// An answer's object: exactly `properties`, of which `required` are always written.
fn closed(required: &[&str], properties: Value) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": properties,
    })
}

/// An answer's object whose every member is always written.
fn closed_all(properties: Value) -> Value {
    let required: Vec<&str> = properties
        .as_object()
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    closed(&required, properties.clone())
}

/// `schema` or `null`.
fn or_null(schema: Value) -> Value {
    json!({ "anyOf": [schema, { "type": "null" }] })
}

fn list_of(item: &str) -> Value {
    closed_all(json!({ "data": { "type": "array", "items": reference(item) } }))
}

fn count() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn timestamp() -> Value {
    json!({ "type": "string", "format": "date-time" })
}

fn epoch_ms() -> Value {
    json!({ "type": "integer", "description": "Milliseconds since the Unix epoch (UTC)." })
}

pub(super) fn names<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|&v| name(v)).collect()
}

/// An integer or `null` as answered: `null` is no limit.
fn limit_output() -> Value {
    json!({ "type": ["integer", "null"], "minimum": 1 })
}

pub fn schemas() -> Map<String, Value> {
    let periods = names(&CreditPeriod::ALL, CreditPeriod::as_str);
    let meters = names(&Meter::ALL, Meter::as_str);
    let statuses = names(&UsageStatus::ALL, UsageStatus::as_str);
    let intervals: Vec<&str> = INTERVALS.iter().map(|(name, _)| *name).collect();
    let entries = [
        (
            "Error",
            closed(
                &["error"],
                json!({
                    "error": { "type": "string", "description": "What went wrong, for a person (at most 512 bytes)." },
                    "field": { "type": "string", "description": "The member or query parameter at fault (`quotas.daily`, `allowed[0].path`, `cursor`), when the error is about one." },
                }),
            ),
        ),
        ("Health", closed_all(json!({ "status": { "const": "ok" } }))),
        (
            "Whoami",
            closed(
                &["kind"],
                json!({
                    "kind": { "type": "string", "enum": ["admin", "console"] },
                    "workspace_id": { "type": "string", "description": "A console token's workspace." },
                }),
            ),
        ),
        (
            "Plan",
            closed_all(json!({
                "name": { "type": "string" },
                "max_keys": { "type": ["integer", "null"], "description": "`null`: unlimited." },
                "rate_limit_per_second": { "type": ["integer", "null"] },
                "rate_limit_per_minute": { "type": ["integer", "null"] },
            })),
        ),
        ("PlanList", list_of("Plan")),
        (
            "Workspace",
            closed_all(json!({
                "id": { "type": "string" },
                "name": { "type": "string" },
                "plan": { "type": "string" },
                "created_at": timestamp(),
            })),
        ),
        ("WorkspaceList", list_of("Workspace")),
        (
            "ConsoleToken",
            closed(
                &["id", "workspace_id", "name", "created_at"],
                json!({
                    "id": { "type": "string" },
                    "workspace_id": { "type": "string" },
                    "name": { "type": "string" },
                    "created_at": timestamp(),
                    "token": { "type": "string", "description": "The token itself: only in the answer that created it (only its SHA-256 is stored)." },
                }),
            ),
        ),
        ("ConsoleTokenList", list_of("ConsoleToken")),
        (
            "Quotas",
            closed_all(json!({
                "total": limit_output(),
                "daily": limit_output(),
                "weekly": limit_output(),
                "monthly": limit_output(),
            })),
        ),
        (
            "RateLimits",
            closed_all(json!({
                "per_second": limit_output(),
                "per_minute": limit_output(),
                "per_hour": limit_output(),
            })),
        ),
        (
            "AllowRule",
            closed_all(json!({
                "method": { "type": "string", "description": "An HTTP method, or `*` for any." },
                "path": { "type": "string", "description": "`/a/b`, with `*` as a whole segment and a final `/**` for any rest." },
            })),
        ),
        (
            "CreditBudget",
            closed_all(json!({
                "limit": { "type": "integer", "minimum": 1 },
                "period": { "type": "string", "enum": periods },
            })),
        ),
        (
            "Meta",
            json!({
                "type": "object",
                "additionalProperties": { "type": "string" },
                "maxProperties": META_MAX_ENTRIES,
                "description": format!("Names of 1-{META_NAME_MAX} characters [a-z0-9_-] to strings, at most {META_MAX_BYTES} bytes in all; forwarded upstream by the filter."),
            }),
        ),
        (
            "Leased",
            closed_all(json!({
                "calls": count(),
                "credits": count(),
                "envoys": { "type": "integer", "minimum": 0, "description": "Envoy instances holding a live lease of the key." },
            })),
        ),
        (
            "Key",
            closed(
                &[
                    "id",
                    "workspace_id",
                    "alias",
                    "description",
                    "category",
                    "active",
                    "status",
                    "expires_at",
                    "quotas",
                    "allowed",
                    "created_at",
                    "last_used_at",
                    "calls_this_month",
                    "rate_limits",
                    "credits",
                    "credits_used",
                    "credits_remaining",
                    "external_id",
                    "meta",
                    "leased",
                    "prefix",
                    "hash",
                ],
                json!({
                    "id": { "type": "string" },
                    "workspace_id": { "type": "string" },
                    "alias": { "type": "string" },
                    "description": { "type": ["string", "null"] },
                    "category": { "type": "string" },
                    "active": { "type": "boolean" },
                    "status": { "type": "string", "enum": ["active", "inactive", "expired"] },
                    "expires_at": or_null(timestamp()),
                    "quotas": reference("Quotas"),
                    "allowed": { "type": "array", "items": reference("AllowRule"), "description": "Empty: every endpoint." },
                    "created_at": timestamp(),
                    "last_used_at": or_null(timestamp()),
                    "calls_this_month": count(),
                    "rate_limits": reference("RateLimits"),
                    "credits": or_null(reference("CreditBudget")),
                    "credits_used": { "type": "integer", "minimum": 0, "description": "Credits charged in the budget's current period (without a budget: by the admitted requests of the calendar month, UTC)." },
                    "credits_remaining": { "type": ["integer", "null"], "minimum": 0, "description": "`null` without a budget." },
                    "external_id": { "type": ["string", "null"] },
                    "meta": reference("Meta"),
                    "leased": reference("Leased"),
                    "prefix": { "type": "string", "description": "The secret's first characters, for display." },
                    "hash": { "type": "string", "pattern": "^[0-9a-f]{64}$", "description": "SHA-256 of the secret (hex)." },
                    "secret": { "type": "string", "description": "The key itself: only in the answer that created or rotated it, never again." },
                }),
            ),
        ),
        ("KeyList", list_of("Key")),
        (
            "UsageReport",
            closed_all(json!({
                "from": timestamp(),
                "to": timestamp(),
                "interval": { "type": "string", "enum": intervals },
                "totals": closed_all(json!({
                    "total": count(),
                    "completed": count(),
                    "failed": count(),
                    "rate_limited": count(),
                    "credits": { "type": "integer", "minimum": 0, "description": "Spent by admitted requests." },
                })),
                "by_method": { "type": "array", "items": closed_all(json!({
                    "method": { "type": "string" },
                    "count": count(),
                })) },
                "by_response_code": { "type": "array", "items": closed_all(json!({
                    "response_code": { "type": "integer", "minimum": 0, "maximum": 999 },
                    "count": count(),
                })) },
                "top_endpoints": { "type": "array", "maxItems": crate::domain::TOP_ENDPOINTS, "items": closed_all(json!({
                    "method": { "type": "string" },
                    "endpoint": { "type": "string" },
                    "count": count(),
                    "credits": count(),
                })) },
                "series": { "type": "array", "items": closed_all(json!({
                    "start": timestamp(),
                    "completed": count(),
                    "failed": count(),
                    "rate_limited": count(),
                })) },
            })),
        ),
        (
            "RequestRecord",
            closed_all(with_request_members(
                &statuses,
                json!({
                    "request_id": { "type": "string" },
                    "timestamp": timestamp(),
                    "credits": count(),
                }),
            )),
        ),
        (
            "RequestPage",
            closed_all(json!({
                "data": { "type": "array", "maxItems": REQUESTS_LIMIT_MAX, "items": reference("RequestRecord") },
                "next_cursor": { "type": ["string", "null"], "description": format!("Pass as `cursor` for the next page; `null` on the last. Pages hold `limit` records ({REQUESTS_LIMIT_DEFAULT} by default).") },
            })),
        ),
        (
            "Grant",
            closed_all(json!({
                "lease": { "type": "string" },
                "key_id": { "type": "string" },
                "meter": { "type": "string", "enum": meters },
                "units": count(),
                "ttl_ms": count(),
                "exhausted": {
                    "type": ["string", "null"],
                    "enum": ["total", "monthly", "weekly", "daily", "day", "month", null],
                    "description": "The full window of a refused grant; `null` when granted, or when the key does not exist.",
                },
                "retry_ms": { "type": ["integer", "null"], "minimum": 0 },
            })),
        ),
        (
            "KeyLookup",
            closed(
                &[
                    "key_id",
                    "workspace_id",
                    "active",
                    "expires_at",
                    "expires_at_ms",
                    "secret_valid_until_ms",
                    "allowed",
                    "quotas",
                    "usage",
                    "plan",
                    "rate_limits",
                    "credits",
                    "external_id",
                    "meta",
                    "cache_ttl_ms",
                    "now_ms",
                ],
                json!({
                    "key_id": { "type": "string" },
                    "workspace_id": { "type": "string" },
                    "active": { "type": "boolean" },
                    "expires_at": or_null(timestamp()),
                    "expires_at_ms": { "type": ["integer", "null"] },
                    "secret_valid_until_ms": { "type": ["integer", "null"], "description": "The end of a rotated-out secret's grace." },
                    "allowed": { "type": "array", "items": reference("AllowRule") },
                    "quotas": reference("Quotas"),
                    "usage": closed_all(json!({
                        "total": count(),
                        "daily": count(),
                        "weekly": count(),
                        "monthly": count(),
                    })),
                    "plan": closed_all(json!({
                        "name": { "type": "string" },
                        "rate_limit_per_second": { "type": ["integer", "null"] },
                        "rate_limit_per_minute": { "type": ["integer", "null"] },
                    })),
                    "rate_limits": reference("RateLimits"),
                    "credits": or_null(closed_all(json!({
                        "limit": { "type": "integer", "minimum": 1 },
                        "period": { "type": "string", "enum": periods },
                        "used": count(),
                        "period_start_ms": epoch_ms(),
                        "resets_at_ms": { "type": ["integer", "null"] },
                    }))),
                    "external_id": { "type": ["string", "null"] },
                    "meta": reference("Meta"),
                    "cache_ttl_ms": count(),
                    "now_ms": epoch_ms(),
                    "leases": { "type": "array", "items": reference("Grant"), "description": "The first leases, when the lookup asked for them (`lease`)." },
                }),
            ),
        ),
        (
            "LeaseAnswer",
            closed_all(json!({
                "now_ms": epoch_ms(),
                "settled": count(),
                "grants": { "type": "array", "items": reference("Grant") },
            })),
        ),
        (
            "IngestAnswer",
            closed_all(json!({
                "accepted": count(),
                "duplicates": count(),
                "rejected": { "type": "array", "items": closed_all(json!({
                    "index": { "type": "integer", "minimum": 0, "description": "The record's place in `records`." },
                    "request_id": { "type": ["string", "null"] },
                    "error": { "type": "string", "description": "`field: reason`." },
                })) },
            })),
        ),
        (
            "Denial",
            closed_all(json!({
                "error": { "type": "string" },
                "code": { "type": "string", "enum": ["missing_key", "invalid_key", "inactive_key", "expired_key", "endpoint_not_allowed"] },
            })),
        ),
        (
            "OpenApiDocument",
            json!({ "type": "object", "required": ["openapi", "info", "paths"], "description": "This document." }),
        ),
    ];
    entries
        .into_iter()
        .chain(request_bodies())
        .map(|(name, schema)| (name.to_owned(), schema))
        .collect()
}

/// `own` with the members a usage record and the request log's record share (one request as
/// the filter saw it).
pub(super) fn with_request_members(statuses: &[&str], own: Value) -> Value {
    let mut members = json!({
        "key_id": { "type": "string" },
        "workspace_id": { "type": "string" },
        "method": { "type": "string" },
        "endpoint": { "type": "string" },
        "resource_id": { "type": ["string", "null"] },
        "response_code": { "type": "integer", "minimum": 0, "maximum": 999 },
        "status": { "type": "string", "enum": statuses },
        "duration_ms": { "type": "number", "minimum": 0 },
        "client_ip": { "type": "string" },
    });
    if let (Some(members), Value::Object(own)) = (members.as_object_mut(), own) {
        members.extend(own);
    }
    members
}
