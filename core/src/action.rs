//! What the host does with a request once the core has looked at it, as plain data: the adapter
//! carries it out with its own host calls, so the request path is tested without Envoy.

use crate::config::LimitHeaders;
use crate::denial::Denial;
use crate::key_state::KeyState;
use crate::limit_headers::rate_limit_headers;
use crate::rate_limit::RateView;
use std::borrow::Cow;
use std::rc::Rc;

pub const HEADER_KEY_ID: &str = "x-tollgate-key-id";
pub const HEADER_WORKSPACE_ID: &str = "x-tollgate-workspace-id";
pub const HEADER_EXTERNAL_ID: &str = "x-tollgate-external-id";

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

/// Where the key was, so that the upstream never sees it (`hide_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hide<'a> {
    /// Remove this header.
    Header(Cow<'a, str>),
    /// Replace `:path` with this one, the query without the key's parameter.
    Path(String),
}

impl Hide<'_> {
    pub fn into_owned(self) -> Hide<'static> {
        match self {
            Hide::Header(name) => Hide::Header(Cow::Owned(name.into_owned())),
            Hide::Path(path) => Hide::Path(path),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pass<'a> {
    /// The verified key: the upstream learns its identity. `None`: failure mode `open` let an
    /// unverified request through, so no identity reaches the upstream.
    pub identity: Option<Rc<KeyState>>,
    pub hide: Option<Hide<'a>>,
    /// The configuration's `forward_meta`: (meta name, its header).
    pub forward_meta: &'a [(String, String)],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderChange<'a> {
    /// Add a request header (client-sent `x-tollgate-*` headers were removed on arrival, so an
    /// add never duplicates one).
    Add(&'a str, &'a str),
    Remove(&'a str),
    /// Replace a header's value (`:path`).
    Set(&'a str, &'a str),
}

impl Pass<'_> {
    /// The request-header changes, in the order they are made: the identity (key, workspace,
    /// external id, forwarded meta), then hiding the key.
    pub fn header_changes(&self) -> impl Iterator<Item = HeaderChange<'_>> {
        let state = self.identity.as_deref();
        let ids = match state {
            Some(state) => [
                HeaderChange::Add(HEADER_KEY_ID, state.wire.key_id.as_str()),
                HeaderChange::Add(HEADER_WORKSPACE_ID, state.wire.workspace_id.as_str()),
            ],
            None => [
                HeaderChange::Remove(HEADER_KEY_ID),
                HeaderChange::Remove(HEADER_WORKSPACE_ID),
            ],
        };
        let external = state
            .and_then(|s| s.wire.external_id.as_deref())
            .map(|id| HeaderChange::Add(HEADER_EXTERNAL_ID, id));
        let meta = state.into_iter().flat_map(move |s| {
            self.forward_meta.iter().filter_map(move |(name, header)| {
                let value = s.wire.meta.get(name)?;
                Some(HeaderChange::Add(header.as_str(), value.as_str()))
            })
        });
        let hide = self.hide.as_ref().map(|hide| match hide {
            Hide::Header(name) => HeaderChange::Remove(name),
            Hide::Path(path) => HeaderChange::Set(":path", path),
        });
        ids.into_iter().chain(external).chain(meta).chain(hide)
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
        rate: Option<RateView>,
    ) -> LocalReply {
        let rate_headers = match rate {
            Some(view) => {
                let mut headers = rate_limit_headers(mode, &view);
                if denial.is_rate_limit() {
                    headers.push(("retry-after", view.status.reset_s.max(1).to_string()));
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

    fn state(json: &str) -> Rc<KeyState> {
        Rc::new(KeyState::from_wire(serde_json::from_str(json).unwrap()).unwrap())
    }

    #[test]
    fn pass_adds_identity_then_hides_the_key_header() {
        let pass = Pass {
            identity: Some(state(
                r#"{"key_id":"key_a","workspace_id":"ws_b","active":true}"#,
            )),
            hide: Some(Hide::Header(Cow::Borrowed("x-api-key"))),
            forward_meta: &[],
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
            hide: None,
            forward_meta: &[],
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

    #[test]
    fn the_owner_and_only_the_listed_meta_are_forwarded_and_a_query_key_is_cut() {
        let forward = [
            ("tier".to_string(), "x-tollgate-meta-tier".to_string()),
            ("absent".to_string(), "x-tollgate-meta-absent".to_string()),
        ];
        let pass = Pass {
            identity: Some(state(
                r#"{"key_id":"key_a","workspace_id":"ws_b","active":true,
                    "external_id":"cus_42","meta":{"tier":"gold","secret_note":"x"}}"#,
            )),
            hide: Some(Hide::Path("/v1/x?a=1".into())),
            forward_meta: &forward,
        };
        let changes: Vec<_> = pass.header_changes().collect();
        assert_eq!(
            changes,
            [
                HeaderChange::Add(HEADER_KEY_ID, "key_a"),
                HeaderChange::Add(HEADER_WORKSPACE_ID, "ws_b"),
                HeaderChange::Add(HEADER_EXTERNAL_ID, "cus_42"),
                HeaderChange::Add("x-tollgate-meta-tier", "gold"),
                HeaderChange::Set(":path", "/v1/x?a=1"),
            ]
        );
    }
}
