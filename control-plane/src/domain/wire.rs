//! The REST API's JSON for workspaces and keys, both ways: the handlers read the requests and
//! write the answers in these shapes, and the CLI writes the requests and reads the answers in
//! the same ones, so the two cannot drift apart.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::credits::CreditBudget;
use super::key::{AllowRule, ApiKey, Leased, Meta, Quotas, RateLimits};
use super::workspace::Workspace;
use crate::clock;

/// Every list answer is an object so pagination can be added without breaking clients.
#[derive(Debug, Serialize, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    pub name: String,
    /// Defaults to `free`, the plan a new customer starts on.
    #[serde(default = "default_plan")]
    pub plan: String,
}

fn default_plan() -> String {
    "free".to_owned()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WorkspaceView {
    pub id: String,
    pub name: String,
    pub plan: String,
    pub created_at: String,
}

impl From<Workspace> for WorkspaceView {
    fn from(ws: Workspace) -> Self {
        Self {
            id: ws.id,
            name: ws.name,
            plan: ws.plan,
            created_at: clock::format_rfc3339(ws.created_at),
        }
    }
}

/// `POST /v1/workspaces/{ws}/keys`, or the dashboard's form.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub alias: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Object<QuotasInput>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Object<AllowInput>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<Object<RateLimitsInput>>,
    /// `null` or absent: no budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<Object<CreditsInput>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Raw, so that every bad entry gets a message naming it (`meta.Bad Name: ...`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

/// Rate limits per window, raw like [`QuotasInput`]; absent keeps (in a patch), `null` clears.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsInput {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_second: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_minute: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_hour: Option<Value>,
}

/// A credit budget as sent: both members are required (a patch replaces the whole budget).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditsInput {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub period: Option<Value>,
}

/// Quota values stay raw JSON so that `0`, `-1` or `"10"` get a message naming the field.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasInput {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub total: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub daily: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub weekly: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub monthly: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowInput {
    #[serde(default = "any_method")]
    pub method: String,
    pub path: String,
}

fn any_method() -> String {
    "*".to_owned()
}

/// `Option<Option<_>>`: absent = unchanged, `null` = cleared (where clearing makes sense).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub alias: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub description: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub category: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub active: Option<Option<bool>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub quotas: Option<Option<Object<QuotasInput>>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed: Option<Option<Vec<Object<AllowInput>>>>,
    /// Merges per window; `null` clears every window.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limits: Option<Option<Object<RateLimitsInput>>>,
    /// Replaces the budget; `null` clears it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub credits: Option<Option<Object<CreditsInput>>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_id: Option<Option<String>>,
    /// Replaces the whole map; `null` or `{}` clears it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub meta: Option<Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    #[serde(default)]
    pub grace_seconds: i64,
}

/// A key as the API shows it: never the secret, except right after creation or rotation.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyView {
    pub id: String,
    pub workspace_id: String,
    pub alias: String,
    pub description: Option<String>,
    pub category: String,
    pub active: bool,
    pub status: String,
    pub expires_at: Option<String>,
    pub quotas: Quotas,
    pub allowed: Vec<AllowRule>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub calls_this_month: u64,
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// `null` without a budget.
    #[serde(default)]
    pub credits: Option<CreditBudget>,
    /// Credits charged to the budget's current period (without one: spent by the admitted
    /// records of the calendar month, UTC).
    #[serde(default)]
    pub credits_used: u64,
    /// `limit - credits_used`, at least 0; `null` without a budget.
    #[serde(default)]
    pub credits_remaining: Option<u64>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub meta: Meta,
    /// What the key's live budget leases hold.
    #[serde(default)]
    pub leased: LeasedView,
    pub prefix: String,
    pub hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl KeyView {
    pub fn new(key: ApiKey, now_ms: i64) -> Self {
        Self {
            status: key.status(now_ms).as_str().to_owned(),
            expires_at: key.expires_at.map(clock::format_rfc3339),
            created_at: clock::format_rfc3339(key.created_at),
            last_used_at: key.last_used_at.map(clock::format_rfc3339),
            calls_this_month: key.calls_this_month,
            credits_remaining: key.credits_remaining(),
            rate_limits: key.rate_limits,
            credits: key.credits,
            credits_used: key.credits_used,
            external_id: key.external_id,
            meta: key.meta,
            leased: key.leased.into(),
            id: key.id,
            workspace_id: key.workspace_id,
            alias: key.alias,
            description: key.description,
            category: key.category,
            active: key.active,
            quotas: key.quotas,
            allowed: key.allowed,
            prefix: key.prefix,
            hash: key.hash,
            secret: None,
        }
    }

    /// Right after creation or rotation: the only answer that carries the secret.
    pub fn with_secret(key: ApiKey, secret: &str, now_ms: i64) -> Self {
        let mut view = Self::new(key, now_ms);
        view.secret = Some(secret.to_owned());
        view
    }
}

/// `leased` of a key: units of its live leases per meter, and the Envoys holding them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LeasedView {
    pub calls: u64,
    pub credits: u64,
    pub envoys: u64,
}

impl From<Leased> for LeasedView {
    fn from(l: Leased) -> Self {
        Self {
            calls: l.calls,
            credits: l.credits,
            envoys: l.holders,
        }
    }
}

impl From<LeasedView> for Leased {
    fn from(l: LeasedView) -> Self {
        Self {
            calls: l.calls,
            credits: l.credits,
            holders: l.envoys,
        }
    }
}

/// A JSON object read as `T`, and nothing else. serde's derived `Deserialize` also fills a
/// struct from an array, by position (`"quotas": [null, 5]` would be a daily quota of 5), which
/// no client means: wrapped in this, an array (or any other non-object) is refused, and the
/// error names the member it was in. Written as `T` is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Object<T>(pub T);

impl<T: Serialize> Serialize for Object<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `deserialize_map`, unlike the `deserialize_struct` of the derive, takes `{...}` only.
        d.deserialize_map(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = Object<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Object)
    }
}

/// For `Option<Option<T>>` fields: absent stays `None`, `null` becomes `Some(None)`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nested_object_is_an_object_only_and_written_as_itself() {
        let key: CreateKey =
            serde_json::from_value(json!({"alias": "a", "quotas": {"daily": 5}})).unwrap();
        assert_eq!(key.quotas.unwrap().0.daily, Some(json!(5)));
        for array in [json!([null, 5]), json!([])] {
            let e = serde_json::from_value::<CreateKey>(json!({"alias": "a", "quotas": array}))
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                "invalid type: sequence, expected a JSON object"
            );
        }
        let allow = Object(AllowInput {
            method: "GET".to_owned(),
            path: "/".to_owned(),
        });
        assert_eq!(
            serde_json::to_value(&allow).unwrap(),
            json!({"method": "GET", "path": "/"})
        );
    }
}
