//! The decision for one request once the key's state is known.

use crate::denial::Denial;
use crate::key_state::KeyState;

/// What the upstream learns about the caller on pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    pub key_id: &'a str,
    pub workspace_id: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    Pass(Identity<'a>),
    /// Failure mode `open`: the control plane is unreachable and the key was never seen.
    PassUnverified,
    Deny(Denial),
}

/// The request facts a decision may need. `path` is without its query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub method: String,
    pub path: String,
    /// Empty when unknown.
    pub client_ip: String,
}

/// Checks in the order a user would expect: a replaced secret is invalid before anything else;
/// a deactivated key says so even when it has also expired.
pub fn decide<'a>(state: &'a KeyState, now_ms: u64, request: &RequestFacts) -> Decision<'a> {
    let wire = &state.wire;
    if wire
        .secret_valid_until_ms
        .is_some_and(|until| now_ms >= until)
    {
        return Decision::Deny(Denial::InvalidKey);
    }
    if !wire.active {
        return Decision::Deny(Denial::InactiveKey);
    }
    if wire.expires_at_ms.is_some_and(|at| now_ms >= at) {
        return Decision::Deny(Denial::ExpiredKey);
    }
    if !state.allows(&request.method, &request.path) {
        return Decision::Deny(Denial::EndpointNotAllowed);
    }
    Decision::Pass(Identity {
        key_id: &wire.key_id,
        workspace_id: &wire.workspace_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_state::{AllowedEndpoint, KeyStateWire};

    fn state(edit: impl FnOnce(&mut KeyStateWire)) -> KeyState {
        let mut wire = KeyStateWire {
            key_id: "key_1".into(),
            workspace_id: "ws_1".into(),
            active: true,
            expires_at_ms: None,
            secret_valid_until_ms: None,
            allowed: vec![],
            quotas: Default::default(),
            usage: Default::default(),
            plan: Default::default(),
            cache_ttl_ms: None,
            recent: None,
            rate_limits: Default::default(),
            credits: None,
            external_id: None,
            meta: Default::default(),
        };
        edit(&mut wire);
        KeyState::from_wire(wire).unwrap()
    }

    fn get(path: &str) -> RequestFacts {
        RequestFacts {
            method: "GET".into(),
            path: path.into(),
            client_ip: "127.0.0.1".into(),
        }
    }

    #[test]
    fn active_unrestricted_key_passes_with_identity() {
        let state = state(|_| {});
        let decision = decide(&state, 1_000, &get("/anything"));
        assert_eq!(
            decision,
            Decision::Pass(Identity {
                key_id: "key_1",
                workspace_id: "ws_1"
            })
        );
    }

    #[test]
    fn each_denial_in_precedence_order() {
        let now = 10_000;
        let everything_wrong = state(|w| {
            w.secret_valid_until_ms = Some(now);
            w.active = false;
            w.expires_at_ms = Some(now - 1);
            w.allowed = vec![AllowedEndpoint {
                method: "POST".into(),
                path: "/x".into(),
            }];
        });
        assert_eq!(
            decide(&everything_wrong, now, &get("/y")),
            Decision::Deny(Denial::InvalidKey)
        );
        let inactive = state(|w| {
            w.active = false;
            w.expires_at_ms = Some(now - 1);
        });
        assert_eq!(
            decide(&inactive, now, &get("/y")),
            Decision::Deny(Denial::InactiveKey)
        );
        let expired = state(|w| w.expires_at_ms = Some(now));
        assert_eq!(
            decide(&expired, now, &get("/y")),
            Decision::Deny(Denial::ExpiredKey)
        );
        assert!(matches!(
            decide(&expired, now - 1, &get("/y")),
            Decision::Pass(_)
        ));
        let restricted = state(|w| {
            w.allowed = vec![AllowedEndpoint {
                method: "GET".into(),
                path: "/v1/**".into(),
            }]
        });
        assert_eq!(
            decide(&restricted, now, &get("/v2/x")),
            Decision::Deny(Denial::EndpointNotAllowed)
        );
        assert!(matches!(
            decide(&restricted, now, &get("/v1/x")),
            Decision::Pass(_)
        ));
    }

    #[test]
    fn rotated_secret_works_until_its_grace_ends() {
        let old = state(|w| w.secret_valid_until_ms = Some(5_000));
        assert!(matches!(decide(&old, 4_999, &get("/")), Decision::Pass(_)));
        assert_eq!(
            decide(&old, 5_000, &get("/")),
            Decision::Deny(Denial::InvalidKey)
        );
    }
}
