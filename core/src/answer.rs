//! Classifies the control plane's answer to a key lookup.

use crate::key_state::KeyState;

#[derive(Debug)]
pub enum LookupAnswer {
    Found(Box<KeyState>),
    NotFound,
    /// Anything else: Envoy's synthesized 503/504 for a dead or slow control plane, a 5xx, an
    /// unexpected status, or a body that does not parse. The reason goes to the log.
    Unavailable(String),
}

pub fn classify(status: Option<&str>, body: Option<&[u8]>) -> LookupAnswer {
    match status {
        Some("200") => match body {
            Some(body) => match KeyState::parse(body) {
                Ok(state) => LookupAnswer::Found(Box::new(state)),
                Err(e) => LookupAnswer::Unavailable(format!("malformed key state: {e}")),
            },
            None => LookupAnswer::Unavailable("200 without a body".into()),
        },
        Some("404") => LookupAnswer::NotFound,
        Some(other) => {
            let detail = body
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(120)]).into_owned())
                .unwrap_or_default();
            LookupAnswer::Unavailable(format!("status {other}: {detail}"))
        }
        None => LookupAnswer::Unavailable("no :status in the answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_answers() {
        let body = br#"{"key_id":"key_1","workspace_id":"ws_1","active":true}"#;
        assert!(matches!(
            classify(Some("200"), Some(body)),
            LookupAnswer::Found(_)
        ));
        assert!(matches!(
            classify(Some("404"), None),
            LookupAnswer::NotFound
        ));
        match classify(Some("504"), Some(b"upstream request timeout")) {
            LookupAnswer::Unavailable(reason) => assert!(reason.contains("504")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(Some("200"), Some(b"{")),
            LookupAnswer::Unavailable(_)
        ));
        assert!(matches!(
            classify(Some("200"), None),
            LookupAnswer::Unavailable(_)
        ));
        assert!(matches!(
            classify(Some("401"), None),
            LookupAnswer::Unavailable(_)
        ));
        assert!(matches!(classify(None, None), LookupAnswer::Unavailable(_)));
    }
}
