//! An Envoy's budget leases (`docs/protocol.md`, "Filter → control plane: budget leases"): the
//! request body as sent, refused here with the field it got wrong (`grant[3].meter`), else
//! settled and granted by the store at the control plane's clock.

use serde::Deserialize;
use serde_json::Value;

use super::{AppError, AppState};
use crate::clock;
use crate::domain::lease::{self, MAX_ENTRIES, MAX_WANT};
use crate::domain::wire::Object;
use crate::domain::{
    Grant, GrantRequest, KeyLookup, LeaseAnswer, LeaseRequest, Meter, Settlement, ValidationError,
};

/// `POST /v1/filter/leases` as sent. Numbers and the meter stay raw, so that every bad value is
/// refused with a message naming its field; entries are objects only (not arrays by position).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseBody {
    pub instance: String,
    #[serde(default)]
    pub settle: Vec<Object<SettleInput>>,
    #[serde(default)]
    pub grant: Vec<Object<GrantInput>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleInput {
    pub lease: String,
    pub spent: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    pub lease: String,
    pub key_id: String,
    pub meter: Value,
    pub want: Value,
    /// Absent: 1.
    #[serde(default)]
    pub min: Option<Value>,
}

/// The longest key id a grant may name (as a usage record's).
const KEY_ID_MAX: usize = 64;

/// The store's answer to `body`, at the control plane's clock (`now_ms`, which the answer
/// carries).
pub async fn lease(app: &AppState, body: LeaseBody) -> Result<(i64, LeaseAnswer), AppError> {
    let request = validate(body)?;
    let now = clock::now_ms();
    let ttl = i64::try_from(app.lease_ttl_ms).unwrap_or(i64::MAX);
    let answer = app.store().lease(&request, now, ttl).await?;
    Ok((now, answer))
}

/// The first leases a key lookup asks for (`docs/protocol.md`, "The first leases, granted
/// with the lookup"): lease ids `{base}c` (`calls`) and `{base}k` (`credits`), `want` units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupLeases {
    instance: String,
    base: String,
    want: u64,
}

/// What a lookup asks for when it sends none: the filter's initial want.
pub const LOOKUP_WANT: u64 = 10;

impl LookupLeases {
    /// The lookup's `lease` and `want` query parameters as sent, or the first bad one. `None`:
    /// no lease asked (`want` alone is refused: it would be silently ignored).
    pub fn parse(lease: Option<&str>, want: Option<&str>) -> Result<Option<Self>, ValidationError> {
        let want = want
            .map(|w| {
                w.parse::<u64>()
                    .ok()
                    .filter(|w| (1..=MAX_WANT).contains(w))
                    .ok_or_else(|| {
                        ValidationError::new(
                            "want",
                            format!("must be an integer from 1 to {MAX_WANT}"),
                        )
                    })
            })
            .transpose()?;
        let Some(base) = lease else {
            return match want {
                Some(_) => Err(ValidationError::new("want", "needs lease")),
                None => Ok(None),
            };
        };
        let bad = || {
            ValidationError::new(
                "lease",
                format!(
                    "must be the instance id, '.' and 1-{} characters [A-Za-z0-9]",
                    lease::LEASE_SUFFIX_MAX - 1
                ),
            )
        };
        let (instance, suffix) = base.rsplit_once('.').ok_or_else(bad)?;
        lease::instance("lease", instance)?;
        let suffix_ok = (1..lease::LEASE_SUFFIX_MAX).contains(&suffix.len())
            && suffix.bytes().all(|b| b.is_ascii_alphanumeric());
        if !suffix_ok {
            return Err(bad());
        }
        Ok(Some(Self {
            instance: instance.to_owned(),
            base: base.to_owned(),
            want: want.unwrap_or(LOOKUP_WANT),
        }))
    }

    /// The lease id of `meter`.
    fn lease_id(&self, meter: Meter) -> String {
        let tag = match meter {
            Meter::Calls => 'c',
            Meter::Credits => 'k',
        };
        format!("{}{tag}", self.base)
    }
}

/// The first leases of key `found` a lookup asked for at `now` (the lookup's clock): one per
/// meter it has a budget on, granted by the same store call as `POST /v1/filter/leases`
/// (never from a cache); none for a key that is inactive, expired or without budgets.
pub async fn grant_with_lookup(
    app: &AppState,
    found: &KeyLookup,
    asked: &LookupLeases,
    now: i64,
) -> Result<Vec<Grant>, AppError> {
    let usable = found.active && found.expires_at.is_none_or(|t| t > now);
    let meters = [
        (Meter::Calls, found.quotas.any()),
        (Meter::Credits, found.credits.is_some()),
    ];
    let grant: Vec<GrantRequest> = meters
        .into_iter()
        .filter(|&(_, budget)| usable && budget)
        .map(|(meter, _)| GrantRequest {
            lease: asked.lease_id(meter),
            key_id: found.key_id.clone(),
            meter,
            want: asked.want,
            min: 1,
        })
        .collect();
    if grant.is_empty() {
        return Ok(Vec::new());
    }
    let request = LeaseRequest {
        instance: asked.instance.clone(),
        settle: Vec::new(),
        grant,
    };
    let ttl = i64::try_from(app.lease_ttl_ms).unwrap_or(i64::MAX);
    Ok(app.store().lease(&request, now, ttl).await?.grants)
}

