//! Every way the filter can refuse a request, with its exact status and JSON body.

use crate::budget::QuotaWindow;
use crate::key_state::CreditPeriod;
use crate::rate_limit::RateWindow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    IpBlocked,
    MissingKey,
    InvalidKey,
    InactiveKey,
    ExpiredKey,
    EndpointNotAllowed,
    QuotaExceeded(QuotaWindow),
    CreditsExhausted(CreditPeriod),
    /// The plan's limit, shared by every key of the workspace.
    RateLimited(RateWindow),
    /// The key's own limit.
    KeyRateLimited(RateWindow),
    VerificationUnavailable,
}

impl Denial {
    /// The status; a quota denial answers `quota_status` (401 unless configured to 429).
    pub fn status(self, quota_status: u32) -> u32 {
        match self {
            Denial::MissingKey | Denial::InvalidKey | Denial::InactiveKey | Denial::ExpiredKey => {
                401
            }
            Denial::IpBlocked | Denial::EndpointNotAllowed => 403,
            Denial::QuotaExceeded(_) | Denial::CreditsExhausted(_) => quota_status,
            Denial::RateLimited(_) | Denial::KeyRateLimited(_) => 429,
            Denial::VerificationUnavailable => 503,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Denial::IpBlocked => "IP temporarily blocked",
            Denial::MissingKey => "Missing API Key",
            Denial::InvalidKey => "Invalid API Key",
            Denial::InactiveKey => "Inactive API Key",
            Denial::ExpiredKey => "Expired API Key",
            Denial::EndpointNotAllowed => "API key not allowed to access this endpoint",
            Denial::QuotaExceeded(QuotaWindow::Total) => "Rate limit exceeded: quota total",
            Denial::QuotaExceeded(QuotaWindow::Daily) => "Rate limit exceeded: quota daily",
            Denial::QuotaExceeded(QuotaWindow::Weekly) => "Rate limit exceeded: quota weekly",
            Denial::QuotaExceeded(QuotaWindow::Monthly) => "Rate limit exceeded: quota monthly",
            Denial::RateLimited(RateWindow::Second) => {
                "You have exceeded the per-second rate limit on your subscription"
            }
            Denial::RateLimited(RateWindow::Minute) => {
                "You have exceeded the per-minute rate limit on your subscription"
            }
            Denial::RateLimited(RateWindow::Hour) => {
                "You have exceeded the per-hour rate limit on your subscription"
            }
            Denial::KeyRateLimited(RateWindow::Second) => {
                "You have exceeded the per-second rate limit of this API key"
            }
            Denial::KeyRateLimited(RateWindow::Minute) => {
                "You have exceeded the per-minute rate limit of this API key"
            }
            Denial::KeyRateLimited(RateWindow::Hour) => {
                "You have exceeded the per-hour rate limit of this API key"
            }
            Denial::CreditsExhausted(CreditPeriod::Day) => "Rate limit exceeded: credits daily",
            Denial::CreditsExhausted(CreditPeriod::Month) => "Rate limit exceeded: credits monthly",
            Denial::CreditsExhausted(CreditPeriod::Total) => "Rate limit exceeded: credits total",
            Denial::VerificationUnavailable => "Key verification unavailable",
        }
    }

