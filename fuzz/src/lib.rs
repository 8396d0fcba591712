//! The fuzz targets' logic, one function per target (fuzz/README.md). Each feeds its input to
//! one of Tollgate's parsers of untrusted input and asserts what must hold of any answer: no
//! panic, and where it is cheap a property (a round trip, a model of the buffer, a 4xx rather
//! than a 5xx). The binaries in fuzz_targets/ hand these libFuzzer's inputs;
//! tests/replay.rs runs every corpus and regression file through them under `cargo test`.
//!
//! A failed property panics (`assert!`): under libFuzzer that is a finding (a crash).

use std::collections::VecDeque;

use sha2::{Digest, Sha256};
use tollgate_control_plane::api::{fuzzing, ingest};
use tollgate_control_plane::clock;
use tollgate_core::answer::{classify, LookupAnswer};
use tollgate_core::api_key::{crc32, encode_checksum, parse_key, KeyHash, MalformedKey};
use tollgate_core::config::FilterConfig;
use tollgate_core::header_map;
use tollgate_core::record_batch::{RecordBatch, RecordBatchWriter};
use tollgate_core::routes;
use tollgate_core::usage_buffer::{DeliveryPolicy, UsageBuffer};

/// A target: takes any input, panics on a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and of its corpus and regression directories.
pub const TARGETS: &[(&str, Target)] = &[
    ("api_key", api_key),
    ("plugin_config", plugin_config),
    ("header_map", header_map),
    ("lookup_answer", lookup_answer),
    ("record_batch", record_batch),
    ("ingest_payload", ingest_payload),
    ("api_query", api_query),
];

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC-32 (IEEE) bit by bit: the reference the table-driven `crc32` must agree with.
fn crc32_bitwise(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The key parser and its checksum: any bytes as a presented key, and a well-formed key made
/// from the input, then changed in one character (always caught by the checksum).
pub fn api_key(data: &[u8]) {
    assert_eq!(crc32(data), crc32_bitwise(data));
    match parse_key(data) {
        Ok(hash) => {
            assert_eq!(data.len(), 42);
            assert!(data.starts_with(b"tg_"));
            assert!(data[3..].iter().all(u8::is_ascii_alphanumeric));
            assert_eq!(encode_checksum(crc32(&data[..36])), data[36..]);
            let digest: [u8; 32] = Sha256::digest(data).into();
            assert_eq!(hash.0, digest);
            assert_eq!(KeyHash::from_hex(&hash.to_hex()), Some(hash));
            assert!(hash.slot(7) < 7);
        }
        Err(MalformedKey::Length) => assert_ne!(data.len(), 42),
        Err(_) => assert_eq!(data.len(), 42),
    }

    // A key built from the input: 33 base62 characters and their checksum.
    let mut key = b"tg_".to_vec();
    key.extend((0..33).map(|i| BASE62[usize::from(data.get(i).copied().unwrap_or(0)) % 62]));
    let checksum = encode_checksum(crc32(&key));
    key.extend_from_slice(&checksum);
    assert!(parse_key(&key).is_ok(), "{}", String::from_utf8_lossy(&key));
    // One character replaced by another base62 one: a single-character typo is never accepted.
    if let (Some(&at), Some(&with)) = (data.get(33), data.get(34)) {
        let at = 3 + usize::from(at) % 39;
        let with = BASE62[usize::from(with) % 62];
        if key[at] != with {
            key[at] = with;
            assert!(
                parse_key(&key).is_err(),
                "{}",
                String::from_utf8_lossy(&key)
            );
        }
    }
}

/// The plugin configuration as Envoy hands it over; a compiled one classifies a few paths.
pub fn plugin_config(data: &[u8]) {
    let env = |name: &str| (name == "TOLLGATE_FILTER_TOKEN").then(|| "tok_from_env".to_owned());
    match FilterConfig::parse(data, env) {
        Ok(config) => {
            assert!(!config.key_sources.is_empty());
            for (method, path) in [
                ("GET", "/"),
                ("GET", "/v1/things/1"),
                ("POST", "/v1/things/1/parts/2?x=1"),
                ("DELETE", "//a//b/"),
            ] {
                let _ = routes::classify(&config.usage.routes, method, path);
            }
        }
        Err(e) => assert!(!e.0.is_empty()),
    }
}

/// The raw request-header map (`proxy_get_header_map_pairs`): what parses serializes back to a
/// block that parses to the same pairs.
pub fn header_map(data: &[u8]) {
    let Some(pairs) = header_map::parse_pairs(data) else {
        return;
    };
    assert!(pairs.len() <= data.len() / 10 + 1);
    let block = header_map::serialize_pairs(&pairs);
    assert_eq!(header_map::parse_pairs(&block).as_ref(), Some(&pairs));
    for (name, value) in &pairs {
        let first = header_map::get(&pairs, name);
        assert!(first.is_some());
        if first == Some(value) {
            assert_eq!(
                header_map::text(&pairs, name),
                String::from_utf8_lossy(value)
            );
        }
    }
}

/// The control plane's answer to a key lookup: the first byte picks the `:status`, the rest is
/// the body. A found key's allow-list is matched against a few paths.
pub fn lookup_answer(data: &[u8]) {
    let (status, body) = match data.split_first() {
        Some((b, rest)) => (*b, rest),
        None => (0, data),
    };
    let status = match status % 6 {
        0..=2 => Some("200"),
        3 => Some("404"),
        4 => Some("503"),
        _ => None,
    };
    let body = (!body.is_empty()).then_some(body);
    match classify(status, body) {
        LookupAnswer::Found(state) => {
            assert_eq!(status, Some("200"));
            for (method, path) in [("GET", "/v1/things/1"), ("POST", "/"), ("PUT", "//x/*/y")] {
                let _ = state.allows(method, path);
            }
        }
        LookupAnswer::NotFound => assert_eq!(status, Some("404")),
        LookupAnswer::Unavailable(reason) => assert!(!reason.is_empty()),
    }
}

/// The batch framing between workers and the usage service, and the usage service's splicing
/// of batches into ingest bodies. The first byte picks how the rest is read:
/// - even: as a batch as it arrives (any bytes): what parses yields only the text's records;
/// - odd: as records and operations: records written by `RecordBatchWriter` come back exactly
///   as written, and every ingest body the buffer splices holds exactly the records a model of
///   the buffer (oldest dropped past `max_records`, one batch in flight) says it should.
pub fn record_batch(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        arrived_batch(rest);
    } else {
        written_batches(rest);
    }
}

