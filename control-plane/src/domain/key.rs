//! An API key as the control plane holds it (never its secret: a hash and a display prefix),
//! its quotas, rate limits, credit budget, allowed endpoints and owner (`external_id`, `meta`),
//! the changes a patch or rotation makes, what it has leased out, and what a lookup answers the
//! filter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::credits::{CreditBudget, PeriodBounds};
use super::names::{Alias, Category, Description, ExternalId};
use super::plan::Plan;
use crate::secret::SecretHash;

/// `last_used_at` is only rewritten when it is older than this, so a busy key costs one write a
/// minute instead of one per request.
pub const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// `meta`: a flat map of names to strings (built by `validate::meta`).
pub type Meta = BTreeMap<String, String>;

/// The key's own rate limits per fixed window, on top of its plan's; `None` = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    pub per_second: Option<u64>,
    pub per_minute: Option<u64>,
    pub per_hour: Option<u64>,
}

/// Merge-patch of [`RateLimits`], per window: `None` keeps, `Some(None)` removes the limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateLimitsPatch {
    pub per_second: Option<Option<u64>>,
    pub per_minute: Option<Option<u64>>,
    pub per_hour: Option<Option<u64>>,
}

impl RateLimitsPatch {
    pub fn clear_all() -> Self {
        Self {
            per_second: Some(None),
            per_minute: Some(None),
            per_hour: Some(None),
        }
    }
}

/// Caps per window; `None` = no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub total: Option<u64>,
    pub daily: Option<u64>,
    pub weekly: Option<u64>,
    pub monthly: Option<u64>,
}

impl Quotas {
    /// Some window has a quota: the key has a budget on the `calls` meter.
    pub fn any(&self) -> bool {
        [self.total, self.daily, self.weekly, self.monthly]
            .iter()
            .any(Option::is_some)
    }
}

/// Requests charged per window (by settled and expired `calls` leases), in the same shape as
/// [`Quotas`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub total: u64,
    pub daily: u64,
    pub weekly: u64,
    pub monthly: u64,
}

/// One endpoint a key may call (`docs/protocol.md`). Built by `validate::allowed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRule {
    pub method: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub workspace_id: String,
    pub alias: String,
    pub description: Option<String>,
    pub category: String,
    pub active: bool,
    pub expires_at: Option<i64>,
    pub quotas: Quotas,
    pub allowed: Vec<AllowRule>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// SHA-256 hex of the current secret.
    pub hash: String,
    /// First 8 characters of the current secret.
    pub prefix: String,
    /// Usage records of the current calendar month (UTC), admitted or not.
    pub calls_this_month: u64,
    pub rate_limits: RateLimits,
    pub credits: Option<CreditBudget>,
    /// Credits charged to the budget in its current period (by settled and expired `credits`
    /// leases); without a budget, credits of the admitted records of the current calendar month
    /// (UTC).
    pub credits_used: u64,
    pub external_id: Option<String>,
    pub meta: Meta,
    /// What its live leases hold.
    pub leased: Leased,
}

/// The units of a key's live (not yet settled or swept) leases per meter, and how many Envoy
/// instances hold any of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leased {
    pub calls: u64,
    pub credits: u64,
    pub holders: u64,
}

impl Leased {
    pub fn is_empty(&self) -> bool {
        self.calls == 0 && self.credits == 0
    }
}

/// `12 calls, 40 credits to 2 Envoys`, or `nothing`.
impl std::fmt::Display for Leased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing");
        }
        let plural =
            |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let parts: Vec<String> = [
            (self.calls, "call", "calls"),
            (self.credits, "credit", "credits"),
        ]
        .into_iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, one, many)| plural(n, one, many))
        .collect();
        write!(
            f,
            "{} to {}",
            parts.join(", "),
            plural(self.holders, "Envoy", "Envoys")
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Inactive,
    Expired,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Expired => "expired",
        }
    }
}

impl ApiKey {
    /// `limit - used`, never below 0; `None` without a budget.
    pub fn credits_remaining(&self) -> Option<u64> {
        self.credits
            .map(|b| b.limit.saturating_sub(self.credits_used))
    }

