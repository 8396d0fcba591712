//! What the key commands send and show: the API request bodies their flags make (the shared
//! `wire` types; the server judges every value and its messages come back as they are), and a
//! key as `label  value` lines.

use serde_json::{json, Value};

use super::{or_dash, table, CliError, CreateKeyArgs, UpdateKeyArgs};
use crate::domain::wire::{
    AllowInput, CreateKey, CreditsInput, KeyView, Object, PatchKey, QuotasInput, RateLimitsInput,
};
use crate::domain::Leased;

pub(super) fn create_body(args: &CreateKeyArgs) -> Result<CreateKey, CliError> {
    let quotas = QuotasInput {
        total: Some(json!(args.quota_total)),
        daily: Some(json!(args.quota_daily)),
        weekly: Some(json!(args.quota_weekly)),
        monthly: Some(json!(args.quota_monthly)),
    };
    let allowed = args
        .allow
        .iter()
        .map(|rule| parse_allow(rule))
        .collect::<Result<Vec<_>, _>>()?;
    let rate_limits = RateLimitsInput {
        per_second: Some(json!(args.rate_limit_per_second)),
        per_minute: Some(json!(args.rate_limit_per_minute)),
        per_hour: Some(json!(args.rate_limit_per_hour)),
    };
    let credits = (args.credits_limit.is_some() || args.credits_period.is_some()).then(|| {
        Object(CreditsInput {
            limit: args.credits_limit.map(|l| json!(l)),
            period: args.credits_period.as_ref().map(|p| json!(p)),
        })
    });
    Ok(CreateKey {
        alias: args.alias.clone(),
        description: args.description.clone(),
        category: args.category.clone(),
        expires_at: args.expires_at.clone(),
        quotas: Some(Object(quotas)),
        allowed: Some(allowed),
        rate_limits: Some(Object(rate_limits)),
        credits,
        external_id: args.external_id.clone(),
        meta: (!args.meta.is_empty())
            .then(|| parse_meta(&args.meta))
            .transpose()?,
    })
}

/// Only what the flags change: absent flags leave the key as it is.
pub(super) fn update_body(args: &UpdateKeyArgs) -> Result<PatchKey, CliError> {
    let windows = [
        &args.rate_limit_per_second,
        &args.rate_limit_per_minute,
        &args.rate_limit_per_hour,
    ];
    let rate_limits = windows.iter().any(|w| w.is_some()).then(|| {
        let [per_second, per_minute, per_hour] = windows.map(|w| w.as_deref().map(limit_value));
        Some(Object(RateLimitsInput {
            per_second,
            per_minute,
            per_hour,
        }))
    });
    let credits = if args.no_credits {
        Some(None)
    } else if args.credits_limit.is_some() || args.credits_period.is_some() {
        Some(Some(Object(CreditsInput {
            limit: args.credits_limit.as_deref().map(limit_value),
            period: args.credits_period.as_ref().map(|p| json!(p)),
        })))
    } else {
        None
    };
    let external_id = if args.no_external_id {
        Some(None)
    } else {
        args.external_id.clone().map(Some)
    };
    let meta = if args.no_meta {
        Some(Value::Null)
    } else if args.meta.is_empty() {
        None
    } else {
        Some(parse_meta(&args.meta)?)
    };
    Ok(PatchKey {
        rate_limits,
        credits,
        external_id,
        meta,
        ..PatchKey::default()
    })
}

/// `none` is no limit; a number is sent as one (the server judges it), anything else as text
/// (which the server refuses with the field's message).
fn limit_value(text: &str) -> Value {
    match text.trim() {
        "none" => Value::Null,
        t => t
            .parse::<i64>()
            .map(|n| json!(n))
            .unwrap_or_else(|_| json!(t)),
    }
}

/// `--meta NAME=VALUE` entries as the API's object (a repeated name keeps its last value). The
/// server validates names and values.
fn parse_meta(entries: &[String]) -> Result<Value, CliError> {
    let mut meta = serde_json::Map::new();
    for entry in entries {
        let Some((name, value)) = entry.split_once('=') else {
            return Err(CliError::new(format!(
                "--meta {entry:?}: expected NAME=VALUE"
            )));
        };
        meta.insert(name.to_owned(), json!(value));
    }
    Ok(Value::Object(meta))
}

/// `"GET /v1/**"` or `"/v1/**"` (any method). The server validates method and path.
fn parse_allow(rule: &str) -> Result<Object<AllowInput>, CliError> {
    let parts: Vec<&str> = rule.split_whitespace().collect();
    let (method, path) = match parts.as_slice() {
        [path] => ("*", *path),
        [method, path] => (*method, *path),
        _ => {
            return Err(CliError::new(format!(
                "--allow {rule:?}: expected \"METHOD PATH\" or \"PATH\""
            )))
        }
    };
    Ok(Object(AllowInput {
        method: method.to_owned(),
        path: path.to_owned(),
    }))
}