fn arrived_batch(bytes: &[u8]) {
    let Ok(batch) = RecordBatch::parse(bytes.to_vec()) else {
        return;
    };
    let n = batch.len();
    assert!((n + 1) * 4 <= bytes.len());
    let text = &bytes[..bytes.len() - (n + 1) * 4];
    let all = batch.records(0, n);
    if n > 0 {
        assert_eq!(all, text);
    } else {
        assert!(all.is_empty());
    }
    // Each record is a non-empty run of the text; consecutive ones are separated by one comma.
    let mut joined = Vec::new();
    for i in 0..n {
        let record = batch.records(i, i + 1);
        assert!(!record.is_empty());
        if i > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(record);
        assert_eq!(batch.records(0, i + 1), &joined[..]);
    }
    assert_eq!(joined, all);
    assert!(batch.records(n, n + 3).is_empty());
}

/// Reads the input as operations on the writer, the buffer and its model.
struct Ops<'a> {
    data: &'a [u8],
}

impl Ops<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }
}

/// The buffer's expected state: records in order, and how many at the front are in flight.
struct Model {
    records: VecDeque<Vec<u8>>,
    in_flight: Option<(u32, usize)>,
}

fn written_batches(data: &[u8]) {
    let mut ops = Ops { data };
    let policy = DeliveryPolicy {
        batch_size: usize::from(ops.byte().unwrap_or(3) % 8) + 1,
        max_age_ms: 10,
        max_records: usize::from(ops.byte().unwrap_or(5) % 12) + 1,
        min_backoff_ms: 5,
        max_backoff_ms: 40,
    };
    let mut buffer = UsageBuffer::new(policy);
    let mut model = Model {
        records: VecDeque::new(),
        in_flight: None,
    };
    let mut writer = RecordBatchWriter::new(2, 8);
    let mut written: Vec<Vec<u8>> = Vec::new();
    let mut now_ms = 0u64;
    let mut token = 0u32;
    while let Some(op) = ops.byte() {
        now_ms += u64::from(op >> 4);
        match op % 8 {
            // A record of the next 0-15 bytes (the target's model lets it be empty).
            0..=2 => {
                let len = usize::from(ops.byte().unwrap_or(0) % 16);
                let record = ops.bytes(len).to_vec();
                // An empty record is refused (it is no JSON value), any other one framed.
                let stored = writer.push(|out| out.extend_from_slice(&record));
                assert_eq!(stored, !record.is_empty());
                if stored {
                    written.push(record);
                }
            }
            // The batch crosses the queue.
            3 => {
                let bytes = writer.finish();
                assert!(writer.is_empty());
                let batch = match RecordBatch::parse(bytes) {
                    Ok(batch) => batch,
                    Err(e) => panic!("a written batch does not parse: {e}: {written:?}"),
                };
                assert_eq!(batch.len(), written.len());
                for (i, record) in written.iter().enumerate() {
                    assert_eq!(batch.records(i, i + 1), &record[..]);
                }
                buffer.push_batch(batch, now_ms);
                model.records.extend(written.drain(..));
                let excess = model.records.len().saturating_sub(policy.max_records);
                model.records.drain(..excess);
                if let Some((_, remaining)) = model.in_flight.as_mut() {
                    *remaining = remaining.saturating_sub(excess);
                }
            }
            // The POST that is due goes out.
            4 | 5 => {
                if !buffer.should_send(now_ms) {
                    continue;
                }
                assert!(model.in_flight.is_none());
                let (body, count) = buffer.next_body();
                let take = model.records.len().min(policy.batch_size);
                assert_eq!(count, take);
                let mut expected = b"{\"records\":[".to_vec();
                for (i, record) in model.records.iter().take(take).enumerate() {
                    if i > 0 {
                        expected.push(b',');
                    }
                    expected.extend_from_slice(record);
                }
                expected.extend_from_slice(b"]}");
                assert_eq!(
                    String::from_utf8_lossy(&body),
                    String::from_utf8_lossy(&expected)
                );
                token += 1;
                buffer.sent(token, count);
                model.in_flight = Some((token, count));
            }
            // Its answer: stored, refused, or failed.
            6 => {
                let Some((t, remaining)) = model.in_flight.take() else {
                    continue;
                };
                match ops.byte().unwrap_or(0) % 3 {
                    0 => {
                        buffer.acknowledged(t, 0);
                        model.records.drain(..remaining);
                    }
                    1 => {
                        assert_eq!(buffer.discard_in_flight(t), remaining);
                        model.records.drain(..remaining);
                    }
                    _ => {
                        buffer.failed(t, now_ms);
                    }
                }
                assert!(!buffer.is_in_flight(t));
            }
            // An answer to a callout that is not the one in flight changes nothing.
            _ => {
                let before = buffer.len();
                buffer.acknowledged(token + 1, 0);
                assert_eq!(buffer.failed(token + 1, now_ms), 0);
                assert_eq!(buffer.len(), before);
            }
        }
        assert_eq!(buffer.len(), model.records.len());
    }
}

