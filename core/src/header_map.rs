//! Zero-copy view of a header map as Envoy serializes it for `proxy_get_header_map_pairs`:
//! `u32 count`, then `count` pairs of `u32` sizes (name, value), then every name and value,
//! each followed by a NUL byte. All integers little-endian.
//!
//! The SDK's own reader copies every name and value into a `String`/`Vec`; reading the block in
//! place keeps the request path to one allocation for the whole map.

/// Header names (lower-case, as Envoy gives them) and raw values, borrowed from the block.
pub type Headers<'a> = Vec<(&'a str, &'a [u8])>;

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let word: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(word) as usize)
}

/// Parses a serialized header map; `None` if it is malformed (truncated, sizes past the end,
/// a name that is not UTF-8).
pub fn parse_pairs(bytes: &[u8]) -> Option<Headers<'_>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = u32_at(bytes, 0)?;
    // Every pair needs at least 8 bytes of sizes and 2 NULs: a lying count cannot allocate much.
    if count > bytes.len() / 10 {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut data = 4 + count * 8;
    for i in 0..count {
        let name_len = u32_at(bytes, 4 + i * 8)?;
        let value_len = u32_at(bytes, 8 + i * 8)?;
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data += name_len + 1;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data += value_len + 1;
        pairs.push((std::str::from_utf8(name).ok()?, value));
    }
    Some(pairs)
}

/// The first value of header `name`.
pub fn get<'a>(headers: &[(&'a str, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// The first value of header `name` as text (lossy), empty if absent.
pub fn text(headers: &[(&str, &[u8])], name: &str) -> String {
    get(headers, name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// Serializes pairs the way Envoy does (for tests and fakes).
pub fn serialize_pairs(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_envoy_writes() {
        let block = serialize_pairs(&[
            (":method", b"GET"),
            (":path", b"/v1/things/1?x=1"),
            ("x-api-key", b"tg_abc"),
            ("empty", b""),
        ]);
        let headers = parse_pairs(&block).unwrap();
        assert_eq!(headers.len(), 4);
        assert_eq!(get(&headers, ":path"), Some(&b"/v1/things/1?x=1"[..]));
        assert_eq!(get(&headers, "empty"), Some(&b""[..]));
        assert_eq!(get(&headers, "absent"), None);
        assert_eq!(text(&headers, ":method"), "GET");
        assert_eq!(parse_pairs(&[]).unwrap().len(), 0);
    }

    #[test]
    fn malformed_blocks_are_refused_not_trusted() {
        let block = serialize_pairs(&[("x-api-key", b"tg_abc")]);
        for cut in 1..block.len() - 1 {
            assert_eq!(parse_pairs(&block[..cut]), None, "truncated at {cut}");
        }
        let mut lying = block.clone();
        lying[0] = 200;
        assert_eq!(parse_pairs(&lying), None);
        let mut huge = block.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_pairs(&huge), None);
        let bad_name = serialize_pairs(&[("\u{fffd}", b"v")]);
        let mut bad_name = bad_name.clone();
        let at = 4 + 8;
        bad_name[at] = 0xff;
        assert_eq!(parse_pairs(&bad_name), None);
    }
}
