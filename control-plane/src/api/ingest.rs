//! `POST /v1/filter/usage`: usage records from the filter's usage service (`docs/protocol.md`).
//!
//! The body must be `{"records": [...]}` (else 400 with the reason: the filter drops such a
//! batch). Each record is then parsed and validated on its own; a bad one is listed in
//! `rejected` with the field it got wrong and never blocks the others.

use std::borrow::Cow;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Number;

use super::{AppState, BodyBytes};
use crate::app::edge;
use crate::domain::wire::Object;
use crate::domain::ValidationError;
use crate::domain::{UsageRecord, UsageStatus};
use crate::error::ApiError;

pub const MAX_RECORDS: usize = 10_000;
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

const REQUEST_ID_MAX: usize = 128;
const ID_MAX: usize = 64;
const METHOD_MAX: usize = 32;
const ENDPOINT_MAX: usize = 512;
const RESOURCE_ID_MAX: usize = 256;
const CLIENT_IP_MAX: usize = 64;
const INSTANCE_MAX: usize = 64;
const CREDITS_MAX: u64 = 1_000_000;
/// 9999-12-31T23:59:59.999Z: later timestamps cannot be shown as RFC 3339.
const TIMESTAMP_MAX: u64 = 253_402_300_799_999;

#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    records: Vec<&'a RawValue>,
}

