//! Rate-limit response headers: `RateLimit-Policy` and `RateLimit` (IETF httpapi
//! ratelimit-headers draft, structured fields) and the de-facto `X-RateLimit-*` trio.

use crate::config::LimitHeaders;
use crate::rate_limit::{RateView, RateWindow, Scope};
use crate::usage_record::push_u64;

/// `RateLimit-Policy` lists every limit that applies (the plan's, then the key's own); the
/// others describe the tightest one.
pub fn rate_limit_headers(mode: LimitHeaders, view: &RateView) -> Vec<(&'static str, String)> {
    if mode == LimitHeaders::None {
        return Vec::new();
    }
    let status = view.status;
    let mut policy = String::with_capacity(48);
    for (scope, rates) in [(Scope::Plan, view.plan), (Scope::Key, view.key)] {
        for window in RateWindow::ALL {
            let Some(q) = rates.get(window) else { continue };
            if !policy.is_empty() {
                policy.push_str(", ");
            }
            policy.push('"');
            policy.push_str(scope.policy(window));
            policy.push_str("\";q=");
            push_u64(&mut policy, q);
            policy.push_str(";w=");
            push_u64(&mut policy, window.seconds());
        }
    }
    let mut current = String::with_capacity(32);
    current.push('"');
    current.push_str(status.scope.policy(status.window));
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
    use crate::rate_limit::{RateStatus, Rates};

    fn header<'a>(headers: &'a [(&str, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn headers_describe_the_plan_and_the_tightest_window() {
        let view = RateView {
            plan: Rates {
                per_second: Some(5),
                per_minute: Some(100),
                per_hour: None,
            },
            key: Rates::default(),
            status: RateStatus {
                scope: Scope::Plan,
                window: RateWindow::Minute,
                limit: 100,
                remaining: 42,
                reset_s: 30,
            },
        };
        let headers = rate_limit_headers(LimitHeaders::All, &view);
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            Some("\"per-second\";q=5;w=1, \"per-minute\";q=100;w=60")
        );
        assert_eq!(
            header(&headers, "ratelimit"),
            Some("\"per-minute\";r=42;t=30")
        );
        assert_eq!(header(&headers, "x-ratelimit-remaining"), Some("42"));
        assert_eq!(rate_limit_headers(LimitHeaders::Ietf, &view).len(), 2);
        assert!(rate_limit_headers(LimitHeaders::None, &view).is_empty());
    }

    #[test]
    fn a_key_limit_is_listed_after_the_plan_and_named_when_tightest() {
        let view = RateView {
            plan: Rates {
                per_second: Some(50),
                ..Rates::default()
            },
            key: Rates {
                per_second: Some(10),
                per_hour: Some(1000),
                ..Rates::default()
            },
            status: RateStatus {
                scope: Scope::Key,
                window: RateWindow::Second,
                limit: 10,
                remaining: 3,
                reset_s: 1,
            },
        };
        let headers = rate_limit_headers(LimitHeaders::All, &view);
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            Some(
                "\"per-second\";q=50;w=1, \"key-per-second\";q=10;w=1, \"key-per-hour\";q=1000;w=3600"
            )
        );
        assert_eq!(
            header(&headers, "ratelimit"),
            Some("\"key-per-second\";r=3;t=1")
        );
        assert_eq!(header(&headers, "x-ratelimit-limit"), Some("10"));
    }
}
