//! Blocking HTTP helpers. Every request uses a new connection, so a burst of requests spreads
//! over Envoy's workers the way independent clients would.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A response of any status.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names are lower case; a repeated header appears once per value.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics (showing the response) if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!("response body is not JSON ({e}): {self:?}");
        })
    }

    /// The `error` field of a JSON body, if any.
    pub fn error(&self) -> Option<String> {
        serde_json::from_str::<Value>(&self.body)
            .ok()?
            .get("error")?
            .as_str()
            .map(str::to_string)
    }

    /// What the demo upstream saw (panics if this is not its echo).
    pub fn echo(&self) -> Echo {
        Echo::parse(&self.json()).unwrap_or_else(|| panic!("not a demo-upstream echo: {self:?}"))
    }
}

/// One HTTP request on a fresh connection. Transport errors panic; any status is returned.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Response {
    try_request(method, url, headers, body)
        .unwrap_or_else(|e| panic!("{method} {url}: transport error: {e}"))
}

/// Like [`request`], but a transport error (connection refused, timeout) is returned.
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<Response, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .max_idle_connections(0)
        .redirects(0)
        .build();
    let mut req = agent.request(method, url);
    for (name, value) in headers {
        req = req.set(name, value);
    }
    let result = match body {
        Some(body) => req
            .set("content-type", "application/json")
            .send_string(&body.to_string()),
        None => req.call(),
    };
    read_response(result)
}

/// A client that keeps its connection open between requests (one connection per thread in
/// load tests, so traffic stays on the worker that accepted it, like a real keep-alive client).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    pub fn new() -> Client {
        Client {
            agent: ureq::AgentBuilder::new()
                .timeout(REQUEST_TIMEOUT)
                .max_idle_connections_per_host(1)
                .redirects(0)
                .build(),
        }
    }

    /// One request; transport errors are returned.
    pub fn try_request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response, String> {
        let mut req = self.agent.request(method, url);
        for (name, value) in headers {
            req = req.set(name, value);
        }
        read_response(req.call())
    }

    /// One request; transport errors panic.
    pub fn request(&self, method: &str, url: &str, headers: &[(&str, &str)]) -> Response {
        self.try_request(method, url, headers)
            .unwrap_or_else(|e| panic!("{method} {url}: transport error: {e}"))
    }
}

fn read_response(result: Result<ureq::Response, ureq::Error>) -> Result<Response, String> {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(ureq::Error::Transport(e)) => return Err(e.to_string()),
    };
    let status = response.status();
    let mut all = Vec::new();
    for name in response.headers_names() {
        for value in response.all(&name) {
            all.push((name.to_ascii_lowercase(), value.to_string()));
        }
    }
    let body = response
        .into_string()
        .map_err(|e| format!("reading body: {e}"))?;
    Ok(Response {
        status,
        headers: all,
        body,
    })
}

/// `?a=1&b=x%2Fy` from pairs (values percent-encoded); empty for no pairs.
pub fn query_string(params: &[(&str, String)]) -> String {
    if params.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends `GET path` to `127.0.0.1:port` with exactly the given header lines (names may repeat,
/// which the normal client cannot do) and `Connection: close`.
pub fn raw_get(port: u16, path: &str, header_lines: &[(&str, &str)]) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect for raw request");
    stream.set_read_timeout(Some(REQUEST_TIMEOUT)).ok();
    let mut text = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n");
    for (name, value) in header_lines {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("connection: close\r\n\r\n");
    stream.write_all(text.as_bytes()).expect("send raw request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read raw response");
    parse_raw_response(&raw)
}

fn parse_raw_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response: {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        decode_chunked(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn decode_chunked(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// The request as the demo upstream received it.
#[derive(Debug, Clone)]
pub struct Echo {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
}

impl Echo {
    /// Accepts `headers` as an object (`{"name": "value" | ["v1", "v2"]}`) or an array of
    /// `[name, value]` pairs or `{"name", "value"}` objects.
    pub fn parse(v: &Value) -> Option<Echo> {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let mut headers = Vec::new();
        match v.get("headers")? {
            Value::Object(map) => {
                for (name, value) in map {
                    match value {
                        Value::Array(values) => {
                            for one in values {
                                headers.push((name.to_ascii_lowercase(), text(one)?));
                            }
                        }
                        other => headers.push((name.to_ascii_lowercase(), text(other)?)),
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    let (name, value) = match item {
                        Value::Array(pair) if pair.len() == 2 => (text(&pair[0])?, text(&pair[1])?),
                        Value::Object(o) => (text(o.get("name")?)?, text(o.get("value")?)?),
                        _ => return None,
                    };
                    headers.push((name.to_ascii_lowercase(), value));
                }
            }
            _ => return None,
        }
        Some(Echo {
            method: text(v.get("method")?)?,
            path: text(v.get("path")?)?,
            query: v.get("query").and_then(text),
            headers,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not handed out
/// before.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let set = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        if set.insert(port) {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_raw_response() {
        let raw = b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n";
        let r = parse_raw_response(raw);
        assert_eq!(r.status, 401);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.body, "{\"a\": 1}");
    }

    #[test]
    fn echo_accepts_header_shapes() {
        let object = serde_json::json!({"method":"GET","path":"/a","query":"x=1","headers":{"X-A":"1","x-b":["2","3"]}});
        let e = Echo::parse(&object).unwrap();
        assert_eq!(e.header("x-a"), Some("1"));
        assert_eq!(e.header_values("x-b"), vec!["2", "3"]);
        let pairs = serde_json::json!({"method":"GET","path":"/a","query":null,"headers":[["x-a","1"],{"name":"x-b","value":"2"}]});
        let e = Echo::parse(&pairs).unwrap();
        assert_eq!(e.header("x-b"), Some("2"));
        assert_eq!(e.query, None);
    }
}
