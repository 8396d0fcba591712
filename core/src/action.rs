//! What the host does with a request once the core has looked at it, as plain data: the adapter
//! carries it out with its own host calls, so the request path is tested without Envoy.

use crate::config::LimitHeaders;
use crate::denial::Denial;
use crate::key_state::KeyState;
use crate::limit_headers::rate_limit_headers;
use crate::rate_limit::{PlanRates, RateStatus};
use std::borrow::Cow;
use std::rc::Rc;

pub const HEADER_KEY_ID: &str = "x-tollgate-key-id";
pub const HEADER_WORKSPACE_ID: &str = "x-tollgate-workspace-id";

/// Request headers named `x-tollgate-*` are Tollgate's to set: a client's are removed on arrival,
/// so none ever reaches the upstream.
pub fn is_reserved_header(name: &str) -> bool {
    name.starts_with("x-tollgate-")
}

#[derive(Debug, Clone)]
pub enum Action<'a> {
    /// Send the request on after these header changes (resume it if it waited).
    Pass(Pass<'a>),
    /// Answer it with this local reply.
    Deny(LocalReply),
    /// Hold it: a lookup it waits for is in flight.
    Wait,
}

#[derive(Debug, Clone)]
pub struct Pass<'a> {
    /// The verified key: the upstream learns its identity. `None`: failure mode `open` let an
    /// unverified request through, so no identity reaches the upstream.
    pub identity: Option<Rc<KeyState>>,
    /// The header the key came from, removed before the upstream sees it (`hide_key`).
    pub hide_header: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderChange<'a> {
    /// Add a request header (client-sent `x-tollgate-*` headers were removed on arrival, so an
    /// add never duplicates one).
    Add(&'static str, &'a str),
    Remove(&'a str),
}

impl Pass<'_> {
    /// The request-header changes, in the order they are made.
    pub fn header_changes(&self) -> impl Iterator<Item = HeaderChange<'_>> {
        let (first, second) = match &self.identity {
            Some(state) => (
                HeaderChange::Add(HEADER_KEY_ID, state.wire.key_id.as_str()),
                HeaderChange::Add(HEADER_WORKSPACE_ID, state.wire.workspace_id.as_str()),
            ),
            None => (
                HeaderChange::Remove(HEADER_KEY_ID),
                HeaderChange::Remove(HEADER_WORKSPACE_ID),
            ),
        };
        let hide = self.hide_header.as_deref().map(HeaderChange::Remove);
        [Some(first), Some(second), hide].into_iter().flatten()
    }
}

/// A denial as the client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub denial: Denial,
    /// Rate-limit headers (and `retry-after` for a rate-limited request).
    pub rate_headers: Vec<(&'static str, String)>,
}

impl LocalReply {
    pub fn new(
        denial: Denial,
        quota_status: u32,
        mode: LimitHeaders,
        rate: Option<(PlanRates, RateStatus)>,
    ) -> LocalReply {
        let rate_headers = match rate {
            Some((plan, status)) => {
                let mut headers = rate_limit_headers(mode, plan, status);
                if let Denial::RateLimited(_) = denial {
                    headers.push(("retry-after", status.reset_s.max(1).to_string()));
                }
                headers
            }
            None => Vec::new(),
        };
        LocalReply {
            status: denial.status(quota_status),
            denial,
            rate_headers,
        }
    }

    /// Every response header: the JSON content type, the denial's own, the rate-limit ones.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend_from_slice(self.denial.extra_headers());
        headers.extend(self.rate_headers.iter().map(|(k, v)| (*k, v.as_str())));
        headers
    }

    pub fn body(&self) -> String {
        self.denial.body()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_adds_identity_then_hides_the_key_header() {
        let wire =
            serde_json::from_str(r#"{"key_id":"key_a","workspace_id":"ws_b","active":true}"#);
        let state = KeyState::from_wire(wire.unwrap()).unwrap();
        let pass = Pass {
            identity: Some(Rc::new(state)),
            hide_header: Some(Cow::Borrowed("x-api-key")),
        };
        let changes: Vec<_> = pass.header_changes().collect();
        assert_eq!(
            changes,
            [
                HeaderChange::Add(HEADER_KEY_ID, "key_a"),
                HeaderChange::Add(HEADER_WORKSPACE_ID, "ws_b"),
                HeaderChange::Remove("x-api-key"),
            ]
        );
        let unverified = Pass {
            identity: None,
            hide_header: None,
        };
        let changes: Vec<_> = unverified.header_changes().collect();
        assert_eq!(
            changes,
            [
                HeaderChange::Remove(HEADER_KEY_ID),
                HeaderChange::Remove(HEADER_WORKSPACE_ID),
            ]
        );
    }
}
