//! Rate-limit response headers: `RateLimit-Policy` and `RateLimit` (IETF httpapi
//! ratelimit-headers draft, structured fields) and the de-facto `X-RateLimit-*` trio.

use crate::config::LimitHeaders;
use crate::rate_limit::{PlanRates, RateStatus, RateWindow};
use crate::usage_record::push_u64;

pub fn rate_limit_headers(
    mode: LimitHeaders,
    plan: PlanRates,
    status: RateStatus,
) -> Vec<(&'static str, String)> {
    if mode == LimitHeaders::None {
        return Vec::new();
    }
    let mut policy = String::with_capacity(48);
    for (window, limit) in [
        (RateWindow::Second, plan.per_second),
        (RateWindow::Minute, plan.per_minute),
    ] {
        let Some(q) = limit else { continue };
        if !policy.is_empty() {
            policy.push_str(", ");
        }
        policy.push('"');
        policy.push_str(window.name());
        policy.push_str("\";q=");
        push_u64(&mut policy, q);
        policy.push_str(";w=");
        push_u64(&mut policy, window.seconds());
    }
    let mut current = String::with_capacity(32);
    current.push('"');
    current.push_str(status.window.name());
    current.push_str("\";r=");
    push_u64(&mut current, status.remaining);
    current.push_str(";t=");
    push_u64(&mut current, status.reset_s);
    let mut headers = Vec::with_capacity(5);
    headers.push(("ratelimit-policy", policy));
    headers.push(("ratelimit", current));
    if mode == LimitHeaders::All {
        let number = |n: u64| {
            let mut s = String::with_capacity(20);
            push_u64(&mut s, n);
            s
        };
        headers.push(("x-ratelimit-limit", number(status.limit)));
        headers.push(("x-ratelimit-remaining", number(status.remaining)));
        headers.push(("x-ratelimit-reset", number(status.reset_s)));
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