/// `body` as a [`LeaseRequest`], or the first bad field.
pub fn validate(body: LeaseBody) -> Result<LeaseRequest, ValidationError> {
    let instance = body.instance;
    lease::instance("instance", &instance)?;
    for (field, len) in [("settle", body.settle.len()), ("grant", body.grant.len())] {
        if len > MAX_ENTRIES {
            return Err(ValidationError::new(
                field,
                format!("must have at most {MAX_ENTRIES} entries"),
            ));
        }
    }
    let settle =
        body.settle
            .into_iter()
            .enumerate()
            .map(|(i, Object(s))| {
                let field = |name: &str| format!("settle[{i}].{name}");
                lease::lease_id(&field("lease"), &s.lease, &instance)?;
                let spent = s.spent.as_u64().ok_or_else(|| {
                    ValidationError::new(field("spent"), "must be an integer >= 0")
                })?;
                Ok(Settlement {
                    lease: s.lease,
                    spent,
                })
            })
            .collect::<Result<Vec<_>, ValidationError>>()?;
    let grant = body
        .grant
        .into_iter()
        .enumerate()
        .map(|(i, Object(g))| {
            let field = |name: &str| format!("grant[{i}].{name}");
            lease::lease_id(&field("lease"), &g.lease, &instance)?;
            let key_ok = (1..=KEY_ID_MAX).contains(&g.key_id.len())
                && g.key_id.bytes().all(|b| b.is_ascii_graphic());
            if !key_ok {
                return Err(ValidationError::new(
                    field("key_id"),
                    format!("must be 1-{KEY_ID_MAX} printable ASCII characters"),
                ));
            }
            let names: Vec<&str> = Meter::ALL.iter().map(|m| m.as_str()).collect();
            let meter = g.meter.as_str().and_then(Meter::parse).ok_or_else(|| {
                ValidationError::new(
                    field("meter"),
                    format!("must be one of {}", names.join(", ")),
                )
            })?;
            let want = g
                .want
                .as_u64()
                .filter(|w| (1..=MAX_WANT).contains(w))
                .ok_or_else(|| {
                    ValidationError::new(
                        field("want"),
                        format!("must be an integer from 1 to {MAX_WANT}"),
                    )
                })?;
            let min = match &g.min {
                None => 1,
                Some(v) => v
                    .as_u64()
                    .filter(|m| (1..=want).contains(m))
                    .ok_or_else(|| {
                        ValidationError::new(
                            field("min"),
                            format!("must be an integer from 1 to want ({want})"),
                        )
                    })?,
            };
            Ok(GrantRequest {
                lease: g.lease,
                key_id: g.key_id,
                meter,
                want,
                min,
            })
        })
        .collect::<Result<Vec<_>, ValidationError>>()?;
    Ok(LeaseRequest {
        instance,
        settle,
        grant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> LeaseBody {
        serde_json::from_value(v).unwrap()
    }

    fn field_of(v: Value) -> String {
        validate(body(v)).unwrap_err().field
    }

    #[test]
    fn a_good_request_parses_with_min_defaulting_to_one() {
        let r = validate(body(json!({
            "instance": "i_1",
            "settle": [{"lease": "i_1.a1", "spent": 0}],
            "grant": [{"lease": "i_1.b2", "key_id": "key_x", "meter": "credits", "want": 40}]
        })))
        .unwrap();
        assert_eq!(r.settle[0].spent, 0);
        assert_eq!(r.grant[0].meter, Meter::Credits);
        assert_eq!((r.grant[0].want, r.grant[0].min), (40, 1));
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let grant = |g: Value| json!({"instance": "i_1", "grant": [g]});
        let ok = json!({"lease": "i_1.b", "key_id": "k", "meter": "calls", "want": 5});
        let with = |k: &str, v: Value| {
            let mut g = ok.clone();
            g[k] = v;
            grant(g)
        };
        assert_eq!(field_of(json!({"instance": "a b"})), "instance");
        assert_eq!(field_of(with("lease", json!("i_2.b"))), "grant[0].lease");
        assert_eq!(field_of(with("key_id", json!(""))), "grant[0].key_id");
        assert_eq!(field_of(with("meter", json!("bytes"))), "grant[0].meter");
        assert_eq!(field_of(with("want", json!(0))), "grant[0].want");
        assert_eq!(
            field_of(with("want", json!(1_000_000_001))),
            "grant[0].want"
        );
        assert_eq!(field_of(with("min", json!(6))), "grant[0].min");
        assert_eq!(field_of(with("min", json!(0))), "grant[0].min");
        assert_eq!(
            field_of(json!({"instance": "i_1", "settle": [{"lease": "i_1.a", "spent": -1}]})),
            "settle[0].spent"
        );
        let many: Vec<Value> = (0..1001)
            .map(|i| json!({"lease": format!("i_1.x{i}"), "spent": 1}))
            .collect();
        assert_eq!(
            field_of(json!({"instance": "i_1", "settle": many})),
            "settle"
        );
    }
}
