//! Budget leases (`docs/protocol.md`, "Filter → control plane: budget leases"): units of what is
//! left of a key's budget, reserved for one Envoy until it settles them or they expire. What a
//! request asks, what the store answers, and the arithmetic of room and size every backend
//! shares.

use serde::Serialize;

use super::credits::{CreditBudget, CreditPeriod};
use super::key::{Quotas, Usage};
use super::names::{invalid, ValidationError};

/// A lease not settled this long after its `expires_at` is charged in full and deleted.
pub const LEASE_GRACE_MS: i64 = 10_000;
/// `retry_ms` of a grant without units: when asking again may find room.
pub const RETRY_MS: u64 = 1_000;
/// Entries of `settle`, and of `grant`, in one request.
pub const MAX_ENTRIES: usize = 1_000;
/// The most units one grant may ask for.
pub const MAX_WANT: u64 = 1_000_000_000;
/// Characters of an instance id.
pub const INSTANCE_MAX: usize = 64;
/// Characters of a lease id after `{instance}.`.
pub const LEASE_SUFFIX_MAX: usize = 32;

/// What a lease's units are of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Meter {
    /// One unit per admitted request: every quota of the key.
    Calls,
    /// The route's credits per admitted request: the key's credit budget.
    Credits,
}

impl Meter {
    pub const ALL: [Meter; 2] = [Self::Calls, Self::Credits];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Calls => "calls",
            Self::Credits => "credits",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// The limit a grant without units found full: a quota window (`calls`) or the credit budget's
/// period (`credits`; its `total` is [`Exhausted::Total`] too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exhausted {
    Total,
    Monthly,
    Weekly,
    Daily,
    Day,
    Month,
}

/// A lease the filter will never spend from again, and the units it spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub lease: String,
    pub spent: u64,
}

/// A lease to reserve: `want` units, of which fewer than `min` are of no use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    pub lease: String,
    pub key_id: String,
    pub meter: Meter,
    pub want: u64,
    pub min: u64,
}

/// One request of an Envoy (validated: `app/leases.rs`): settlements first, then grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    pub instance: String,
    pub settle: Vec<Settlement>,
    pub grant: Vec<GrantRequest>,
}

/// The answer to one [`GrantRequest`]: `units` ≥ its `min`, or 0 with `retry_ms` (and
/// `exhausted`, unless the key does not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    pub lease: String,
    pub key_id: String,
    pub meter: Meter,
    pub units: u64,
    pub ttl_ms: u64,
    pub exhausted: Option<Exhausted>,
    pub retry_ms: Option<u64>,
}

impl Grant {
    /// No units for `request`: its budget is full (`exhausted`) or its key is gone (`None`).
    pub fn refused(request: &GrantRequest, exhausted: Option<Exhausted>) -> Self {
        Self {
            lease: request.lease.clone(),
            key_id: request.key_id.clone(),
            meter: request.meter,
            units: 0,
            ttl_ms: 0,
            exhausted,
            retry_ms: Some(RETRY_MS),
        }
    }

    /// `units` for `request`, to be spent within `ttl_ms`.
    pub fn granted(request: &GrantRequest, units: u64, ttl_ms: u64) -> Self {
        Self {
            lease: request.lease.clone(),
            key_id: request.key_id.clone(),
            meter: request.meter,
            units,
            ttl_ms,
            exhausted: None,
            retry_ms: None,
        }
    }
}

/// What the store answers a [`LeaseRequest`]: how many settlements it applied (unknown leases
/// are not counted) and one grant per request, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseAnswer {
    pub settled: u64,
    pub grants: Vec<Grant>,
}

/// What is left of one budget of a key on one meter: per limit, longest first, its quota less
/// what is charged and leased out (0 at the least).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    limits: Vec<(Exhausted, u64)>,
}

impl Room {
    /// The quotas' room: `quota_w − charged_w − leased` per window that has a quota; `None`
    /// when the key has no quota (no budget on `calls`).
    pub fn calls(quotas: &Quotas, charged: &Usage, leased: u64) -> Option<Self> {
        let limits: Vec<(Exhausted, u64)> = [
            (Exhausted::Total, quotas.total, charged.total),
            (Exhausted::Monthly, quotas.monthly, charged.monthly),
            (Exhausted::Weekly, quotas.weekly, charged.weekly),
            (Exhausted::Daily, quotas.daily, charged.daily),
        ]
        .into_iter()
        .filter_map(|(limit, quota, charged)| {
            quota.map(|q| (limit, q.saturating_sub(charged).saturating_sub(leased)))
        })
        .collect();
        (!limits.is_empty()).then_some(Self { limits })
    }

