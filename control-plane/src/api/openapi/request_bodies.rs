//! The request bodies of `components.schemas`: what the API reads, with the validation's own
//! limits. Unlike the answers (`schemas.rs`) they describe what is accepted, so an absent member
//! has its default, and `null` clears where the API says so.

use serde_json::{json, Value};

use super::schemas::{names, reference, with_request_members};
use crate::api::ingest;
use crate::domain::lease::{INSTANCE_MAX, MAX_ENTRIES, MAX_WANT};
use crate::domain::names::{
    ALIAS_MAX, CATEGORY_MAX, DESCRIPTION_MAX, EXTERNAL_ID_MAX, WORKSPACE_NAME_MAX,
};
use crate::domain::validate::{ALLOWED_MAX, GRACE_SECONDS_MAX, METHODS, PATH_MAX, QUOTA_MAX};
use crate::domain::{CreditPeriod, Meter, UsageStatus};

/// Every request body, by its schema's name.
pub fn request_bodies() -> Vec<(&'static str, Value)> {
    let periods = names(&CreditPeriod::ALL, CreditPeriod::as_str);
    let meters = names(&Meter::ALL, Meter::as_str);
    let statuses = names(&UsageStatus::ALL, UsageStatus::as_str);
    vec![
        (
            "CreatePlan",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["name"],
                "properties": {
                    "name": { "type": "string", "description": "1-32 characters [a-z0-9_-]." },
                    "max_keys": { "type": ["integer", "null"], "minimum": 1 },
                    "rate_limit_per_second": { "type": ["integer", "null"], "minimum": 1 },
                    "rate_limit_per_minute": { "type": ["integer", "null"], "minimum": 1 },
                },
            }),
        ),
        (
            "CreateWorkspace",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["name"],
                "properties": {
                    "name": { "type": "string", "minLength": 1, "maxLength": WORKSPACE_NAME_MAX },
                    "plan": { "type": "string", "default": "free", "description": "The name of an existing plan." },
                },
            }),
        ),
        (
            "UpdateWorkspace",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["plan"],
                "properties": { "plan": { "type": "string" } },
            }),
        ),
        (
            "CreateConsoleToken",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["name"],
                "properties": { "name": { "type": "string", "minLength": 1 } },
            }),
        ),
        ("CreateKey", create_key()),
        ("UpdateKey", update_key()),
        (
            "RotateKey",
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "grace_seconds": { "type": "integer", "minimum": 0, "maximum": GRACE_SECONDS_MAX, "default": 0, "description": "How long the old secret keeps working." },
                },
            }),
        ),
        ("QuotasInput", quotas_input()),
        ("RateLimitsInput", rate_limits_input()),
        (
            "CreditsInput",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["limit", "period"],
                "properties": {
                    "limit": { "type": "integer", "minimum": 1, "maximum": QUOTA_MAX },
                    "period": { "type": "string", "enum": periods },
                },
            }),
        ),
        (
            "AllowInput",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["path"],
                "properties": {
                    "method": { "type": "string", "default": "*", "enum": method_or_any() },
                    "path": { "type": "string", "maxLength": PATH_MAX, "pattern": "^/" },
                },
            }),
        ),
        (
            "LeaseRequest",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["instance"],
                "properties": {
                    "instance": { "type": "string", "minLength": 1, "maxLength": INSTANCE_MAX, "pattern": "^[A-Za-z0-9_.-]+$" },
                    "settle": { "type": "array", "maxItems": MAX_ENTRIES, "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["lease", "spent"],
                        "properties": {
                            "lease": { "type": "string", "description": "`{instance}.{suffix}`." },
                            "spent": { "type": "integer", "minimum": 0 },
                        },
                    } },
                    "grant": { "type": "array", "maxItems": MAX_ENTRIES, "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["lease", "key_id", "meter", "want"],
                        "properties": {
                            "lease": { "type": "string", "description": "`{instance}.{suffix}`." },
                            "key_id": { "type": "string" },
                            "meter": { "type": "string", "enum": meters },
                            "want": { "type": "integer", "minimum": 1, "maximum": MAX_WANT },
                            "min": { "type": "integer", "minimum": 1, "default": 1 },
                        },
                    } },
                },
            }),
        ),
        (
            "UsageBatch",
            json!({
                "type": "object",
                "required": ["records"],
                "properties": {
                    "records": { "type": "array", "maxItems": ingest::MAX_RECORDS, "items": reference("UsageRecord") },
                },
            }),
        ),
        (
            "UsageRecord",
            json!({
                "type": "object",
                "description": "One request as the filter saw it. Members not listed are ignored (a newer filter may send more); a bad record is listed in `rejected` and never blocks the others.",
                "required": [
                    "request_id", "timestamp", "key_id", "workspace_id", "method", "endpoint",
                    "response_code", "status", "duration_ms", "client_ip", "credits", "admitted",
                    "instance",
                ],
                "properties": with_request_members(&statuses, json!({
                    "request_id": { "type": "string", "minLength": 1, "maxLength": 128, "description": "Idempotency: a record whose `request_id` was stored before is a duplicate." },
                    "timestamp": { "type": "integer", "minimum": 1, "description": "Milliseconds since the Unix epoch." },
                    "credits": { "type": "integer", "minimum": 0 },
                    "admitted": { "type": "boolean" },
                    "instance": { "type": "string" },
                })),
            }),
        ),
    ]
}

