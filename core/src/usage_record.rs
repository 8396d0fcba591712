//! One usage record per request that carried a known key (passed, or denied for that key).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageStatus {
    Completed,
    RateLimited,
    Failed,
}

impl UsageStatus {
    /// `rate_limited` = 429 or a quota denial (which answers 401 by default).
    pub fn classify(response_code: u32, quota_denial: bool) -> UsageStatus {
        if quota_denial || response_code == 429 {
            UsageStatus::RateLimited
        } else if (100..400).contains(&response_code) {
            UsageStatus::Completed
        } else {
            UsageStatus::Failed
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UsageStatus::Completed => "completed",
            UsageStatus::RateLimited => "rate_limited",
            UsageStatus::Failed => "failed",
        }
    }
}

/// One request's record, borrowed from the request's state: written straight into the
/// worker's batch as one line of JSON, no intermediate allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord<'a> {
    pub request_id: &'a str,
    pub timestamp: u64,
    pub key_id: &'a str,
    pub workspace_id: &'a str,
    pub method: &'a str,
    pub endpoint: &'a str,
    pub resource_id: Option<&'a str>,
    pub response_code: u32,
    pub status: UsageStatus,
    /// Time to the first byte of the response, in microseconds (written as milliseconds).
    pub duration_us: u64,
    pub client_ip: &'a str,
    pub credits: u32,
    /// Tollgate let it through to the upstream (only these count toward quotas).
    pub admitted: bool,
    /// The Envoy instance that saw it (docs/protocol.md).
    pub instance: &'a str,
}

/// Appends `text` as a JSON string (quotes, backslashes and control characters escaped).
pub fn write_json_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    // Almost every value needs no escaping: copy it in one go.
    if !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return;
    }
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 15)]);
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

/// `n` in decimal, in `buf`: no formatting machinery (this runs on every request).
fn decimal(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(decimal(&mut [0; 20], n));
}

/// Appends `n` in decimal.
/// The request's summary in Envoy's filter state (`%FILTER_STATE(wasm.tollgate:PLAIN)%` for the
/// access log). Identifiers were validated as [A-Za-z0-9_.-] when the key state was parsed.
pub fn filter_state_summary(
    key_id: &str,
    workspace_id: &str,
    status: UsageStatus,
    credits: u32,
) -> String {
    let mut summary = String::with_capacity(128);
    for part in [
        "{\"key_id\":\"",
        key_id,
        "\",\"workspace_id\":\"",
        workspace_id,
        "\",\"status\":\"",
        status.as_str(),
        "\",\"credits\":",
    ] {
        summary.push_str(part);
    }
    push_u64(&mut summary, u64::from(credits));
    summary.push('}');
    summary
}

pub fn push_u64(out: &mut String, n: u64) {
    for &d in decimal(&mut [0; 20], n) {
        out.push(char::from(d));
    }
}

impl UsageRecord<'_> {
    /// Appends the record as one line of JSON (no newline inside).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let field = |out: &mut Vec<u8>, name: &str| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        out.extend_from_slice(b"{\"request_id\":");
        write_json_str(out, self.request_id);
        field(out, "timestamp");
        write_u64(out, self.timestamp);
        field(out, "key_id");
        write_json_str(out, self.key_id);
        field(out, "workspace_id");
        write_json_str(out, self.workspace_id);
        field(out, "method");
        write_json_str(out, self.method);
        field(out, "endpoint");
        write_json_str(out, self.endpoint);
        field(out, "resource_id");
        match self.resource_id {
            Some(id) => write_json_str(out, id),
            None => out.extend_from_slice(b"null"),
        }
        field(out, "response_code");
        write_u64(out, u64::from(self.response_code));
        field(out, "status");
        write_json_str(out, self.status.as_str());
        field(out, "duration_ms");
        write_u64(out, self.duration_us / 1000);
        out.push(b'.');
        let micros = self.duration_us % 1000;
        out.extend_from_slice(&[
            b'0' + (micros / 100) as u8,
            b'0' + (micros / 10 % 10) as u8,
            b'0' + (micros % 10) as u8,
        ]);
        field(out, "client_ip");
        write_json_str(out, self.client_ip);
        field(out, "credits");
        write_u64(out, u64::from(self.credits));
        field(out, "admitted");
        out.extend_from_slice(if self.admitted { b"true" } else { b"false" });
        field(out, "instance");
        write_json_str(out, self.instance);
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_response_code() {
        assert_eq!(UsageStatus::classify(200, false), UsageStatus::Completed);
        assert_eq!(UsageStatus::classify(302, false), UsageStatus::Completed);
        assert_eq!(UsageStatus::classify(429, false), UsageStatus::RateLimited);
        assert_eq!(UsageStatus::classify(401, true), UsageStatus::RateLimited);
        assert_eq!(UsageStatus::classify(401, false), UsageStatus::Failed);
        assert_eq!(UsageStatus::classify(503, false), UsageStatus::Failed);
        assert_eq!(UsageStatus::classify(0, false), UsageStatus::Failed);
    }

    #[test]
    fn record_is_one_json_line_that_parses_back() {
        let record = UsageRecord {
            request_id: "r\n\"1\\",
            timestamp: 1_795_465_967_031,
            key_id: "key_1",
            workspace_id: "ws_1",
            method: "GET",
            endpoint: "/v1/x/{id}",
            resource_id: Some("7"),
            response_code: 200,
            status: UsageStatus::Completed,
            duration_us: 1_685,
            client_ip: "127.0.0.1",
            credits: 2,
            admitted: true,
            instance: "i_1",
        };
        let mut line = Vec::new();
        record.write_json(&mut line);
        assert!(!line.contains(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["request_id"], "r\n\"1\\");
        assert_eq!(value["timestamp"], 1_795_465_967_031u64);
        assert_eq!(value["status"], "completed");
        assert_eq!(value["resource_id"], "7");
        assert_eq!(value["duration_ms"], 1.685);
        assert_eq!(value["admitted"], true);
        assert_eq!(value["instance"], "i_1");
        let mut short = Vec::new();
        UsageRecord {
            resource_id: None,
            duration_us: 7,
            ..record
        }
        .write_json(&mut short);
        let value: serde_json::Value = serde_json::from_slice(&short).unwrap();
        assert!(value["resource_id"].is_null());
        assert_eq!(value["duration_ms"], 0.007);
        assert_eq!(value.as_object().unwrap().len(), 14);
        for (status, text) in [
            (UsageStatus::RateLimited, "rate_limited"),
            (UsageStatus::Failed, "failed"),
        ] {
            let mut line = Vec::new();
            UsageRecord {
                status,
                admitted: false,
                ..record.clone()
            }
            .write_json(&mut line);
            let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(value["status"], text);
            assert_eq!(value["admitted"], false);
            assert_eq!(value["instance"], "i_1");
        }
    }
}
