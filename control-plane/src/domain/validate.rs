//! Parse, don't validate: request input becomes domain values here, or a [`ValidationError`]
//! that names the offending field (`quotas.daily: must be a positive integer`).
//!
//! Names and labels parse in `names.rs`; here the values of request bodies (quotas, rate
//! limits, credit budgets, meta, timestamps, grace periods, allowed endpoints). Methods are
//! upper-cased, credit periods lower-cased.

use serde_json::Value;

use super::credits::{CreditBudget, CreditPeriod};
use super::key::{AllowRule, Meta};
use super::names::{invalid, ValidationError};
use crate::clock;

pub const QUOTA_MAX: u64 = 1_000_000_000_000;
pub const ALLOWED_MAX: usize = 100;
pub const PATH_MAX: usize = 256;
pub const GRACE_SECONDS_MAX: i64 = 7 * 24 * 3600;
pub const META_MAX_ENTRIES: usize = 16;
pub const META_NAME_MAX: usize = 32;
/// Names and values of a key's `meta` together, in bytes.
pub const META_MAX_BYTES: usize = 1024;
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*",
];

/// A quota value: JSON `null` is no cap, otherwise a positive integer up to 10^12.
pub fn quota(field: &str, value: &Value) -> Result<Option<u64>, ValidationError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_u64() {
            Some(0) | None => Err(invalid(field, "must be a positive integer")),
            Some(v) if v > QUOTA_MAX => Err(invalid(field, format!("must be at most {QUOTA_MAX}"))),
            Some(v) => Ok(Some(v)),
        },
        _ => Err(invalid(field, "must be a positive integer")),
    }
}

/// A key's rate limit for one window: as a quota (`null` = none, else 1 to 10^12).
pub fn rate_limit(field: &str, value: &Value) -> Result<Option<u64>, ValidationError> {
    quota(field, value)
}

/// A credit budget from its two members as sent (`None` = absent): both are required.
pub fn credit_budget(
    limit: Option<&Value>,
    period: Option<&Value>,
) -> Result<CreditBudget, ValidationError> {
    let limit = match limit {
        None => return Err(invalid("credits.limit", "is required")),
        Some(v) => quota("credits.limit", v)?
            .ok_or_else(|| invalid("credits.limit", "must be a positive integer"))?,
    };
    let names: Vec<&str> = CreditPeriod::ALL.iter().map(|p| p.as_str()).collect();
    let period = match period {
        None => return Err(invalid("credits.period", "is required")),
        Some(Value::String(s)) => CreditPeriod::parse(&s.trim().to_ascii_lowercase()),
        Some(_) => None,
    }
    .ok_or_else(|| {
        invalid(
            "credits.period",
            format!("must be one of {}", names.join(", ")),
        )
    })?;
    Ok(CreditBudget { limit, period })
}

/// A key's `meta`: `null` or an object of at most 16 string values, names `[a-z0-9_-]{1,32}`,
/// at most 1 KiB of names and values, no control characters (values are forwarded as header
/// values).
pub fn meta(value: &Value) -> Result<Meta, ValidationError> {
    let entries = match value {
        Value::Null => return Ok(Meta::new()),
        Value::Object(entries) => entries,
        _ => return Err(invalid("meta", "must be an object of name: string pairs")),
    };
    if entries.len() > META_MAX_ENTRIES {
        return Err(invalid(
            "meta",
            format!("must have at most {META_MAX_ENTRIES} entries"),
        ));
    }
    let mut meta = Meta::new();
    let mut bytes = 0;
    for (name, value) in entries {
        let field = format!("meta.{name}");
        let name_ok = !name.is_empty()
            && name.len() <= META_NAME_MAX
            && name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if !name_ok {
            return Err(invalid(
                field,
                format!("name must be 1-{META_NAME_MAX} characters [a-z0-9_-]"),
            ));
        }
        let Value::String(text) = value else {
            return Err(invalid(field, "must be a string"));
        };
        if text.chars().any(char::is_control) {
            return Err(invalid(field, "must not contain control characters"));
        }
        bytes += name.len() + text.len();
        meta.insert(name.clone(), text.clone());
    }
    if bytes > META_MAX_BYTES {
        return Err(invalid(
            "meta",
            format!("must be at most {META_MAX_BYTES} bytes in all (names and values)"),
        ));
    }
    Ok(meta)
}