/// The body of `POST /v1/filter/usage`: a bad body is a 4xx, never a 5xx; every record is
/// either accepted or rejected, once, in order.
pub fn ingest_payload(data: &[u8]) {
    match ingest::parse_batch(data) {
        Ok((good, rejected)) => {
            let mut indexes: Vec<usize> = good.iter().map(|(i, _)| *i).collect();
            for r in &rejected {
                let value = serde_json::to_value(r).unwrap_or_default();
                let index = value.get("index").and_then(serde_json::Value::as_u64);
                let index = index.and_then(|i| usize::try_from(i).ok());
                assert!(index.is_some(), "{value}");
                indexes.extend(index);
                assert!(value.get("error").and_then(|e| e.as_str()).is_some());
            }
            indexes.sort_unstable();
            assert!(indexes.iter().enumerate().all(|(i, &at)| i == at));
            for (_, record) in &good {
                assert!(record.response_code <= 999);
                assert!(record.timestamp >= 0);
                assert!(!record.request_id.is_empty());
            }
        }
        Err(e) => {
            let status = fuzzing::status(e);
            assert!((400..500).contains(&status), "{status}");
        }
    }
}

/// The API's query strings: the first byte picks the parser, the rest is the query string.
/// A bad one is a 4xx, never a 5xx; a cursor and a date the API wrote parse back to themselves.
pub fn api_query(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let raw = (which & 0x80 == 0).then_some(&*text);
    let answer = match which % 7 {
        0 => fuzzing::usage_query(raw),
        1 => fuzzing::request_filter(raw, false),
        2 => fuzzing::request_filter(raw, true),
        3 => fuzzing::lookup_leases(raw),
        4 => fuzzing::key_list(raw),
        5 => {
            if let Some(cursor) = fuzzing::cursor(&text) {
                assert!(cursor.timestamp >= 0 && cursor.id >= 0);
                assert_eq!(fuzzing::cursor(&cursor.encode()), Some(cursor));
            }
            return;
        }
        _ => {
            if let Some(ms) = clock::parse_rfc3339(&text) {
                let shown = clock::format_rfc3339(ms);
                assert_eq!(clock::parse_rfc3339(&shown), Some(ms), "{text} -> {shown}");
                let millis = clock::format_rfc3339_millis(ms);
                assert_eq!(
                    clock::parse_rfc3339(&millis),
                    Some(ms),
                    "{text} -> {millis}"
                );
            }
            return;
        }
    };
    if let Err(e) = answer {
        let status = fuzzing::status(e);
        assert!((400..500).contains(&status), "{status}");
    }
}