/// A record as sent; strings borrow from the body unless they hold escapes. Unknown fields are
/// ignored so a newer filter can add some. Read as an [`Object`]: an array is no record (and
/// no filter sends one), so it is not taken by position.
#[derive(Deserialize)]
struct WireRecord<'a> {
    #[serde(borrow)]
    request_id: Cow<'a, str>,
    timestamp: Number,
    #[serde(borrow)]
    key_id: Cow<'a, str>,
    #[serde(borrow)]
    workspace_id: Cow<'a, str>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow)]
    endpoint: Cow<'a, str>,
    #[serde(default, borrow)]
    resource_id: Option<Cow<'a, str>>,
    response_code: Number,
    #[serde(borrow)]
    status: Cow<'a, str>,
    duration_ms: Number,
    #[serde(borrow)]
    client_ip: Cow<'a, str>,
    credits: Number,
    admitted: bool,
    #[serde(borrow)]
    instance: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RequestIdOnly {
    #[serde(default)]
    request_id: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct IngestAnswer {
    accepted: u64,
    duplicates: u64,
    rejected: Vec<Rejected>,
}

#[derive(Debug, Serialize)]
pub struct Rejected {
    index: usize,
    request_id: Option<String>,
    error: String,
}

fn invalid(field: &str, message: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn text(field: &str, value: &str, min: usize, max: usize) -> Result<(), ValidationError> {
    // Ids and names are ASCII nearly always: bytes are characters, controls are < 0x20 and 0x7f.
    let (len, control) = if value.is_ascii() {
        (value.len(), value.bytes().any(|b| b < 0x20 || b == 0x7f))
    } else {
        (value.chars().count(), value.chars().any(char::is_control))
    };
    if len < min || len > max {
        return Err(invalid(
            field,
            if min == 0 {
                format!("must be at most {max} characters")
            } else {
                format!("must be {min}-{max} characters")
            },
        ));
    }
    if control {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn is_method(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= METHOD_MAX
        && m.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl WireRecord<'_> {
    fn validate(self) -> Result<UsageRecord, ValidationError> {
        text("request_id", &self.request_id, 1, REQUEST_ID_MAX)?;
        let timestamp = self
            .timestamp
            .as_u64()
            .filter(|t| (1..=TIMESTAMP_MAX).contains(t))
            .ok_or_else(|| invalid("timestamp", "must be a positive integer"))?;
        text("key_id", &self.key_id, 1, ID_MAX)?;
        text("workspace_id", &self.workspace_id, 1, ID_MAX)?;
        if !is_method(&self.method) {
            return Err(invalid(
                "method",
                "must be an upper-case HTTP method (A-Z, 0-9, - and _, at most 32)",
            ));
        }
        if !self.endpoint.starts_with('/') {
            return Err(invalid("endpoint", "must start with /"));
        }
        text("endpoint", &self.endpoint, 1, ENDPOINT_MAX)?;
        if let Some(r) = &self.resource_id {
            text("resource_id", r, 0, RESOURCE_ID_MAX)?;
        }
        let response_code = self
            .response_code
            .as_u64()
            .filter(|c| *c <= 999)
            .ok_or_else(|| invalid("response_code", "must be an integer from 0 to 999"))?;
        let status = UsageStatus::parse(&self.status)
            .ok_or_else(|| invalid("status", "must be one of completed, rate_limited, failed"))?;
        let duration_ms = self
            .duration_ms
            .as_f64()
            .filter(|d| d.is_finite() && *d >= 0.0)
            .ok_or_else(|| invalid("duration_ms", "must be a number >= 0"))?;
        text("client_ip", &self.client_ip, 0, CLIENT_IP_MAX)?;
        let credits = self
            .credits
            .as_u64()
            .filter(|c| *c <= CREDITS_MAX)
            .ok_or_else(|| invalid("credits", "must be an integer from 0 to 1000000"))?;
        text("instance", &self.instance, 0, INSTANCE_MAX)?;
        Ok(UsageRecord {
            request_id: self.request_id.into_owned(),
            timestamp: timestamp as i64,
            key_id: self.key_id.into_owned(),
            workspace_id: self.workspace_id.into_owned(),
            method: self.method.into_owned(),
            endpoint: self.endpoint.into_owned(),
            resource_id: self
                .resource_id
                .filter(|r| !r.is_empty())
                .map(Cow::into_owned),
            response_code: response_code as u16,
            status,
            duration_ms,
            client_ip: self.client_ip.into_owned(),
            credits: credits as u32,
            admitted: self.admitted,
            instance: self.instance.into_owned(),
        })
    }
}

/// One record from its JSON text: the validated record, or the error naming its field.
fn parse_record(raw: &RawValue) -> Result<UsageRecord, ValidationError> {
    // The plain parser first (cheaper); only a record that fails is parsed again for the path
    // of the field at fault.
    if let Ok(Object(wire)) = serde_json::from_str::<Object<WireRecord>>(raw.get()) {
        return wire.validate();
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    match serde_path_to_error::deserialize::<_, Object<WireRecord>>(&mut de) {
        Ok(Object(wire)) => wire.validate(),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // A missing field has no path; its message names it.
            let field = if path == "." || path == "?" {
                "record".to_owned()
            } else {
                path
            };
            Err(invalid(&field, inner))
        }
    }
}

fn request_id_of(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<RequestIdOnly>(raw.get())
        .ok()
        .and_then(|r| r.request_id)
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// A parsed batch: the records that validated, with their index in the batch, and the others.
pub type ParsedBatch = (Vec<(usize, UsageRecord)>, Vec<Rejected>);

/// Parses a batch body. `Err` only when the body is not `{"records": [...]}`.
pub fn parse_batch(body: &[u8]) -> Result<ParsedBatch, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::malformed("body must be UTF-8 JSON"))?;
    let Object(batch): Object<Batch> = serde_json::from_str(text)
        .map_err(|e| ApiError::malformed(format!("body must be {{\"records\": [...]}}: {e}")))?;
    if batch.records.len() > MAX_RECORDS {
        return Err(ApiError::invalid(
            "records",
            format!(
                "at most {MAX_RECORDS} records per batch (got {})",
                batch.records.len()
            ),
        ));
    }
    let mut good = Vec::with_capacity(batch.records.len());
    let mut rejected = Vec::new();
    for (index, raw) in batch.records.iter().enumerate() {
        match parse_record(raw) {
            Ok(record) => good.push((index, record)),
            Err(e) => rejected.push(Rejected {
                index,
                request_id: request_id_of(raw),
                error: e.to_string(),
            }),
        }
    }
    Ok((good, rejected))
}

pub async fn ingest(
    State(state): State<AppState>,
    BodyBytes(body): BodyBytes,
) -> Result<Json<IngestAnswer>, ApiError> {
    let (good, mut rejected) = parse_batch(&body)?;
    let (indexes, records): (Vec<usize>, Vec<UsageRecord>) = good.into_iter().unzip();
    let outcome = edge::ingest(&state, records, rejected.len()).await?;
    for r in outcome.rejected {
        if let Some(&index) = indexes.get(r.position) {
            rejected.push(Rejected {
                index,
                request_id: r.request_id,
                error: r.error.to_string(),
            });
        }
    }
    rejected.sort_by_key(|r| r.index);
    Ok(Json(IngestAnswer {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
        rejected,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn record() -> Value {
        json!({"request_id": "r-1", "timestamp": 1_795_465_967_031i64, "key_id": "key_a",
               "workspace_id": "ws_a", "method": "GET", "endpoint": "/v1/candidates/{id}",
               "resource_id": "c-42", "response_code": 200, "status": "completed",
               "duration_ms": 1.685, "client_ip": "127.0.0.1", "credits": 2, "admitted": true,
               "instance": "i_1"})
    }

    fn error_of(patch: Value) -> String {
        let mut r = record();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() && k != "resource_id" {
                r.as_object_mut().unwrap().remove(k);
            } else {
                r[k] = v.clone();
            }
        }
        let body = json!({ "records": [r] }).to_string();
        let (good, rejected) = parse_batch(body.as_bytes()).unwrap();
        match (good.len(), rejected.first()) {
            (1, None) => "ok".to_owned(),
            (_, Some(r)) => r.error.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_good_record_parses() {
        let body = json!({ "records": [record()] }).to_string();
        let (good, rejected) = parse_batch(body.as_bytes()).unwrap();
        assert!(rejected.is_empty());
        let r = &good[0].1;
        assert_eq!(r.timestamp, 1_795_465_967_031);
        assert_eq!(r.resource_id.as_deref(), Some("c-42"));
        assert_eq!(r.status, UsageStatus::Completed);
        assert_eq!(r.duration_ms, 1.685);
        assert_eq!(error_of(json!({"resource_id": null})), "ok");
        assert_eq!(
            error_of(json!({"response_code": 0, "duration_ms": 0})),
            "ok"
        );
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (json!({"request_id": ""}), "request_id:"),
            (json!({"request_id": "x".repeat(129)}), "request_id:"),
            (json!({"request_id": "a\u{7}b"}), "request_id:"),
            (
                json!({"timestamp": 0}),
                "timestamp: must be a positive integer",
            ),
            (
                json!({"timestamp": -5}),
                "timestamp: must be a positive integer",
            ),
            (
                json!({"timestamp": 1.5}),
                "timestamp: must be a positive integer",
            ),
            (json!({"timestamp": "1"}), "timestamp:"),
            (json!({"method": "get"}), "method:"),
            (json!({"method": "G ET"}), "method:"),
            (json!({"endpoint": "v1/x"}), "endpoint: must start with /"),
            (
                json!({"endpoint": format!("/{}", "a".repeat(512))}),
                "endpoint:",
            ),
            (json!({"resource_id": "r".repeat(257)}), "resource_id:"),
            (json!({"response_code": 1000}), "response_code:"),
            (json!({"response_code": -1}), "response_code:"),
            (json!({"status": "ok"}), "status:"),
            (json!({"duration_ms": -0.5}), "duration_ms:"),
            (json!({"client_ip": "1".repeat(65)}), "client_ip:"),
            (json!({"credits": 1_000_001}), "credits:"),
            (json!({"admitted": "yes"}), "admitted:"),
            (json!({"instance": "i".repeat(65)}), "instance:"),
            (json!({"key_id": null}), "missing field `key_id`"),
        ];
        for (patch, want) in cases {
            let got = error_of(patch.clone());
            assert!(got.contains(want), "{patch}: {got}");
        }
    }

    #[test]
    fn malformed_bodies_are_400() {
        for body in [
            "",
            "[]",
            "{}",
            r#"{"records": {}}"#,
            r#"{"records": [1}"#,
            "not json",
        ] {
            assert!(parse_batch(body.as_bytes()).is_err(), "{body}");
        }
        let too_many = format!(
            r#"{{"records": [{}]}}"#,
            vec!["{}"; MAX_RECORDS + 1].join(",")
        );
        assert!(parse_batch(too_many.as_bytes()).is_err());
    }

    #[test]
    fn non_object_records_are_rejected_individually() {
        let body = json!({"records": [1, record(), {"request_id": "r-9"}]}).to_string();
        let (good, rejected) = parse_batch(body.as_bytes()).unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(rejected.len(), 2);
        assert_eq!(
            (rejected[0].index, rejected[0].request_id.clone()),
            (0, None)
        );
        assert_eq!(rejected[1].request_id.as_deref(), Some("r-9"));
    }
}