    /// Machine-readable code, also the suffix of the `tollgate.requests.denied.<code>` metric.
    pub fn code(self) -> &'static str {
        match self {
            Denial::IpBlocked => "ip_blocked",
            Denial::MissingKey => "missing_key",
            Denial::InvalidKey => "invalid_key",
            Denial::InactiveKey => "inactive_key",
            Denial::ExpiredKey => "expired_key",
            Denial::EndpointNotAllowed => "endpoint_not_allowed",
            Denial::QuotaExceeded(_) => "quota_exceeded",
            Denial::CreditsExhausted(_) => "credits_exhausted",
            Denial::RateLimited(_) => "rate_limited",
            Denial::KeyRateLimited(_) => "key_rate_limited",
            Denial::VerificationUnavailable => "verification_unavailable",
        }
    }

    /// One of each code (for metric names).
    pub const ALL: [Denial; 11] = [
        Denial::IpBlocked,
        Denial::MissingKey,
        Denial::InvalidKey,
        Denial::InactiveKey,
        Denial::ExpiredKey,
        Denial::EndpointNotAllowed,
        Denial::QuotaExceeded(QuotaWindow::Total),
        Denial::CreditsExhausted(CreditPeriod::Month),
        Denial::RateLimited(RateWindow::Second),
        Denial::KeyRateLimited(RateWindow::Second),
        Denial::VerificationUnavailable,
    ];

    pub fn body(self) -> String {
        // Messages and codes are fixed ASCII without quotes: no escaping needed.
        format!(
            "{{\"error\":\"{}\",\"code\":\"{}\"}}",
            self.message(),
            self.code()
        )
    }

    /// Extra response headers beside `content-type` (rate-limit headers are added apart).
    pub fn extra_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Denial::MissingKey => &[("www-authenticate", "ApiKey realm=\"tollgate\"")],
            Denial::VerificationUnavailable => &[("retry-after", "1")],
            _ => &[],
        }
    }

    /// Counts towards blocking an IP for repeated failed authentication.
    pub fn is_auth_failure(self) -> bool {
        matches!(
            self,
            Denial::MissingKey | Denial::InvalidKey | Denial::InactiveKey | Denial::ExpiredKey
        )
    }

    /// Usage analytics count these as `rate_limited` whatever the status code.
    pub fn is_quota(self) -> bool {
        matches!(self, Denial::QuotaExceeded(_) | Denial::CreditsExhausted(_))
    }

    /// Answered with `retry-after` (the window's reset).
    pub fn is_rate_limit(self) -> bool {
        matches!(self, Denial::RateLimited(_) | Denial::KeyRateLimited(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_the_documented_json() {
        for denial in Denial::ALL {
            let body: serde_json::Value = serde_json::from_str(&denial.body()).unwrap();
            assert_eq!(body["error"], denial.message());
            assert_eq!(body["code"], denial.code());
        }
        assert_eq!(Denial::EndpointNotAllowed.status(401), 403);
        assert_eq!(Denial::IpBlocked.status(401), 403);
        assert_eq!(Denial::VerificationUnavailable.status(401), 503);
        assert_eq!(Denial::ExpiredKey.status(429), 401);
        assert_eq!(Denial::QuotaExceeded(QuotaWindow::Daily).status(401), 401);
        assert_eq!(Denial::QuotaExceeded(QuotaWindow::Daily).status(429), 429);
        assert_eq!(Denial::RateLimited(RateWindow::Minute).status(401), 429);
        assert_eq!(
            Denial::QuotaExceeded(QuotaWindow::Weekly).message(),
            "Rate limit exceeded: quota weekly"
        );
        assert_eq!(
            Denial::RateLimited(RateWindow::Second).message(),
            "You have exceeded the per-second rate limit on your subscription"
        );
        assert!(Denial::MissingKey.extra_headers()[0].0 == "www-authenticate");
        let key_limited = Denial::KeyRateLimited(RateWindow::Second);
        assert_eq!(
            key_limited.body(),
            r#"{"error":"You have exceeded the per-second rate limit of this API key","code":"key_rate_limited"}"#
        );
        assert_eq!(key_limited.status(401), 429);
        let credits = Denial::CreditsExhausted(CreditPeriod::Month);
        assert_eq!(
            credits.body(),
            r#"{"error":"Rate limit exceeded: credits monthly","code":"credits_exhausted"}"#
        );
        assert_eq!((credits.status(401), credits.status(429)), (401, 429));
        assert!(credits.is_quota() && !key_limited.is_quota());
    }
}