    /// A deactivated key reads `inactive` even when it has also expired: reactivating it is the
    /// first thing someone would have to do.
    pub fn status(&self, now_ms: i64) -> KeyStatus {
        if !self.active {
            KeyStatus::Inactive
        } else if self.expires_at.is_some_and(|t| t <= now_ms) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewKey {
    pub id: String,
    pub workspace_id: String,
    pub alias: Alias,
    pub description: Option<Description>,
    pub category: Category,
    pub expires_at: Option<i64>,
    pub quotas: Quotas,
    pub allowed: Vec<AllowRule>,
    pub created_at: i64,
    pub hash: SecretHash,
    pub prefix: String,
    pub rate_limits: RateLimits,
    pub credits: Option<CreditBudget>,
    pub external_id: Option<ExternalId>,
    pub meta: Meta,
}

/// A partial update. Outer `None` = leave unchanged; for nullable fields `Some(None)` clears.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub alias: Option<Alias>,
    pub description: Option<Option<Description>>,
    pub category: Option<Category>,
    pub active: Option<bool>,
    pub expires_at: Option<Option<i64>>,
    pub quotas: QuotasPatch,
    pub allowed: Option<Vec<AllowRule>>,
    pub rate_limits: RateLimitsPatch,
    pub credits: Option<Option<CreditBudget>>,
    pub external_id: Option<Option<ExternalId>>,
    /// Replaces the whole map (empty clears it).
    pub meta: Option<Meta>,
}

/// JSON merge-patch semantics per window: `None` keeps, `Some(None)` removes the cap.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotasPatch {
    pub total: Option<Option<u64>>,
    pub daily: Option<Option<u64>>,
    pub weekly: Option<Option<u64>>,
    pub monthly: Option<Option<u64>>,
}

impl QuotasPatch {
    pub fn clear_all() -> Self {
        Self {
            total: Some(None),
            daily: Some(None),
            weekly: Some(None),
            monthly: Some(None),
        }
    }
}

impl KeyPatch {
    /// Applies the patch to `key`; shared by every backend so they agree on the semantics.
    pub fn apply(self, key: &mut ApiKey) {
        if let Some(alias) = self.alias {
            key.alias = alias.into_inner();
        }
        if let Some(description) = self.description {
            key.description = description.map(Description::into_inner);
        }
        if let Some(category) = self.category {
            key.category = category.into_inner();
        }
        if let Some(active) = self.active {
            key.active = active;
        }
        if let Some(expires_at) = self.expires_at {
            key.expires_at = expires_at;
        }
        let q = self.quotas;
        for (slot, change) in [
            (&mut key.quotas.total, q.total),
            (&mut key.quotas.daily, q.daily),
            (&mut key.quotas.weekly, q.weekly),
            (&mut key.quotas.monthly, q.monthly),
        ] {
            if let Some(value) = change {
                *slot = value;
            }
        }
        if let Some(allowed) = self.allowed {
            key.allowed = allowed;
        }
        let r = self.rate_limits;
        for (slot, change) in [
            (&mut key.rate_limits.per_second, r.per_second),
            (&mut key.rate_limits.per_minute, r.per_minute),
            (&mut key.rate_limits.per_hour, r.per_hour),
        ] {
            if let Some(value) = change {
                *slot = value;
            }
        }
        if let Some(credits) = self.credits {
            key.credits = credits;
        }
        if let Some(external_id) = self.external_id {
            key.external_id = external_id.map(ExternalId::into_inner);
        }
        if let Some(meta) = self.meta {
            key.meta = meta;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rotation {
    pub new_hash: SecretHash,
    pub new_prefix: String,
    pub now_ms: i64,
    /// `None`: every previous secret stops working now. `Some(t)`: previous secrets keep working
    /// until `t` (an earlier deadline from a previous rotation is kept).
    pub old_valid_until: Option<i64>,
}

/// What the filter needs to decide on a request, from one indexed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLookup {
    pub key_id: String,
    pub workspace_id: String,
    pub active: bool,
    pub expires_at: Option<i64>,
    /// Set only for a secret replaced by a rotation with grace.
    pub secret_valid_until: Option<i64>,
    pub allowed: Vec<AllowRule>,
    pub quotas: Quotas,
    /// Charged, counted only for keys with at least one quota (zeros otherwise).
    pub usage: Usage,
    pub plan: Plan,
    pub last_used_at: Option<i64>,
    pub rate_limits: RateLimits,
    /// The budget and what it has spent in its current period; `None` without a budget.
    pub credits: Option<CreditsLookup>,
    pub external_id: Option<String>,
    pub meta: Meta,
}

/// A lookup's credit budget: `used` = the credits charged to its current period, which starts
/// at `period.start_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditsLookup {
    pub budget: CreditBudget,
    pub used: u64,
    pub period: PeriodBounds,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leased_reads_as_a_sentence() {
        assert_eq!(Leased::default().to_string(), "nothing");
        let l = Leased {
            calls: 12,
            credits: 40,
            holders: 2,
        };
        assert_eq!(l.to_string(), "12 calls, 40 credits to 2 Envoys");
        let l = Leased {
            calls: 0,
            credits: 1,
            holders: 1,
        };
        assert_eq!(l.to_string(), "1 credit to 1 Envoy");
    }
}
