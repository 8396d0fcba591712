//! A key's budgets: its quotas (rolling windows of requests) and its credit budget. Both are
//! spent only against leases the control plane grants (docs/protocol.md, "Budget leases"); this
//! file names what they count (`Meter`), which limit is full (`Exhausted`) and the denial each
//! gives.

use crate::denial::Denial;
use crate::key_state::{CreditPeriod, KeyState};

/// What a budget counts: requests (every quota of the key) or credits (its credit budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meter {
    Calls,
    Credits,
}

impl Meter {
    pub const ALL: [Meter; 2] = [Meter::Calls, Meter::Credits];

    /// As the protocol spells it.
    pub fn name(self) -> &'static str {
        match self {
            Meter::Calls => "calls",
            Meter::Credits => "credits",
        }
    }

    pub fn parse(name: &str) -> Option<Meter> {
        Meter::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether `state`'s key has a budget on this meter.
    pub fn limits(self, state: &KeyState) -> bool {
        match self {
            Meter::Calls => state.wire.quotas != Default::default(),
            Meter::Credits => state.wire.credits.is_some(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaWindow {
    Total,
    Monthly,
    Weekly,
    Daily,
}

impl QuotaWindow {
    /// Longest first: the order in which a full window is reported.
    pub const ALL: [QuotaWindow; 4] = [
        QuotaWindow::Total,
        QuotaWindow::Monthly,
        QuotaWindow::Weekly,
        QuotaWindow::Daily,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuotaWindow::Total => "total",
            QuotaWindow::Monthly => "monthly",
            QuotaWindow::Weekly => "weekly",
            QuotaWindow::Daily => "daily",
        }
    }

    fn quota(self, state: &KeyState) -> Option<u64> {
        let q = &state.wire.quotas;
        match self {
            QuotaWindow::Total => q.total,
            QuotaWindow::Monthly => q.monthly,
            QuotaWindow::Weekly => q.weekly,
            QuotaWindow::Daily => q.daily,
        }
    }
}

/// Which limit has no room left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    Quota(QuotaWindow),
    Credits(CreditPeriod),
}

impl Exhausted {
    /// The control plane's `exhausted` of a grant with no units.
    pub fn parse(meter: Meter, name: &str) -> Option<Exhausted> {
        match meter {
            Meter::Calls => QuotaWindow::ALL
                .into_iter()
                .find(|w| w.name() == name)
                .map(Exhausted::Quota),
            Meter::Credits => [CreditPeriod::Day, CreditPeriod::Month, CreditPeriod::Total]
                .into_iter()
                .find(|p| p.name() == name)
                .map(Exhausted::Credits),
        }
    }

    /// When the control plane did not say (it could not be reached): the key's own first
    /// limit on the meter, so the denial is still the quota's (or the budget's).
    pub fn of(meter: Meter, state: &KeyState) -> Exhausted {
        match meter {
            Meter::Calls => Exhausted::Quota(
                QuotaWindow::ALL
                    .into_iter()
                    .find(|w| w.quota(state).is_some())
                    .unwrap_or(QuotaWindow::Total),
            ),
            Meter::Credits => Exhausted::Credits(
                state
                    .wire
                    .credits
                    .map_or(CreditPeriod::Total, |budget| budget.period),
            ),
        }
    }

    pub fn denial(self) -> Denial {
        match self {
            Exhausted::Quota(window) => Denial::QuotaExceeded(window),
            Exhausted::Credits(period) => Denial::CreditsExhausted(period),
        }
    }

    /// A small number for the shared-data lease record (0 = not said).
    pub fn code(self) -> u64 {
        match self {
            Exhausted::Quota(w) => {
                1 + QuotaWindow::ALL.iter().position(|x| *x == w).unwrap_or(0) as u64
            }
            Exhausted::Credits(CreditPeriod::Day) => 5,
            Exhausted::Credits(CreditPeriod::Month) => 6,
            Exhausted::Credits(CreditPeriod::Total) => 7,
        }
    }

    pub fn from_code(code: u64) -> Option<Exhausted> {
        match code {
            1..=4 => QuotaWindow::ALL
                .get(code as usize - 1)
                .map(|w| Exhausted::Quota(*w)),
            5 => Some(Exhausted::Credits(CreditPeriod::Day)),
            6 => Some(Exhausted::Credits(CreditPeriod::Month)),
            7 => Some(Exhausted::Credits(CreditPeriod::Total)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_state::KeyStateWire;

    fn state(json: &str) -> KeyState {
        let wire: KeyStateWire = serde_json::from_str(json).unwrap();
        KeyState::from_wire(wire).unwrap()
    }

    #[test]
    fn codes_round_trip_and_names_parse() {
        for meter in Meter::ALL {
            assert_eq!(Meter::parse(meter.name()), Some(meter));
        }
        let all = QuotaWindow::ALL.map(Exhausted::Quota).into_iter().chain(
            [CreditPeriod::Day, CreditPeriod::Month, CreditPeriod::Total].map(Exhausted::Credits),
        );
        for exhausted in all {
            assert_eq!(Exhausted::from_code(exhausted.code()), Some(exhausted));
        }
        assert_eq!(Exhausted::from_code(0), None);
        assert_eq!(
            Exhausted::parse(Meter::Calls, "weekly"),
            Some(Exhausted::Quota(QuotaWindow::Weekly))
        );
        assert_eq!(
            Exhausted::parse(Meter::Credits, "month"),
            Some(Exhausted::Credits(CreditPeriod::Month))
        );
        assert_eq!(Exhausted::parse(Meter::Calls, "month"), None);
    }

    #[test]
    fn unsaid_exhaustion_names_the_keys_longest_window() {
        let key = r#"{"key_id":"key_1","workspace_id":"ws_1","active":true,
                      "quotas":{"daily":10,"weekly":50}}"#;
        let s = state(key);
        assert!(Meter::Calls.limits(&s));
        assert!(!Meter::Credits.limits(&s));
        assert_eq!(
            Exhausted::of(Meter::Calls, &s),
            Exhausted::Quota(QuotaWindow::Weekly)
        );
    }
}
