//! Dashboard sessions: a stateless, HMAC-signed cookie (`HttpOnly`, `SameSite=Strict`, 8 h
//! absolute expiry) naming the principal, plus a per-session CSRF token derived from the
//! session's nonce. The signing key is random per process start, so a restart signs everyone out.
//!
//! Server-side state is limited to two small in-memory maps: nonces of signed-out sessions (until
//! their expiry) and one-time secret reveals (a new key's secret between the POST that created it
//! and the single GET that shows it).

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use axum::http::{header, HeaderMap, HeaderValue};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

pub const SESSION_COOKIE: &str = "tollgate_session";
/// Pre-session cookie that binds the sign-in form's CSRF token to the browser.
pub const SIGNIN_COOKIE: &str = "tollgate_signin";
pub const SESSION_TTL_MS: i64 = 8 * 3600 * 1000;
const SIGNIN_TTL_S: i64 = 3600;
const REVEAL_TTL_MS: i64 = 10 * 60 * 1000;

/// Who a session acts for (the admin token or a console token, as for the API).
pub use crate::app::Principal;

#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    pub expires_at: i64,
    nonce: String,
    csrf: String,
}

impl Session {
    /// The token every state-changing form of this session must carry.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// Constant-time check of a submitted CSRF token.
    pub fn csrf_ok(&self, submitted: &str) -> bool {
        ct_eq(&self.csrf, submitted)
    }
}

/// A secret shown once: a key's secret after create or rotate.
pub struct Reveal {
    pub key_id: String,
    pub secret: String,
    /// `Some(t)`: a rotation whose previous secret stays valid until `t` (ms).
    pub rotated_grace_until: Option<Option<i64>>,
    session_nonce: String,
    created_ms: i64,
}

impl fmt::Debug for Reveal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reveal")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

pub struct Sessions {
    key: [u8; 32],
    signed_out: Mutex<HashMap<String, i64>>,
    reveals: Mutex<HashMap<String, Reveal>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new()
    }
}

impl Sessions {
    pub fn new() -> Self {
        Self {
            key: rand::random(),
            signed_out: Mutex::new(HashMap::new()),
            reveals: Mutex::new(HashMap::new()),
        }
    }

