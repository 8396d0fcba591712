//! An Envoy's budget leases (`docs/protocol.md`, "Filter → control plane: budget leases"): the
//! request body as sent, refused here with the field it got wrong (`grant[3].meter`), else
//! settled and granted by the store at the control plane's clock.

use serde::Deserialize;
use serde_json::Value;

use super::{AppError, AppState};
use crate::clock;
use crate::domain::lease::{self, MAX_ENTRIES, MAX_WANT};
use crate::domain::{GrantRequest, LeaseAnswer, LeaseRequest, Meter, Settlement, ValidationError};

/// `POST /v1/filter/leases` as sent. Numbers and the meter stay raw, so that every bad value is
/// refused with a message naming its field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseBody {
    pub instance: String,
    #[serde(default)]
    pub settle: Vec<SettleInput>,
    #[serde(default)]
    pub grant: Vec<GrantInput>,
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
            .map(|(i, s)| {
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
        .map(|(i, g)| {
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
