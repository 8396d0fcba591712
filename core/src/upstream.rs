//! The control plane as a value: which Envoy cluster, which authority, how long to wait.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub cluster: String,
    pub authority: String,
    pub timeout: Duration,
}

impl Upstream {
    pub fn new(
        cluster: String,
        authority: Option<String>,
        timeout: Duration,
    ) -> Result<Upstream, String> {
        if cluster.trim().is_empty() {
            return Err("cluster must name an Envoy cluster".into());
        }
        let authority = authority.unwrap_or_else(|| cluster.clone());
        if authority.is_empty() || !authority.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("authority '{authority}' is not a valid host"));
        }
        Ok(Upstream {
            cluster,
            authority,
            timeout,
        })
    }

    /// Request headers for a GET on this upstream (`:method`, `:path`, `:authority` are all
    /// required by Envoy, or the call fails with BadArgument).
    pub fn get_headers<'a>(&'a self, path: &'a str, bearer: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            (":method", "GET"),
            (":path", path),
            (":authority", &self.authority),
            ("authorization", bearer),
        ]
    }

    /// Request headers for a POST of a JSON body on this upstream.
    pub fn post_headers<'a>(&'a self, path: &'a str, bearer: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            (":method", "POST"),
            (":path", path),
            (":authority", &self.authority),
            ("authorization", bearer),
            ("content-type", "application/json"),
        ]
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cluster '{}' (authority '{}')",
            self.cluster, self.authority
        )
    }
}
