//! The control plane's answer to `POST /v1/filter/usage` (docs/protocol.md): only the records it
//! rejected matter to the filter, which logs a few and counts them.

use serde::Deserialize;

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    rejected: Vec<serde_json::Value>,
}

/// The rejected records of a 2xx answer, each as its JSON text; none when the body does not
/// parse (the records were stored: a garbled answer must not make the filter send them again).
pub fn rejected(body: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Answer>(body)
        .map(|a| a.rejected.iter().map(|r| r.to_string()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_records_are_read_and_garbage_is_none() {
        let body = br#"{"accepted":1,"duplicates":0,"rejected":[{"index":0,"error":"x"}]}"#;
        assert_eq!(
            rejected(body),
            vec![r#"{"error":"x","index":0}"#.to_string()]
        );
        assert!(rejected(br#"{"accepted":2}"#).is_empty());
        assert!(rejected(b"not json").is_empty());
    }
}
