//! The client's IP: from `x-forwarded-for` (counting trusted hops from the right), or the
//! downstream peer's address, which only an adapter can read.

use crate::config::{ClientIpSource, FilterConfig};
use crate::header_map;

/// The client IP the configuration takes from the request's headers (`x_forwarded_for`);
/// empty when it is the downstream peer's, which only the adapter reads (and only when needed:
/// on the wasm build it costs a host call).
pub fn header_client_ip(config: &FilterConfig, headers: &[(&str, &[u8])]) -> String {
    match config.client_ip {
        ClientIpSource::ForwardedFor { trusted_hops } => {
            let xff = header_map::get(headers, "x-forwarded-for").unwrap_or_default();
            forwarded_client(&String::from_utf8_lossy(xff), trusted_hops)
                .map(str::to_string)
                .unwrap_or_default()
        }
        ClientIpSource::Downstream => String::new(),
    }
}

/// The client address `trusted_hops` entries from the right of `x-forwarded-for`
/// (1 = the address the nearest trusted proxy saw), if the header has that many.
pub fn forwarded_client(xff: &str, trusted_hops: usize) -> Option<&str> {
    let nth = trusted_hops.checked_sub(1)?;
    xff.rsplit(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .nth(nth)
        .map(ip_of)
}

/// `127.0.0.1:58642` → `127.0.0.1`, `[::1]:443` → `::1`.
pub fn ip_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_counts_trusted_hops_from_the_right() {
        let xff = "198.51.100.7, 10.0.0.2 , 10.0.0.1";
        assert_eq!(forwarded_client(xff, 1), Some("10.0.0.1"));
        assert_eq!(forwarded_client(xff, 3), Some("198.51.100.7"));
        assert_eq!(forwarded_client(xff, 4), None);
        assert_eq!(forwarded_client("", 1), None);
    }

    #[test]
    fn ip_without_port() {
        assert_eq!(ip_of("127.0.0.1:58642"), "127.0.0.1");
        assert_eq!(ip_of("[::1]:443"), "::1");
        assert_eq!(ip_of("10.0.0.1"), "10.0.0.1");
        assert_eq!(ip_of("::1"), "::1");
    }
}
