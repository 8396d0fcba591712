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

/// Set in the id of a lease granted with a key lookup (docs/protocol.md, "The first leases,
/// granted with the lookup"); the filter's own lease ids never have it.
pub const LOOKUP_LEASE: u64 = 1 << 63;
/// Set in the id of a lookup's `credits` lease (wire suffix `k`; `calls`: `c`).
const LOOKUP_CREDITS: u64 = 1 << 62;
/// The bits of a lookup's lease id base: 62, so a base and its meter fit one 64-bit id.
pub const LOOKUP_BASE_BITS: u64 = LOOKUP_CREDITS - 1;

/// The id of the lease of `meter` a lookup with lease id base `base` asks for.
pub fn lookup_lease_id(base: u64, meter: Meter) -> u64 {
    let credits = match meter {
        Meter::Calls => 0,
        Meter::Credits => LOOKUP_CREDITS,
    };
    LOOKUP_LEASE | credits | (base & LOOKUP_BASE_BITS)
}

/// A lease's id on the wire: the instance, a dot, 16 hex digits; a lookup's lease adds `c`
/// (`calls`) or `k` (`credits`) to its base.
pub fn lease_name(instance: &str, id: u64) -> String {
    if id & LOOKUP_LEASE == 0 {
        return format!("{instance}.{id:016x}");
    }
    let meter = if id & LOOKUP_CREDITS == 0 { 'c' } else { 'k' };
    format!("{instance}.{:016x}{meter}", id & LOOKUP_BASE_BITS)
}

/// The lease id base of a lookup on the wire: the instance, a dot, 16 hex digits.
pub fn lookup_base_name(instance: &str, base: u64) -> String {
    format!("{instance}.{:016x}", base & LOOKUP_BASE_BITS)
}

/// The id [`lease_name`] named `name`, if it is one of this instance's.
fn lease_id(instance: &str, name: &str) -> Option<u64> {
    let rest = name.strip_prefix(instance)?.strip_prefix('.')?;
    let (hex, meter) = match rest.len() {
        16 => (rest, None),
        17 => match rest.split_at(16) {
            (hex, "c") => (hex, Some(Meter::Calls)),
            (hex, "k") => (hex, Some(Meter::Credits)),
            _ => return None,
        },
        _ => return None,
    };
    let value = u64::from_str_radix(hex, 16).ok()?;
    match meter {
        None => Some(value),
        Some(_) if value > LOOKUP_BASE_BITS => None,
        Some(meter) => Some(lookup_lease_id(value, meter)),
    }
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

/// The part of a lookup answer the filter reads when it asked for the first leases.
#[derive(Deserialize)]
struct LookupLeasesWire {
    #[serde(default)]
    leases: Vec<GrantAnswerWire>,
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
    Ok(granted(meter, grant, asked, settled, sent_ms))
}

/// What grant `grant` of lease `asked` means for the record.
fn granted(
    meter: Meter,
    grant: &GrantAnswerWire,
    asked: Asked,
    settled: Vec<u64>,
    sent_ms: u64,
) -> Answer {
    if grant.units == 0 {
        return Answer::Exhausted {
            settled,
            exhausted: grant
                .exhausted
                .as_deref()
                .and_then(|name| Exhausted::parse(meter, name)),
            min: asked.min,
            retry_ms: grant.retry_ms.unwrap_or(DEFAULT_RETRY_MS),
        };
    }
    Answer::Applied {
        settled,
        grant: Some(Granted {
            id: asked.id,
            units: grant.units,
            deadline_ms: sent_ms.saturating_add(grant.ttl_ms),
        }),
    }
}

/// The query a lookup adds to ask for the first leases of its key: lease id base `base`,
/// `want` units each.
pub fn lookup_query(instance: &str, base: u64, want: u64) -> String {
    format!("?lease={}&want={want}", lookup_base_name(instance, base))
}

/// The leases a lookup answer (`body`, status 200) carries for lease id base `base`, each with
/// what it means for its meter's record, like a lease callout's grant. Entries that are not of
/// this base are ignored (never spent: the control plane charges them at their expiry).
pub fn lookup_leases(
    instance: &str,
    body: &[u8],
    base: u64,
    sent_ms: u64,
) -> Result<Vec<(Meter, Answer)>, String> {
    let wire: LookupLeasesWire =
        serde_json::from_slice(body).map_err(|e| format!("malformed leases: {e}"))?;
    let mut answers: Vec<(Meter, Answer)> = Vec::new();
    for meter in [Meter::Calls, Meter::Credits] {
        let id = lookup_lease_id(base, meter);
        let grant = wire
            .leases
            .iter()
            .find(|g| lease_id(instance, &g.lease) == Some(id));
        if let Some(grant) = grant {
            let asked = Asked { id, min: 1 };
            answers.push((meter, granted(meter, grant, asked, Vec::new(), sent_ms)));
        }
    }
    Ok(answers)
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
    fn a_lookups_lease_ids_round_trip_and_never_meet_the_filters_own() {
        let base = 0x0123_4567_89ab_cdef;
        let calls = lookup_lease_id(base, Meter::Calls);
        let credits = lookup_lease_id(base, Meter::Credits);
        assert_eq!(lease_name(I, calls), "i_00ff.0123456789abcdefc");
        assert_eq!(lease_name(I, credits), "i_00ff.0123456789abcdefk");
        assert_eq!(lookup_base_name(I, base), "i_00ff.0123456789abcdef");
        for id in [calls, credits, 0xabc] {
            assert_eq!(lease_id(I, &lease_name(I, id)), Some(id));
        }
        assert_ne!(calls, credits);
        assert!(calls & LOOKUP_LEASE != 0 && 0xabc & LOOKUP_LEASE == 0);
        assert_eq!(
            lease_id(I, "i_00ff.f123456789abcdefc"),
            None,
            "base too wide"
        );
        assert_eq!(lease_id(I, "i_00ff.0123456789abcdefx"), None);
        assert_eq!(
            lookup_query(I, base, 10),
            "?lease=i_00ff.0123456789abcdef&want=10"
        );
    }

    #[test]
    fn a_lookups_leases_become_what_each_record_needs() {
        let body = br#"{"key_id": "key_1", "active": true, "leases": [
            {"lease": "i_00ff.0000000000000007c", "key_id": "key_1", "meter": "calls",
             "units": 10, "ttl_ms": 30000, "exhausted": null, "retry_ms": null},
            {"lease": "i_00ff.0000000000000007k", "key_id": "key_1", "meter": "credits",
             "units": 0, "ttl_ms": 0, "exhausted": "month", "retry_ms": 1000},
            {"lease": "i_00ff.0000000000000008c", "units": 5, "ttl_ms": 1}]}"#;
        let answers = lookup_leases(I, body, 7, 100).unwrap();
        assert_eq!(
            answers,
            vec![
                (
                    Meter::Calls,
                    Answer::Applied {
                        settled: vec![],
                        grant: Some(Granted {
                            id: lookup_lease_id(7, Meter::Calls),
                            units: 10,
                            deadline_ms: 30_100
                        })
                    }
                ),
                (
                    Meter::Credits,
                    Answer::Exhausted {
                        settled: vec![],
                        exhausted: Exhausted::parse(Meter::Credits, "month"),
                        min: 1,
                        retry_ms: 1_000
                    }
                )
            ]
        );
        assert_eq!(lookup_leases(I, br#"{"key_id": "k"}"#, 7, 0), Ok(vec![]));
        assert!(lookup_leases(I, br#"{"leases": 3}"#, 7, 0).is_err());
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