/// A positive limit as the API reads it (`quotas.*`, `rate_limits.*`): `null` clears it.
fn limit_input(what: &str) -> Value {
    json!({
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": QUOTA_MAX,
        "description": format!("{what}; `null` (or absent on create) is no limit."),
    })
}

/// An allow rule's method: one of the methods, or `*`.
fn method_or_any() -> Vec<&'static str> {
    let mut all = vec!["*"];
    all.extend(METHODS);
    all
}

fn quotas_input() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "total": limit_input("Requests over the key's lifetime"),
            "daily": limit_input("Requests per UTC day"),
            "weekly": limit_input("Requests per ISO week (UTC)"),
            "monthly": limit_input("Requests per calendar month (UTC)"),
        },
    })
}

fn rate_limits_input() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "The key's own limits per fixed window, on top of its plan's.",
        "properties": {
            "per_second": limit_input("Requests per second"),
            "per_minute": limit_input("Requests per minute"),
            "per_hour": limit_input("Requests per hour"),
        },
    })
}

fn key_text_members() -> Value {
    json!({
        "alias": { "type": "string", "minLength": 1, "maxLength": ALIAS_MAX, "description": "Unique in the workspace." },
        "description": { "type": ["string", "null"], "maxLength": DESCRIPTION_MAX },
        "category": { "type": ["string", "null"], "maxLength": CATEGORY_MAX, "description": "production, development, staging or a custom label [a-z0-9_-]." },
        "expires_at": { "type": ["string", "null"], "format": "date-time" },
        "external_id": { "type": ["string", "null"], "minLength": 1, "maxLength": EXTERNAL_ID_MAX, "description": "The owner in the caller's own system (printable ASCII without spaces)." },
        "meta": { "anyOf": [{ "$ref": "#/components/schemas/Meta" }, { "type": "null" }] },
        "quotas": { "anyOf": [{ "$ref": "#/components/schemas/QuotasInput" }, { "type": "null" }] },
        "rate_limits": { "anyOf": [{ "$ref": "#/components/schemas/RateLimitsInput" }, { "type": "null" }] },
        "credits": { "anyOf": [{ "$ref": "#/components/schemas/CreditsInput" }, { "type": "null" }], "description": "`null`: no budget." },
        "allowed": { "anyOf": [
            { "type": "array", "maxItems": ALLOWED_MAX, "items": { "$ref": "#/components/schemas/AllowInput" } },
            { "type": "null" },
        ] },
    })
}

fn create_key() -> Value {
    let mut properties = key_text_members();
    if let Some(expires) = properties.get_mut("expires_at") {
        expires["description"] = json!("Must be in the future.");
    }
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["alias"],
        "properties": properties,
    })
}

/// A merge patch: an absent member is unchanged, `null` clears it where clearing makes sense.
fn update_key() -> Value {
    let mut properties = key_text_members();
    if let Some(map) = properties.as_object_mut() {
        map.insert("active".to_owned(), json!({ "type": "boolean" }));
        map.insert(
            "expires_at".to_owned(),
            json!({ "type": ["string", "null"], "format": "date-time", "description": "A past time expires the key now; `null` removes the expiry." }),
        );
    }
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "An absent member is unchanged; `null` clears it. `rate_limits` merges per window; `credits`, `allowed` and `meta` replace the whole value.",
        "properties": properties,
    })
}