/// An RFC 3339 timestamp as Unix milliseconds. Past values are accepted here: a patch may
/// expire a key now (see [`new_key_expiry`] for a new key).
pub fn timestamp(field: &str, input: &str) -> Result<i64, ValidationError> {
    clock::parse_rfc3339(input.trim()).ok_or_else(|| {
        invalid(
            field,
            "must be an RFC 3339 timestamp such as 2027-01-01T00:00:00Z",
        )
    })
}

/// A new key's `expires_at`: a timestamp after `now_ms`, since a key created expired could
/// never be used. (Setting a past expiry on an existing key is how an operator expires it at
/// once, so patches take [`timestamp`] alone.)
pub fn new_key_expiry(input: &str, now_ms: i64) -> Result<i64, ValidationError> {
    let at = timestamp("expires_at", input)?;
    if at <= now_ms {
        return Err(invalid(
            "expires_at",
            "must be in the future (a key created expired could never be used)",
        ));
    }
    Ok(at)
}

pub fn grace_seconds(value: i64) -> Result<i64, ValidationError> {
    if (0..=GRACE_SECONDS_MAX).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            "grace_seconds",
            format!("must be between 0 and {GRACE_SECONDS_MAX}"),
        ))
    }
}

/// The `allowed` list: at most 100 `(method, path)` rules.
pub fn allowed<'a>(
    rules: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<AllowRule>, ValidationError> {
    if rules.len() > ALLOWED_MAX {
        return Err(invalid(
            "allowed",
            format!("must have at most {ALLOWED_MAX} entries"),
        ));
    }
    rules
        .enumerate()
        .map(|(i, (method, path))| {
            Ok(AllowRule {
                method: allow_method(&format!("allowed[{i}].method"), method)?,
                path: allow_path(&format!("allowed[{i}].path"), path)?,
            })
        })
        .collect()
}

fn allow_method(field: &str, input: &str) -> Result<String, ValidationError> {
    let method = input.trim().to_ascii_uppercase();
    if METHODS.contains(&method.as_str()) {
        Ok(method)
    } else {
        Err(invalid(
            field,
            format!("must be one of {}", METHODS.join(", ")),
        ))
    }
}

