//! Which endpoints a key may call: `{method, path}` patterns where a `*` segment matches one
//! segment and a final `/**` matches any rest (including nothing).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPattern {
    /// `None` = any method.
    method: Option<String>,
    segments: Vec<Segment>,
    /// Ends with `/**`.
    rest: bool,
}

impl EndpointPattern {
    pub fn compile(method: &str, path: &str) -> Result<EndpointPattern, String> {
        let method = match method {
            "*" => None,
            m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Some(m.to_string()),
            m => return Err(format!("method '{m}' must be upper-case or '*'")),
        };
        let Some(body) = path.strip_prefix('/') else {
            return Err(format!("path '{path}' must start with '/'"));
        };
        let mut parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        let rest = parts.last() == Some(&"**");
        if rest {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        for part in parts {
            segments.push(match part {
                "*" => Segment::Any,
                "**" => return Err(format!("path '{path}': '**' is only allowed at the end")),
                "" => return Err(format!("path '{path}' has an empty segment")),
                literal => Segment::Literal(literal.to_string()),
            });
        }
        Ok(EndpointPattern {
            method,
            segments,
            rest,
        })
    }

    /// `path` without its query string.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if let Some(expected) = &self.method {
            if expected != method {
                return false;
            }
        }
        let body = path.strip_prefix('/').unwrap_or(path);
        let mut parts = body.split('/').filter(|p| !p.is_empty());
        for segment in &self.segments {
            match (segment, parts.next()) {
                (_, None) => return false,
                (Segment::Any, Some(_)) => {}
                (Segment::Literal(expected), Some(actual)) if expected == actual => {}
                _ => return false,
            }
        }
        self.rest || parts.next().is_none()
    }
}

/// Strips the query string (and fragment) from a `:path`.
pub fn path_only(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(method: &str, path: &str) -> EndpointPattern {
        EndpointPattern::compile(method, path).unwrap()
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        let p = pattern("GET", "/v1/things/*");
        assert!(p.matches("GET", "/v1/things/42"));
        assert!(!p.matches("GET", "/v1/things"));
        assert!(!p.matches("GET", "/v1/things/42/parts"));
        assert!(!p.matches("POST", "/v1/things/42"));
    }

    #[test]
    fn double_star_matches_any_rest_including_nothing() {
        let p = pattern("*", "/v1/**");
        assert!(p.matches("GET", "/v1"));
        assert!(p.matches("DELETE", "/v1/a/b/c"));
        assert!(!p.matches("GET", "/v2/a"));
        assert!(pattern("*", "/**").matches("GET", "/anything/at/all"));
        assert!(pattern("GET", "/").matches("GET", "/"));
        assert!(!pattern("GET", "/").matches("GET", "/x"));
    }

    #[test]
    fn literal_segments_are_exact() {
        let p = pattern("POST", "/v1/candidates");
        assert!(p.matches("POST", "/v1/candidates"));
        assert!(p.matches("POST", "/v1/candidates/"));
        assert!(!p.matches("POST", "/v1/candidatesX"));
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert!(EndpointPattern::compile("get", "/x").is_err());
        assert!(EndpointPattern::compile("GET", "x").is_err());
        assert!(EndpointPattern::compile("GET", "/a/**/b").is_err());
        assert!(EndpointPattern::compile("GET", "/a//b").is_err());
    }

    #[test]
    fn query_is_not_part_of_the_path() {
        assert_eq!(path_only("/v1/x?key=1"), "/v1/x");
        assert_eq!(path_only("/v1/x#frag"), "/v1/x");
        assert_eq!(path_only("/"), "/");
    }
}