pub(super) fn key_details(key: &KeyView) -> String {
    let q = &key.quotas;
    let quotas = [
        ("total", q.total),
        ("daily", q.daily),
        ("weekly", q.weekly),
        ("monthly", q.monthly),
    ]
    .iter()
    .filter_map(|(w, cap)| cap.map(|c| format!("{w} {c}")))
    .collect::<Vec<_>>();
    let allowed = key
        .allowed
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect::<Vec<_>>();
    table::details(&[
        ("id", key.id.clone()),
        ("workspace", key.workspace_id.clone()),
        ("alias", key.alias.clone()),
        ("description", or_dash(key.description.clone())),
        ("category", key.category.clone()),
        ("status", key.status.clone()),
        ("expires_at", or_dash(key.expires_at.clone())),
        (
            "quotas",
            if quotas.is_empty() {
                "none".to_owned()
            } else {
                quotas.join(", ")
            },
        ),
        (
            "allowed",
            if allowed.is_empty() {
                "all endpoints".to_owned()
            } else {
                allowed.join(", ")
            },
        ),
        ("rate_limits", rate_limits_text(key)),
        ("credits", credits_text(key)),
        ("leased", Leased::from(key.leased).to_string()),
        ("external_id", or_dash(key.external_id.clone())),
        ("meta", meta_text(key)),
        ("prefix", key.prefix.clone()),
        ("created_at", key.created_at.clone()),
        ("last_used_at", or_dash(key.last_used_at.clone())),
    ])
}

/// `10/s, 5000/h`, or `none`.
fn rate_limits_text(key: &KeyView) -> String {
    let r = &key.rate_limits;
    let limits = [
        ("s", r.per_second),
        ("min", r.per_minute),
        ("h", r.per_hour),
    ]
    .iter()
    .filter_map(|(unit, n)| n.map(|n| format!("{n}/{unit}")))
    .collect::<Vec<_>>();
    if limits.is_empty() {
        "none".to_owned()
    } else {
        limits.join(", ")
    }
}

/// `1000 per month, 42 used, 958 remaining`, or `none (42 used this month)`.
fn credits_text(key: &KeyView) -> String {
    match (&key.credits, key.credits_remaining) {
        (Some(b), remaining) => format!(
            "{} per {}, {} used, {} remaining",
            b.limit,
            b.period.as_str(),
            key.credits_used,
            remaining.unwrap_or(0)
        ),
        (None, _) => format!("none ({} used this month)", key.credits_used),
    }
}

/// `region=eu, tier=gold`, or `none`.
fn meta_text(key: &KeyView) -> String {
    if key.meta.is_empty() {
        return "none".to_owned();
    }
    key.meta
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{json, Cli, Command, KeysCommand};

    #[test]
    fn allow_rules_parse() {
        assert_eq!(
            json(&parse_allow("GET /v1/**").unwrap()).unwrap(),
            json!({"method": "GET", "path": "/v1/**"})
        );
        assert_eq!(
            json(&parse_allow("/x").unwrap()).unwrap(),
            json!({"method": "*", "path": "/x"})
        );
        assert!(parse_allow("GET /a /b").is_err());
        assert!(parse_allow("  ").is_err());
    }

    #[test]
    fn update_flags_become_a_merge_patch() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "tollgate",
            "keys",
            "update",
            "key_1",
            "--rate-limit-per-second",
            "10",
            "--rate-limit-per-hour",
            "none",
            "--credits-limit",
            "500",
            "--credits-period",
            "day",
            "--no-external-id",
            "--meta",
            "tier=gold",
            "--meta",
            "region=eu",
        ])
        .unwrap();
        let Command::Keys(KeysCommand::Update(args)) = cli.command else {
            panic!("not keys update");
        };
        assert_eq!(
            json(&update_body(&args).unwrap()).unwrap(),
            json!({
                "rate_limits": {"per_second": 10, "per_hour": null},
                "credits": {"limit": 500, "period": "day"},
                "external_id": null,
                "meta": {"tier": "gold", "region": "eu"}
            })
        );
        let cli = Cli::try_parse_from([
            "tollgate",
            "keys",
            "update",
            "key_1",
            "--no-credits",
            "--no-meta",
        ])
        .unwrap();
        let Command::Keys(KeysCommand::Update(args)) = cli.command else {
            panic!("not keys update");
        };
        assert_eq!(
            json(&update_body(&args).unwrap()).unwrap(),
            json!({"credits": null, "meta": null})
        );
        assert!(Cli::try_parse_from([
            "tollgate",
            "keys",
            "update",
            "key_1",
            "--no-credits",
            "--credits-limit",
            "5"
        ])
        .is_err());
    }

    #[test]
    fn meta_entries_need_an_equals_sign() {
        assert_eq!(
            parse_meta(&["a=b=c".to_owned(), "e=".to_owned()]).unwrap(),
            json!({"a": "b=c", "e": ""})
        );
        assert!(parse_meta(&["nothing".to_owned()]).is_err());
        assert_eq!(limit_value("none"), Value::Null);
        assert_eq!(limit_value("-1"), json!(-1));
        assert_eq!(limit_value("ten"), json!("ten"));
    }
}
