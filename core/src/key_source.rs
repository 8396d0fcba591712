//! Finds the API key in the request headers, following the configured sources in order.

use crate::config::KeySource;

#[derive(Debug, PartialEq, Eq)]
pub enum KeyRead<'s, 'h> {
    Missing,
    /// The key header appears more than once: ambiguous, so rejected.
    Repeated,
    Present {
        key: &'h [u8],
        /// The source's header name (from the configuration).
        header: &'s str,
    },
}

/// `headers` as Envoy gives them: lower-case names, one entry per occurrence.
pub fn read_key<'s, 'h>(
    sources: &'s [KeySource],
    headers: &[(&'h str, &'h [u8])],
) -> KeyRead<'s, 'h> {
    for source in sources {
        let name = source.header();
        let mut found = headers.iter().filter(|(n, _)| *n == name);
        let Some((_, value)) = found.next() else {
            continue;
        };
        if found.next().is_some() {
            return KeyRead::Repeated;
        }
        let key = match source {
            KeySource::Header(_) => trim(value),
            KeySource::Bearer(_) => match bearer_token(value) {
                Some(token) => token,
                // `Authorization: Basic ...` is someone else's credential, not our key.
                None => continue,
            },
        };
        if key.is_empty() {
            continue;
        }
        return KeyRead::Present { key, header: name };
    }
    KeyRead::Missing
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &value[start..end.max(start)]
}

fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = trim(value);
    let scheme = b"bearer ";
    if value.len() > scheme.len() && value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        Some(trim(&value[scheme.len()..]))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<KeySource> {
        vec![
            KeySource::Header("x-api-key".into()),
            KeySource::Bearer("authorization".into()),
        ]
    }

    fn headers<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a [u8])> {
        pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect()
    }

    #[test]
    fn header_first_then_bearer() {
        let sources = defaults();
        let h = headers(&[("authorization", "Bearer tg_b"), ("x-api-key", " tg_a ")]);
        assert_eq!(
            read_key(&sources, &h),
            KeyRead::Present {
                key: b"tg_a",
                header: "x-api-key"
            }
        );
        let h = headers(&[("authorization", "bearer   tg_b")]);
        assert_eq!(
            read_key(&sources, &h),
            KeyRead::Present {
                key: b"tg_b",
                header: "authorization"
            }
        );
    }

    #[test]
    fn missing_when_no_source_has_a_key() {
        let sources = defaults();
        assert_eq!(
            read_key(&sources, &headers(&[("accept", "*/*")])),
            KeyRead::Missing
        );
        assert_eq!(
            read_key(&sources, &headers(&[("authorization", "Basic dXNlcg==")])),
            KeyRead::Missing
        );
        assert_eq!(
            read_key(&sources, &headers(&[("x-api-key", "  ")])),
            KeyRead::Missing
        );
        assert_eq!(
            read_key(&sources, &headers(&[("authorization", "Bearer ")])),
            KeyRead::Missing
        );
    }

    #[test]
    fn repeated_key_header_is_rejected() {
        let sources = defaults();
        let h = headers(&[("x-api-key", "tg_a"), ("x-api-key", "tg_b")]);
        assert_eq!(read_key(&sources, &h), KeyRead::Repeated);
    }
}
