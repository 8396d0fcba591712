//! Rate-limit response headers: `RateLimit-Policy` and `RateLimit` (IETF httpapi
//! ratelimit-headers draft, structured fields) and the de-facto `X-RateLimit-*` trio.

use crate::config::LimitHeaders;
use crate::rate_limit::{PlanRates, RateStatus, RateWindow};

pub fn rate_limit_headers(
    mode: LimitHeaders,
    plan: PlanRates,
    status: RateStatus,
) -> Vec<(&'static str, String)> {
    if mode == LimitHeaders::None {
        return Vec::new();
    }
    let policies: Vec<String> = [
        (RateWindow::Second, plan.per_second),
        (RateWindow::Minute, plan.per_minute),
    ]
    .into_iter()
    .filter_map(|(window, limit)| {
        limit.map(|q| format!("\"{}\";q={q};w={}", window.name(), window.seconds()))
    })
    .collect();
    let mut headers = vec![
        ("ratelimit-policy", policies.join(", ")),
        (
            "ratelimit",
            format!(
                "\"{}\";r={};t={}",
                status.window.name(),
                status.remaining,
                status.reset_s
            ),
        ),
    ];
    if mode == LimitHeaders::All {
        headers.push(("x-ratelimit-limit", status.limit.to_string()));
        headers.push(("x-ratelimit-remaining", status.remaining.to_string()));
        headers.push(("x-ratelimit-reset", status.reset_s.to_string()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_describe_the_plan_and_the_tightest_window() {
        let plan = PlanRates {
            per_second: Some(5),
            per_minute: Some(100),
        };
        let status = RateStatus {
            window: RateWindow::Minute,
            limit: 100,
            remaining: 42,
            reset_s: 30,
        };
        let headers = rate_limit_headers(LimitHeaders::All, plan, status);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("ratelimit-policy"),
            Some("\"per-second\";q=5;w=1, \"per-minute\";q=100;w=60")
        );
        assert_eq!(get("ratelimit"), Some("\"per-minute\";r=42;t=30"));
        assert_eq!(get("x-ratelimit-remaining"), Some("42"));
        assert_eq!(
            rate_limit_headers(LimitHeaders::Ietf, plan, status).len(),
            2
        );
        assert!(rate_limit_headers(LimitHeaders::None, plan, status).is_empty());
    }
}