/// A path pattern as the filter matches it (`docs/protocol.md`): `/`-separated segments, `*` is
/// exactly one segment, a final `/**` is any rest (including nothing).
fn allow_path(field: &str, path: &str) -> Result<String, ValidationError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(invalid(field, "must start with '/'"));
    };
    if path.len() > PATH_MAX {
        return Err(invalid(
            field,
            format!("must be at most {PATH_MAX} characters"),
        ));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    if path.contains(['?', '#']) {
        return Err(invalid(
            field,
            "must not contain a query string or fragment (the query is never matched)",
        ));
    }
    if rest.is_empty() {
        return Ok(path.to_owned());
    }
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "" => {
                return Err(invalid(
                    field,
                    "must not contain empty segments ('//' or a trailing '/')",
                ))
            }
            "*" => {}
            "**" if i + 1 == segments.len() => {}
            "**" => return Err(invalid(field, "'**' is only allowed as the final segment")),
            s if s.contains('*') => {
                return Err(invalid(
                    field,
                    "'*' must be a whole segment ('/*/' or a final '/**')",
                ))
            }
            _ => {}
        }
    }
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::names::{Alias, Category, Description, ExternalId, PlanName, WorkspaceName};
    use crate::domain::plan::Plan;
    use serde_json::json;

    fn err_field<T: std::fmt::Debug>(r: Result<T, ValidationError>) -> String {
        r.unwrap_err().field
    }

    #[test]
    fn workspace_names() {
        assert_eq!(WorkspaceName::parse("  Acme ").unwrap().as_str(), "Acme");
        assert_eq!(
            WorkspaceName::parse(&"é".repeat(100))
                .unwrap()
                .as_str()
                .chars()
                .count(),
            100
        );
        assert_eq!(err_field(WorkspaceName::parse("   ")), "name");
        assert_eq!(err_field(WorkspaceName::parse(&"a".repeat(101))), "name");
        assert_eq!(err_field(WorkspaceName::parse("a\u{0}b")), "name");
    }

    #[test]
    fn plans_must_exist() {
        let plans = vec![Plan {
            name: "free".into(),
            max_keys: Some(2),
            rate_limit_per_second: None,
            rate_limit_per_minute: None,
        }];
        assert_eq!(PlanName::parse("free", &plans).unwrap().as_str(), "free");
        let e = PlanName::parse("gold", &plans).unwrap_err();
        assert_eq!(
            e.to_string(),
            "plan: unknown plan 'gold' (expected one of: free)"
        );
        let long = PlanName::parse(&"g".repeat(1_000_000), &plans).unwrap_err();
        assert_eq!(
            long.to_string(),
            "plan: unknown plan (expected one of: free)"
        );
    }

    #[test]
    fn aliases() {
        assert_eq!(
            Alias::parse(" mobile app:v2_prod-1.0 ").unwrap().as_str(),
            "mobile app:v2_prod-1.0"
        );
        assert!(Alias::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "  ", "a/b", "é", "a\tb", &"a".repeat(65)] {
            assert_eq!(err_field(Alias::parse(bad)), "alias", "{bad:?}");
        }
    }

    #[test]
    fn descriptions() {
        assert_eq!(Description::parse(None).unwrap(), None);
        assert_eq!(Description::parse(Some("  ")).unwrap(), None);
        assert_eq!(
            Description::parse(Some(" hi ")).unwrap().unwrap().as_str(),
            "hi"
        );
        assert!(Description::parse(Some(&"x".repeat(500)))
            .unwrap()
            .is_some());
        assert_eq!(
            err_field(Description::parse(Some(&"x".repeat(501)))),
            "description"
        );
        assert!(Description::parse(Some("two\r\nlines\tand a tab")).is_ok());
        for bad in ["a\u{0}b", "bell\u{7}", "del\u{7f}"] {
            assert_eq!(err_field(Description::parse(Some(bad))), "description");
        }
    }

    #[test]
    fn categories() {
        assert_eq!(Category::parse("Staging").unwrap().as_str(), "staging");
        assert_eq!(Category::parse("QA").unwrap().as_str(), "qa");
        assert_eq!(
            Category::parse("load-test_2").unwrap().as_str(),
            "load-test_2"
        );
        assert!(Category::parse(&"a".repeat(32)).is_ok());
        for bad in ["", "a b", "a.b", &"a".repeat(33), "ünï"] {
            assert_eq!(err_field(Category::parse(bad)), "category", "{bad:?}");
        }
    }

    #[test]
    fn quotas() {
        assert_eq!(quota("quotas.daily", &json!(null)).unwrap(), None);
        assert_eq!(quota("quotas.daily", &json!(1)).unwrap(), Some(1));
        assert_eq!(
            quota("quotas.daily", &json!(QUOTA_MAX)).unwrap(),
            Some(QUOTA_MAX)
        );
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("10"),
            json!(QUOTA_MAX + 1),
            json!([]),
        ] {
            let e = quota("quotas.daily", &bad).unwrap_err();
            assert_eq!(e.field, "quotas.daily", "{bad}");
        }
        assert_eq!(
            quota("quotas.daily", &json!(0)).unwrap_err().to_string(),
            "quotas.daily: must be a positive integer"
        );
    }

    #[test]
    fn rate_limits_are_positive_integers_up_to_the_quota_maximum() {
        let field = "rate_limits.per_second";
        assert_eq!(rate_limit(field, &json!(null)).unwrap(), None);
        assert_eq!(rate_limit(field, &json!(10)).unwrap(), Some(10));
        for bad in [
            json!(0),
            json!(-5),
            json!(2.5),
            json!("7"),
            json!(QUOTA_MAX + 1),
        ] {
            assert_eq!(rate_limit(field, &bad).unwrap_err().field, field, "{bad}");
        }
        assert_eq!(
            rate_limit(field, &json!(-1)).unwrap_err().to_string(),
            "rate_limits.per_second: must be a positive integer"
        );
        assert_eq!(
            rate_limit(field, &json!(QUOTA_MAX + 1))
                .unwrap_err()
                .to_string(),
            format!("rate_limits.per_second: must be at most {QUOTA_MAX}")
        );
    }

    #[test]
    fn credit_budgets_need_a_positive_limit_and_a_known_period() {
        let ok = credit_budget(Some(&json!(500)), Some(&json!(" Month "))).unwrap();
        assert_eq!((ok.limit, ok.period), (500, CreditPeriod::Month));
        let e = |l: Option<Value>, p: Option<Value>| {
            credit_budget(l.as_ref(), p.as_ref())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(Some(json!(0)), Some(json!("day"))),
            "credits.limit: must be a positive integer"
        );
        assert_eq!(
            e(Some(json!(-3)), Some(json!("day"))),
            "credits.limit: must be a positive integer"
        );
        assert_eq!(
            e(Some(json!(null)), Some(json!("day"))),
            "credits.limit: must be a positive integer"
        );
        assert_eq!(
            e(Some(json!(QUOTA_MAX + 1)), Some(json!("day"))),
            format!("credits.limit: must be at most {QUOTA_MAX}")
        );
        assert_eq!(e(None, Some(json!("day"))), "credits.limit: is required");
        assert_eq!(
            e(Some(json!(5)), Some(json!("week"))),
            "credits.period: must be one of day, month, total"
        );
        assert_eq!(
            e(Some(json!(5)), Some(json!(1))),
            "credits.period: must be one of day, month, total"
        );
        assert_eq!(e(Some(json!(5)), None), "credits.period: is required");
    }

    #[test]
    fn meta_is_a_small_flat_map_of_strings() {
        let m = meta(&json!({"tier": "gold", "region-1": "eu", "a_b": ""})).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m["tier"], "gold");
        assert!(meta(&json!(null)).unwrap().is_empty());
        assert!(meta(&json!({})).unwrap().is_empty());
        let e = |v: Value| meta(&v).unwrap_err();
        assert_eq!(e(json!(["a"])).field, "meta");
        assert_eq!(e(json!("x")).field, "meta");
        let bad = e(json!({"Bad Name": "x"}));
        assert_eq!(bad.field, "meta.Bad Name");
        assert_eq!(
            bad.to_string(),
            "meta.Bad Name: name must be 1-32 characters [a-z0-9_-]"
        );
        assert_eq!(e(json!({"": "x"})).field, "meta.");
        let long = "a".repeat(33);
        assert_eq!(
            e(json!({ long.clone(): "x" })).field,
            format!("meta.{long}")
        );
        assert_eq!(e(json!({"tier": 1})).field, "meta.tier");
        assert_eq!(e(json!({"tier": null})).field, "meta.tier");
        assert_eq!(e(json!({"tier": {"a": "b"}})).field, "meta.tier");
        assert_eq!(e(json!({"tier": "a\nb"})).field, "meta.tier");
        let many: serde_json::Map<String, Value> =
            (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        let too_many = e(Value::Object(many));
        assert_eq!(too_many.to_string(), "meta: must have at most 16 entries");
        let sixteen: serde_json::Map<String, Value> =
            (0..16).map(|i| (format!("k{i:02}"), json!("v"))).collect();
        assert_eq!(meta(&Value::Object(sixteen)).unwrap().len(), 16);
        // 1024 bytes of names and values pass, 1025 do not.
        let fits = json!({"a": "x".repeat(1023)});
        assert!(meta(&fits).is_ok());
        let too_long = e(json!({"a": "x".repeat(1024)}));
        assert_eq!(too_long.field, "meta");
        assert!(too_long.message.contains("1024 bytes"), "{too_long}");
    }

    #[test]
    fn external_ids_are_printable_ascii_without_spaces() {
        assert_eq!(
            ExternalId::parse(" cus_4f2a ").unwrap().as_str(),
            "cus_4f2a"
        );
        assert!(ExternalId::parse(&"x".repeat(128)).is_ok());
        assert!(ExternalId::parse("user@example.com|42").is_ok());
        for bad in ["", "  ", "a b", "é", "a\tb", &"x".repeat(129)] {
            assert_eq!(err_field(ExternalId::parse(bad)), "external_id", "{bad:?}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            timestamp("expires_at", "2027-01-01T00:00:00Z").unwrap(),
            1_798_761_600_000
        );
        assert_eq!(
            timestamp("expires_at", "2001-01-01T00:00:00Z").unwrap(),
            978_307_200_000
        );
        assert_eq!(
            err_field(timestamp("expires_at", "next week")),
            "expires_at"
        );
    }

    #[test]
    fn a_new_key_expires_in_the_future() {
        let now = 1_798_761_600_000;
        assert_eq!(
            new_key_expiry("2027-01-01T00:00:00.001Z", now).unwrap(),
            now + 1
        );
        for past in [
            "2027-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "0001-01-01T00:00:00Z",
        ] {
            let e = new_key_expiry(past, now).unwrap_err();
            assert_eq!(e.field, "expires_at", "{past}");
            assert!(e.message.starts_with("must be in the future"), "{e}");
        }
        assert_eq!(new_key_expiry("soon", now).unwrap_err().field, "expires_at");
    }

    #[test]
    fn grace() {
        assert_eq!(grace_seconds(0).unwrap(), 0);
        assert_eq!(grace_seconds(604_800).unwrap(), 604_800);
        assert!(grace_seconds(604_801).is_err());
        assert!(grace_seconds(-1).is_err());
    }

    fn rules(list: &[(&str, &str)]) -> Result<Vec<AllowRule>, ValidationError> {
        allowed(list.iter().copied())
    }

    #[test]
    fn allowed_methods_are_normalised_and_checked() {
        let r = rules(&[("get", "/v1/**"), ("*", "/"), ("OPTIONS", "/a/*/b")]).unwrap();
        assert_eq!(r[0].method, "GET");
        assert_eq!(r[1].method, "*");
        let e = rules(&[("GET", "/"), ("FETCH", "/")]).unwrap_err();
        assert_eq!(e.field, "allowed[1].method");
    }

    #[test]
    fn allowed_paths() {
        for good in [
            "/",
            "/**",
            "/v1",
            "/v1/**",
            "/v1/*/items",
            "/*",
            "/a-b/c.d/~e",
            "/v1/*/**",
        ] {
            assert!(rules(&[("GET", good)]).is_ok(), "{good}");
        }
        for bad in [
            "", "v1", "//", "/v1/", "/v1//a", "/**/a", "/v1/**/x", "/v1/a*", "/v1/***", "/v1?x=1",
            "/v1#f", "/a b",
        ] {
            let e = rules(&[("GET", bad)]).unwrap_err();
            assert_eq!(e.field, "allowed[0].path", "{bad:?}");
        }
        let long = format!("/{}", "a".repeat(256));
        assert!(rules(&[("GET", &long[..256])]).is_ok());
        assert_eq!(
            rules(&[("GET", &long)]).unwrap_err().field,
            "allowed[0].path"
        );
    }

    #[test]
    fn allowed_has_at_most_100_entries() {
        let many = vec![("GET", "/"); 101];
        assert_eq!(allowed(many.iter().copied()).unwrap_err().field, "allowed");
        let ok = vec![("GET", "/"); 100];
        assert_eq!(allowed(ok.iter().copied()).unwrap().len(), 100);
    }
}
