//! `POST /v1/filter/leases` as the filter speaks it (docs/protocol.md, "Budget leases"): the
//! body of one record's callout, and its answer turned into what the record needs.

use crate::budget::{Exhausted, Meter};
use crate::lease_record::{Answer, Granted, Renewal};
use serde::{Deserialize, Serialize};

/// The path of the lease endpoint.
pub const LEASES_PATH: &str = "/v1/filter/leases";
/// How long to wait before asking again after an answer with no units, when it did not say.
pub const DEFAULT_RETRY_MS: u64 = 1_000;
/// How long requests that find no units are denied after a lease callout failed.
pub const FAILURE_BACKOFF_MS: u64 = 1_000;
/// The largest answer read (one grant: a few hundred bytes).
pub const MAX_LEASE_ANSWER: usize = 16 * 1024;

/// A lease's id on the wire: the instance, a dot, 16 hex digits.
pub fn lease_name(instance: &str, id: u64) -> String {
    format!("{instance}.{id:016x}")
}

fn lease_id(instance: &str, name: &str) -> Option<u64> {
    let hex = name.strip_prefix(instance)?.strip_prefix('.')?;
    u64::from_str_radix(hex, 16).ok()
}

#[derive(Serialize)]
struct SettleWire {
    lease: String,
    spent: u64,
}

#[derive(Serialize)]
struct GrantWire<'a> {
    lease: String,
    key_id: &'a str,
    meter: &'static str,
    want: u64,
    min: u64,
}

#[derive(Serialize)]
struct RequestWire<'a> {
    instance: &'a str,
    settle: Vec<SettleWire>,
    grant: Vec<GrantWire<'a>>,
}

/// The body of a callout for one key's record: its settlements and, when `renewal.want > 0`,
/// a grant of a new lease `grant_id`.
pub fn request_body(
    instance: &str,
    key_id: &str,
    meter: Meter,
    renewal: &Renewal,
    grant_id: u64,
) -> String {
    let wire = RequestWire {
        instance,
        settle: renewal
            .settle
            .iter()
            .map(|s| SettleWire {
                lease: lease_name(instance, s.id),
                spent: s.spent,
            })
            .collect(),
        grant: if renewal.want > 0 {
            vec![GrantWire {
                lease: lease_name(instance, grant_id),
                key_id,
                meter: meter.name(),
                want: renewal.want,
                min: renewal.min.max(1),
            }]
        } else {
            Vec::new()
        },
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

#[derive(Deserialize)]
struct GrantAnswerWire {
    lease: String,
    units: u64,
    ttl_ms: u64,
    #[serde(default)]
    exhausted: Option<String>,
    #[serde(default)]
    retry_ms: Option<u64>,
}

#[derive(Deserialize)]
struct AnswerWire {
    #[serde(default)]
    grants: Vec<GrantAnswerWire>,
}

/// The lease a callout asked for: its id and the fewest units of use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    pub id: u64,
    pub min: u64,
}

/// What the callout's answer means for the record. `sent_ms` is when the request was sent (a
/// lease's deadline counts from it); `settled` the leases it settled; `asked` the lease it
/// asked for, if any. A status other than 200 or an unusable body is an error.
pub fn answer(
    instance: &str,
    meter: Meter,
    status: Option<&str>,
    body: Option<&[u8]>,
    settled: &[u64],
    asked: Option<Asked>,
    sent_ms: u64,
) -> Result<Answer, String> {
    match status {
        Some("200") => {}
        Some(other) => {
            let detail = body
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned())
                .unwrap_or_default();
            return Err(format!("status {other}: {detail}"));
        }
        None => return Err("no :status in the answer".into()),
    }
    let wire: AnswerWire = serde_json::from_slice(body.unwrap_or_default())
        .map_err(|e| format!("malformed lease answer: {e}"))?;
    let settled = settled.to_vec();
    let Some(asked) = asked else {
        return Ok(Answer::Applied {
            settled,
            grant: None,
        });
    };
    let grant = wire
        .grants
        .iter()
        .find(|g| lease_id(instance, &g.lease) == Some(asked.id))
        .ok_or("the answer has no grant for the lease asked")?;
    if grant.units == 0 {
        return Ok(Answer::Exhausted {
            settled,
            exhausted: grant
                .exhausted
                .as_deref()
                .and_then(|name| Exhausted::parse(meter, name)),
            min: asked.min,
            retry_ms: grant.retry_ms.unwrap_or(DEFAULT_RETRY_MS),
        });
    }
    Ok(Answer::Applied {
        settled,
        grant: Some(Granted {
            id: asked.id,
            units: grant.units,
            deadline_ms: sent_ms.saturating_add(grant.ttl_ms),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::QuotaWindow;
    use crate::lease_record::Settlement;

    const I: &str = "i_00ff";

    fn asked(id: u64) -> Asked {
        Asked { id, min: 1 }
    }

    #[test]
    fn the_body_carries_settlements_and_the_grant() {
        let renewal = Renewal {
            settle: vec![Settlement { id: 1, spent: 12 }],
            want: 40,
            min: 5,
            claimed: true,
        };
        let body = request_body(I, "key_1", Meter::Credits, &renewal, 0xabc);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "instance": I,
                "settle": [{"lease": "i_00ff.0000000000000001", "spent": 12}],
                "grant": [{"lease": "i_00ff.0000000000000abc", "key_id": "key_1",
                           "meter": "credits", "want": 40, "min": 5}]
            })
        );
        let settle_only = Renewal { want: 0, ..renewal };
        let json: serde_json::Value =
            serde_json::from_str(&request_body(I, "", Meter::Calls, &settle_only, 0)).unwrap();
        assert_eq!(json["grant"], serde_json::json!([]));
    }

    #[test]
    fn answers_become_what_the_record_needs() {
        let granted =
            br#"{"now_ms": 5, "settled": 1, "grants": [{"lease": "i_00ff.0000000000000abc",
            "key_id": "key_1", "meter": "calls", "units": 40, "ttl_ms": 30000,
            "exhausted": null, "retry_ms": null}]}"#;
        assert_eq!(
            answer(
                I,
                Meter::Calls,
                Some("200"),
                Some(granted),
                &[1],
                Some(asked(0xabc)),
                100
            ),
            Ok(Answer::Applied {
                settled: vec![1],
                grant: Some(Granted {
                    id: 0xabc,
                    units: 40,
                    deadline_ms: 30_100
                })
            })
        );
        let full = br#"{"grants": [{"lease": "i_00ff.0000000000000abc", "units": 0, "ttl_ms": 0,
            "exhausted": "daily", "retry_ms": 2000}]}"#;
        assert_eq!(
            answer(
                I,
                Meter::Calls,
                Some("200"),
                Some(full),
                &[],
                Some(asked(0xabc)),
                0
            ),
            Ok(Answer::Exhausted {
                settled: vec![],
                exhausted: Some(Exhausted::Quota(QuotaWindow::Daily)),
                min: 1,
                retry_ms: 2_000
            })
        );
        assert!(
            answer(I, Meter::Calls, Some("503"), Some(b"down"), &[], None, 0)
                .unwrap_err()
                .contains("503")
        );
        assert!(answer(I, Meter::Calls, Some("200"), Some(b"{"), &[], None, 0).is_err());
        let other =
            br#"{"grants": [{"lease": "i_00ff.0000000000000001", "units": 3, "ttl_ms": 1}]}"#;
        assert!(answer(
            I,
            Meter::Calls,
            Some("200"),
            Some(other),
            &[],
            Some(asked(2)),
            0
        )
        .is_err());
    }
}