    /// The credit budget's room in its current period: `limit − charged − leased`.
    pub fn credits(budget: &CreditBudget, charged: u64, leased: u64) -> Self {
        let limit = match budget.period {
            CreditPeriod::Day => Exhausted::Day,
            CreditPeriod::Month => Exhausted::Month,
            CreditPeriod::Total => Exhausted::Total,
        };
        Self {
            limits: vec![(
                limit,
                budget.limit.saturating_sub(charged).saturating_sub(leased),
            )],
        }
    }

    /// The room of the fullest limit.
    pub fn left(&self) -> u64 {
        self.limits.iter().map(|(_, r)| *r).min().unwrap_or(0)
    }

    /// The units of a lease of `want` (at least `min`) while `holders` other instances hold
    /// leases of this budget: at most half of an even share of the room, so one Envoy never
    /// takes the rest and the last units go out `min` at a time. `Err`: the first limit
    /// (longest first) without room for `min`.
    pub fn size(&self, want: u64, min: u64, holders: u64) -> Result<u64, Exhausted> {
        if let Some((full, _)) = self.limits.iter().find(|(_, room)| *room < min) {
            return Err(*full);
        }
        let share = self.left() / holders.saturating_add(1).saturating_mul(2);
        Ok(want.min(share.max(min)))
    }
}

/// An instance id: 1–64 characters `[A-Za-z0-9_.-]`.
pub fn instance(field: &str, value: &str) -> Result<(), ValidationError> {
    let ok = (1..=INSTANCE_MAX).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be 1-{INSTANCE_MAX} characters [A-Za-z0-9_.-]"),
        ))
    }
}

/// A lease id of `instance`: `{instance}.` and 1–32 characters `[A-Za-z0-9]`.
pub fn lease_id(field: &str, value: &str, instance: &str) -> Result<(), ValidationError> {
    let suffix = value
        .strip_prefix(instance)
        .and_then(|rest| rest.strip_prefix('.'));
    let ok = suffix.is_some_and(|s| {
        (1..=LEASE_SUFFIX_MAX).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be the instance id, '.' and 1-{LEASE_SUFFIX_MAX} characters [A-Za-z0-9]"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(total: Option<u64>, daily: Option<u64>) -> Quotas {
        Quotas {
            total,
            daily,
            ..Quotas::default()
        }
    }

    #[test]
    fn no_quota_is_no_budget() {
        assert_eq!(Room::calls(&Quotas::default(), &Usage::default(), 5), None);
    }

    #[test]
    fn room_is_the_fullest_window_less_charges_and_leases() {
        let charged = Usage {
            total: 900,
            daily: 10,
            ..Usage::default()
        };
        let room = Room::calls(&quotas(Some(1000), Some(300)), &charged, 40).unwrap();
        assert_eq!(room.left(), 60);
        // Past its quota, a window reads 0, never less.
        let room = Room::calls(&quotas(Some(1000), Some(300)), &charged, 400).unwrap();
        assert_eq!(room.left(), 0);
        assert_eq!(room.size(10, 1, 0), Err(Exhausted::Total));
    }

    #[test]
    fn exhausted_names_the_longest_full_window() {
        let charged = Usage {
            total: 995,
            daily: 299,
            ..Usage::default()
        };
        let room = Room::calls(&quotas(Some(1000), Some(300)), &charged, 0).unwrap();
        assert_eq!(room.size(10, 1, 0), Ok(1));
        assert_eq!(room.size(10, 2, 0), Err(Exhausted::Daily));
        assert_eq!(room.size(10, 6, 0), Err(Exhausted::Total));
    }

    #[test]
    fn size_is_half_an_even_share_at_least_min_at_most_want() {
        let budget = CreditBudget {
            limit: 100,
            period: CreditPeriod::Month,
        };
        let room = Room::credits(&budget, 20, 0);
        assert_eq!(room.size(1000, 1, 0), Ok(40));
        assert_eq!(room.size(1000, 1, 1), Ok(20));
        assert_eq!(room.size(1000, 1, 3), Ok(10));
        assert_eq!(room.size(7, 1, 0), Ok(7));
        let room = Room::credits(&budget, 97, 0);
        assert_eq!(room.size(1000, 1, 4), Ok(1));
        assert_eq!(room.size(1000, 3, 4), Ok(3));
        assert_eq!(room.size(1000, 5, 0), Err(Exhausted::Month));
    }

    #[test]
    fn ids_are_checked() {
        assert!(instance("instance", "i_5f2c9a7d1e3b4c6a").is_ok());
        assert!(instance("instance", "a.b-c_D9").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            assert!(instance("instance", bad).is_err(), "{bad}");
        }
        assert!(lease_id("l", "i_1.00c1f3a29b6e4d70", "i_1").is_ok());
        for bad in [
            "i_1.",
            "i_2.abc",
            "i_1abc",
            "i_1.a-b",
            &format!("i_1.{}", "a".repeat(33)),
        ] {
            let e = lease_id("grant[0].lease", bad, "i_1").unwrap_err();
            assert_eq!(e.field, "grant[0].lease", "{bad}");
        }
    }
}
