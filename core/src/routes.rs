//! Endpoint templates for usage records: `{"method":"GET","path":"/v1/candidates/{id}",
//! "credits":2}`. A `{name}` segment matches one path segment; the one named `id` (or else the
//! last one) becomes the record's `resource_id`.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    method: Option<String>,
    template: String,
    parts: Vec<Part>,
    resource_param: Option<usize>,
    pub credits: u32,
}

/// What a request counts as in usage analytics (borrowed from the route or the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint<'a> {
    pub name: &'a str,
    pub resource_id: Option<&'a str>,
    pub credits: u32,
}

impl RouteTemplate {
    pub fn compile(method: &str, path: &str, credits: u32) -> Result<RouteTemplate, String> {
        let method = match method {
            "*" => None,
            m if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) => Some(m.to_string()),
            m => return Err(format!("method '{m}' must be upper-case or '*'")),
        };
        let body = path
            .strip_prefix('/')
            .ok_or_else(|| format!("path '{path}' must start with '/'"))?;
        let mut parts = Vec::new();
        for segment in body.split('/').filter(|s| !s.is_empty()) {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!("path '{path}': bad parameter '{segment}'"));
                }
                parts.push(Part::Param(name.to_string()));
            } else if segment.contains(['{', '}']) {
                return Err(format!(
                    "path '{path}': '{segment}' mixes text and a parameter"
                ));
            } else {
                parts.push(Part::Literal(segment.to_string()));
            }
        }
        let params: Vec<usize> = parts
            .iter()
            .enumerate()
            .filter_map(|(i, p)| matches!(p, Part::Param(_)).then_some(i))
            .collect();
        let resource_param = parts
            .iter()
            .position(|p| matches!(p, Part::Param(n) if n == "id"))
            .or(params.last().copied());
        if credits > 1_000_000 {
            return Err(format!("credits {credits} is more than 1000000"));
        }
        Ok(RouteTemplate {
            method,
            template: path.to_string(),
            parts,
            resource_param,
            credits,
        })
    }

    fn matches<'p>(&self, method: &str, path: &'p str) -> Option<Option<&'p str>> {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return None;
        }
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let mut resource = None;
        for (i, part) in self.parts.iter().enumerate() {
            let segment = segments.next()?;
            if let Part::Literal(text) = part {
                if text != segment {
                    return None;
                }
            }
            if self.resource_param == Some(i) {
                resource = Some(segment);
            }
        }
        segments.next().is_none().then_some(resource)
    }
}

/// First matching template wins; an unmatched path counts as itself with 1 credit.
pub fn classify<'a>(routes: &'a [RouteTemplate], method: &str, path: &'a str) -> Endpoint<'a> {
    for route in routes {
        if let Some(resource_id) = route.matches(method, path) {
            return Endpoint {
                name: &route.template,
                resource_id,
                credits: route.credits,
            };
        }
    }
    Endpoint {
        name: path,
        resource_id: None,
        credits: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> Vec<RouteTemplate> {
        vec![
            RouteTemplate::compile("GET", "/v1/candidates/{id}", 2).unwrap(),
            RouteTemplate::compile("*", "/v1/jobs/{job}/applications/{app}", 3).unwrap(),
            RouteTemplate::compile("POST", "/v1/candidates", 5).unwrap(),
        ]
    }

    #[test]
    fn template_captures_resource_id_and_credits() {
        let r = routes();
        let e = classify(&r, "GET", "/v1/candidates/c-42");
        assert_eq!(e.name, "/v1/candidates/{id}");
        assert_eq!(e.resource_id, Some("c-42"));
        assert_eq!(e.credits, 2);
        let e = classify(&r, "PUT", "/v1/jobs/j1/applications/a9");
        assert_eq!(e.resource_id, Some("a9"));
        assert_eq!(e.credits, 3);
        let e = classify(&r, "POST", "/v1/candidates");
        assert_eq!((e.resource_id, e.credits), (None, 5));
    }

    #[test]
    fn unmatched_is_the_path_with_one_credit() {
        let r = routes();
        let e = classify(&r, "DELETE", "/v1/candidates/c-42");
        assert_eq!(e.name, "/v1/candidates/c-42");
        assert_eq!((e.resource_id, e.credits), (None, 1));
        assert_eq!(classify(&r, "GET", "/v1/candidates/a/b").credits, 1);
    }

    #[test]
    fn bad_templates_are_rejected() {
        assert!(RouteTemplate::compile("GET", "v1/x", 1).is_err());
        assert!(RouteTemplate::compile("GET", "/v1/{}", 1).is_err());
        assert!(RouteTemplate::compile("GET", "/v1/x{id}", 1).is_err());
        assert!(RouteTemplate::compile("get", "/v1", 1).is_err());
        assert!(RouteTemplate::compile("GET", "/v1", 2_000_000).is_err());
    }
}
