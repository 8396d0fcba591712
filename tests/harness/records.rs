//! Reading the control plane's usage records back in the shapes the limit tests check.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::time::parse_rfc3339_ms;

/// Admitted records (response 200) per second of Envoy's clock. A window of a rate limit is
/// `now_ms / 1000` of the moment the filter decided, which for a cached key is exactly the
/// record's `timestamp` (the request's arrival, read once).
pub fn admitted_per_second<'a>(records: impl IntoIterator<Item = &'a Value>) -> BTreeMap<u64, u64> {
    let mut per_second = BTreeMap::new();
    for r in records.into_iter().filter(|r| r["response_code"] == 200) {
        let at = r["timestamp"]
            .as_str()
            .and_then(parse_rfc3339_ms)
            .unwrap_or_else(|| panic!("record without timestamp: {r}"));
        *per_second.entry(at / 1000).or_insert(0) += 1;
    }
    per_second
}
