//! Every way the filter can refuse a request, with its exact status and JSON body.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    MissingKey,
    InvalidKey,
    InactiveKey,
    ExpiredKey,
    EndpointNotAllowed,
    VerificationUnavailable,
}

impl Denial {
    pub fn status(self) -> u32 {
        match self {
            Denial::MissingKey | Denial::InvalidKey | Denial::InactiveKey | Denial::ExpiredKey => {
                401
            }
            Denial::EndpointNotAllowed => 403,
            Denial::VerificationUnavailable => 503,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Denial::MissingKey => "Missing API Key",
            Denial::InvalidKey => "Invalid API Key",
            Denial::InactiveKey => "Inactive API Key",
            Denial::ExpiredKey => "Expired API Key",
            Denial::EndpointNotAllowed => "API key not allowed to access this endpoint",
            Denial::VerificationUnavailable => "Key verification unavailable",
        }
    }

    /// Machine-readable code, also the suffix of the `tollgate.denied.<code>` metric.
    pub fn code(self) -> &'static str {
        match self {
            Denial::MissingKey => "missing_key",
            Denial::InvalidKey => "invalid_key",
            Denial::InactiveKey => "inactive_key",
            Denial::ExpiredKey => "expired_key",
            Denial::EndpointNotAllowed => "endpoint_not_allowed",
            Denial::VerificationUnavailable => "verification_unavailable",
        }
    }

    pub const ALL: [Denial; 6] = [
        Denial::MissingKey,
        Denial::InvalidKey,
        Denial::InactiveKey,
        Denial::ExpiredKey,
        Denial::EndpointNotAllowed,
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

    /// Extra response headers beside `content-type`.
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
        assert_eq!(Denial::EndpointNotAllowed.status(), 403);
        assert_eq!(Denial::VerificationUnavailable.status(), 503);
        assert_eq!(Denial::ExpiredKey.status(), 401);
        assert!(Denial::MissingKey.extra_headers()[0].0 == "www-authenticate");
    }
}