    fn sign(&self, data: &str) -> String {
        // HMAC accepts keys of any length; this cannot fail for a 32-byte key.
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(data.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A new session for `principal`, and the `Set-Cookie` value that carries it.
    pub fn create(&self, principal: Principal, now_ms: i64, secure: bool) -> (Session, String) {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let expires_at = now_ms + SESSION_TTL_MS;
        let (kind, ws, tok) = match &principal {
            Principal::Admin => ("a", "-", "-"),
            Principal::Console {
                workspace_id,
                token_id,
            } => ("c", workspace_id.as_str(), token_id.as_str()),
        };
        let payload = format!("v1.{kind}.{ws}.{tok}.{expires_at}.{nonce}");
        let value = format!("{payload}.{}", self.sign(&payload));
        let cookie = cookie(SESSION_COOKIE, &value, SESSION_TTL_MS / 1000, secure);
        let csrf = self.csrf_for(&nonce);
        (
            Session {
                principal,
                expires_at,
                nonce,
                csrf,
            },
            cookie,
        )
    }

    fn csrf_for(&self, nonce: &str) -> String {
        self.sign(&format!("csrf.{nonce}"))[..40].to_owned()
    }

    /// The session in the request's cookie, if it is well-formed, correctly signed, unexpired and
    /// not signed out. (Console tokens are re-checked against the store by the caller.)
    pub fn from_headers(&self, headers: &HeaderMap, now_ms: i64) -> Option<Session> {
        let value = cookie_value(headers, SESSION_COOKIE)?;
        let (payload, sig) = value.rsplit_once('.')?;
        if !ct_eq(&self.sign(payload), sig) {
            return None;
        }
        let parts: Vec<&str> = payload.split('.').collect();
        let ["v1", kind, ws, tok, exp, nonce] = parts.as_slice() else {
            return None;
        };
        let expires_at: i64 = exp.parse().ok()?;
        if expires_at <= now_ms || self.is_signed_out(nonce) {
            return None;
        }
        let principal = match *kind {
            "a" => Principal::Admin,
            "c" => Principal::Console {
                workspace_id: (*ws).to_owned(),
                token_id: (*tok).to_owned(),
            },
            _ => return None,
        };
        Some(Session {
            principal,
            expires_at,
            csrf: self.csrf_for(nonce),
            nonce: (*nonce).to_owned(),
        })
    }

    fn is_signed_out(&self, nonce: &str) -> bool {
        self.signed_out
            .lock()
            .map(|m| m.contains_key(nonce))
            .unwrap_or(true)
    }

    /// Ends `session` server-side too (a copied cookie stops working), and drops its reveals.
    pub fn sign_out(&self, session: &Session, now_ms: i64) {
        if let Ok(mut map) = self.signed_out.lock() {
            map.retain(|_, exp| *exp > now_ms);
            map.insert(session.nonce.clone(), session.expires_at);
        }
        if let Ok(mut map) = self.reveals.lock() {
            map.retain(|_, r| r.session_nonce != session.nonce);
        }
    }

    /// The sign-in form's CSRF token and, when the browser has no pre-session cookie yet, the
    /// `Set-Cookie` value to send with the form.
    pub fn signin_token(&self, headers: &HeaderMap, secure: bool) -> (String, Option<String>) {
        match cookie_value(headers, SIGNIN_COOKIE).filter(|v| v.len() == 32) {
            Some(nonce) => (self.signin_csrf(nonce), None),
            None => {
                let nonce = hex::encode(rand::random::<[u8; 16]>());
                let set = cookie(SIGNIN_COOKIE, &nonce, SIGNIN_TTL_S, secure);
                (self.signin_csrf(&nonce), Some(set))
            }
        }
    }

    pub fn signin_csrf_ok(&self, headers: &HeaderMap, submitted: &str) -> bool {
        cookie_value(headers, SIGNIN_COOKIE)
            .filter(|v| v.len() == 32)
            .is_some_and(|nonce| ct_eq(&self.signin_csrf(nonce), submitted))
    }

    fn signin_csrf(&self, nonce: &str) -> String {
        self.sign(&format!("signin.{nonce}"))[..40].to_owned()
    }

    /// Keeps `secret` for one display to this session; returns the reveal id for the URL.
    pub fn put_reveal(
        &self,
        session: &Session,
        key_id: &str,
        secret: String,
        rotated_grace_until: Option<Option<i64>>,
        now_ms: i64,
    ) -> String {
        let id = hex::encode(rand::random::<[u8; 16]>());
        if let Ok(mut map) = self.reveals.lock() {
            map.retain(|_, r| now_ms - r.created_ms < REVEAL_TTL_MS);
            map.insert(
                id.clone(),
                Reveal {
                    key_id: key_id.to_owned(),
                    secret,
                    rotated_grace_until,
                    session_nonce: session.nonce.clone(),
                    created_ms: now_ms,
                },
            );
        }
        id
    }

    /// Takes (removes) the reveal: a second request for it finds nothing.
    pub fn take_reveal(
        &self,
        session: &Session,
        reveal_id: &str,
        key_id: &str,
        now_ms: i64,
    ) -> Option<Reveal> {
        let mut map = self.reveals.lock().ok()?;
        let matches = map.get(reveal_id).is_some_and(|r| {
            r.session_nonce == session.nonce
                && r.key_id == key_id
                && now_ms - r.created_ms < REVEAL_TTL_MS
        });
        if matches {
            map.remove(reveal_id)
        } else {
            None
        }
    }
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A `Set-Cookie` value: `HttpOnly; SameSite=Strict; Path=/`, `Secure` behind HTTPS.
pub fn cookie(name: &str, value: &str, max_age_s: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}")
}

/// A `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(name: &str, secure: bool) -> String {
    cookie(name, "", 0, secure)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the browser reached us over HTTPS (directly or through a proxy that says so); decides
/// the `Secure` cookie attribute.
pub fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

pub fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_with(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        h
    }

    fn value_of(set_cookie: &str) -> &str {
        set_cookie.split(';').next().unwrap()
    }

    #[test]
    fn round_trip_and_tamper() {
        let s = Sessions::new();
        let (session, set) = s.create(
            Principal::Console {
                workspace_id: "ws_1".into(),
                token_id: "ct_1".into(),
            },
            1000,
            false,
        );
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        let back = s.from_headers(&headers_with(value_of(&set)), 2000).unwrap();
        assert_eq!(back.principal, session.principal);
        assert_eq!(back.csrf(), session.csrf());
        let tampered = value_of(&set).replace("ws_1", "ws_2");
        assert!(s.from_headers(&headers_with(&tampered), 2000).is_none());
        // Another server's key does not verify.
        assert!(Sessions::new()
            .from_headers(&headers_with(value_of(&set)), 2000)
            .is_none());
        // Expired.
        assert!(s
            .from_headers(&headers_with(value_of(&set)), 1000 + SESSION_TTL_MS)
            .is_none());
        s.sign_out(&session, 3000);
        assert!(s
            .from_headers(&headers_with(value_of(&set)), 4000)
            .is_none());
    }

    #[test]
    fn reveal_is_taken_once() {
        let s = Sessions::new();
        let (session, _) = s.create(Principal::Admin, 0, false);
        let id = s.put_reveal(&session, "key_1", "tg_secret".into(), None, 0);
        assert!(s.take_reveal(&session, &id, "key_2", 1).is_none());
        assert_eq!(
            s.take_reveal(&session, &id, "key_1", 1).unwrap().secret,
            "tg_secret"
        );
        assert!(s.take_reveal(&session, &id, "key_1", 2).is_none());
    }
}
