//! Finds the API key in the request, following the configured sources in order: a header, an
//! `Authorization: Bearer` header, or a query parameter of `:path`.

use crate::config::KeySource;
use std::borrow::Cow;

#[derive(Debug, PartialEq, Eq)]
pub enum KeyRead<'s, 'h> {
    Missing,
    /// The key appears more than once (a header twice, a parameter twice, or in a header and
    /// the query): ambiguous, so rejected.
    Repeated,
    Present {
        key: Cow<'h, [u8]>,
        /// The source it came from (from the configuration).
        source: &'s KeySource,
    },
}

/// What one source holds.
enum Found<'h> {
    Nothing,
    Twice,
    Key(Cow<'h, [u8]>),
}

/// `headers` as Envoy gives them: lower-case names, one entry per occurrence, `:path` among
/// them. The first source that holds a key wins, except that a key in the query and in a
/// header at once is `Repeated`.
pub fn read_key<'s, 'h>(
    sources: &'s [KeySource],
    headers: &[(&'h str, &'h [u8])],
) -> KeyRead<'s, 'h> {
    let any_query = sources.iter().any(|s| matches!(s, KeySource::Query(_)));
    let mut first: Option<(Cow<'h, [u8]>, &'s KeySource)> = None;
    let (mut in_header, mut in_query) = (false, false);
    for source in sources {
        let key = match find(source, headers) {
            Found::Nothing => continue,
            Found::Twice => return KeyRead::Repeated,
            Found::Key(key) => key,
        };
        match source {
            KeySource::Query(_) => in_query = true,
            _ => in_header = true,
        }
        if in_header && in_query {
            return KeyRead::Repeated;
        }
        if first.is_none() {
            first = Some((key, source));
        }
        if !any_query {
            break;
        }
    }
    match first {
        Some((key, source)) => KeyRead::Present { key, source },
        None => KeyRead::Missing,
    }
}

fn find<'h>(source: &KeySource, headers: &[(&'h str, &'h [u8])]) -> Found<'h> {
    let (name, query) = match source {
        KeySource::Header(name) | KeySource::Bearer(name) => (name.as_str(), None),
        KeySource::Query(param) => (":path", Some(param.as_str())),
    };
    let mut values = headers.iter().filter(|(n, _)| *n == name);
    let Some((_, value)) = values.next() else {
        return Found::Nothing;
    };
    if values.next().is_some() {
        return Found::Twice;
    }
    let key: Cow<'h, [u8]> = match source {
        KeySource::Header(_) => Cow::Borrowed(trim(value)),
        KeySource::Bearer(_) => match bearer_token(value) {
            Some(token) => Cow::Borrowed(token),
            // `Authorization: Basic ...` is someone else's credential, not our key.
            None => return Found::Nothing,
        },
        KeySource::Query(_) => {
            let name = query.unwrap_or_default().as_bytes();
            let mut found = query_pairs(value).filter(|(k, _)| *k == name);
            let Some((_, raw)) = found.next() else {
                return Found::Nothing;
            };
            if found.next().is_some() {
                return Found::Twice;
            }
            percent_decoded(raw)
        }
    };
    if key.is_empty() {
        Found::Nothing
    } else {
        Found::Key(key)
    }
}

/// The raw (name, value) pairs of the query of `path`.
fn query_pairs(path: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let query = match path.iter().position(|b| *b == b'?') {
        Some(at) => &path[at + 1..],
        None => &[],
    };
    let query = match query.iter().position(|b| *b == b'#') {
        Some(at) => &query[..at],
        None => query,
    };
    query
        .split(|b| *b == b'&')
        .map(|pair| match pair.iter().position(|b| *b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        })
}

/// `%XX` escapes decoded (`+` is a space, as in forms); a malformed escape stays as it is.
fn percent_decoded(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.iter().any(|b| *b == b'%' || *b == b'+') {
        return Cow::Borrowed(raw);
    }
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let escaped = match (raw[i], raw.get(i + 1), raw.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, raw[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// `path` without the parameter `name` (what the upstream sees when `hide_key` is on).
pub fn without_param(path: &str, name: &str) -> String {
    let Some((before, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(name) && !pair.is_empty())
        .collect();
    let mut out = before.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
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
                key: Cow::Borrowed(&b"tg_a"[..]),
                source: &sources[0]
            }
        );
        let h = headers(&[("authorization", "bearer   tg_b")]);
        assert_eq!(
            read_key(&sources, &h),
            KeyRead::Present {
                key: Cow::Borrowed(&b"tg_b"[..]),
                source: &sources[1]
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

    #[test]
    fn a_query_parameter_is_a_source_and_a_key_in_two_places_is_repeated() {
        let sources = vec![
            KeySource::Header("x-api-key".into()),
            KeySource::Query("api_key".into()),
        ];
        let key = |pairs: &[(&str, &str)]| match read_key(&sources, &headers(pairs)) {
            KeyRead::Present { key, source } => Some((key.into_owned(), source.clone())),
            KeyRead::Missing => None,
            KeyRead::Repeated => Some((b"repeated".to_vec(), KeySource::Header(String::new()))),
        };
        let query = KeySource::Query("api_key".into());
        assert_eq!(
            key(&[(":path", "/v1/x?a=1&api_key=tg_q&b=2")]),
            Some((b"tg_q".to_vec(), query.clone()))
        );
        assert_eq!(
            key(&[(":path", "/v1/x?api_key=tg%5Fq")]),
            Some((b"tg_q".to_vec(), query.clone())),
            "escapes are decoded"
        );
        assert_eq!(key(&[(":path", "/v1/x?api_keys=tg_q&api_key=")]), None);
        assert_eq!(
            key(&[(":path", "/v1/api_key=tg_q")]),
            None,
            "only the query"
        );
        let repeated = Some((b"repeated".to_vec(), KeySource::Header(String::new())));
        assert_eq!(key(&[(":path", "/x?api_key=a&api_key=b")]), repeated);
        assert_eq!(
            key(&[(":path", "/x?api_key=tg_q"), ("x-api-key", "tg_h")]),
            repeated,
            "a header and the query"
        );
        assert_eq!(
            key(&[(":path", "/x"), ("x-api-key", "tg_h")]),
            Some((b"tg_h".to_vec(), sources[0].clone()))
        );
    }

    #[test]
    fn the_key_parameter_is_removed_from_the_path_and_nothing_else() {
        assert_eq!(without_param("/v1/x?api_key=k", "api_key"), "/v1/x");
        assert_eq!(
            without_param("/v1/x?a=1&api_key=k&b=2", "api_key"),
            "/v1/x?a=1&b=2"
        );
        assert_eq!(
            without_param("/v1/x?api_keys=1&api_key=k#top", "api_key"),
            "/v1/x?api_keys=1#top"
        );
        assert_eq!(without_param("/v1/x", "api_key"), "/v1/x");
    }
}
