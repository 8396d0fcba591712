//! The plugin configuration as it is written: serde's view of the JSON, unknown fields rejected.
//! `compile.rs` turns it into the validated `FilterConfig`.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) control_plane: Option<Value>,
    pub(super) key_sources: Option<Value>,
    pub(super) cache: Option<Value>,
    pub(super) failure_mode: Option<Value>,
    pub(super) hide_key: Option<Value>,
    pub(super) usage: Option<Value>,
    pub(super) limits: Option<Value>,
    pub(super) ip_blocking: Option<Value>,
    pub(super) client_ip: Option<Value>,
    pub(super) forward_meta: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) quota_status: Option<u32>,
    pub(super) headers: Option<LimitHeaders>,
    pub(super) rate_slots: Option<u64>,
    pub(super) key_rate_slots: Option<u64>,
    pub(super) instances: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIpBlocking {
    pub(super) enabled: Option<bool>,
    pub(super) max_failures: Option<u64>,
    pub(super) window: Option<String>,
    pub(super) block_for: Option<String>,
    pub(super) table_size: Option<u64>,
    pub(super) max_blocked: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientIp {
    pub(super) source: Option<String>,
    pub(super) trusted_hops: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUsage {
    pub(super) enabled: Option<bool>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    pub(super) batch_size: Option<u64>,
    pub(super) flush_interval: Option<String>,
    pub(super) max_buffered: Option<u64>,
    pub(super) max_backoff: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) credits: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControlPlane {
    pub(super) cluster: String,
    pub(super) authority: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) enum RawKeySource {
    Header(String),
    Bearer(String),
    Query(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) ttl: Option<String>,
    pub(super) negative_ttl: Option<String>,
    pub(super) max_keys: Option<u64>,
    pub(super) max_invalid_keys: Option<u64>,
}
