//! Plan rate limits: per-second and per-minute fixed windows shared by every key of a
//! workspace, counted in shared data so all workers of one Envoy see one count.
//!
//! Memory: `slots` records of 5 words, reused forever (a workspace takes over a slot whose
//! windows have passed); no shared-data key is ever created per window. A workspace finds its
//! record within `PROBES` slots; if all are held by other active workspaces, its request is not
//! rate limited (counted in a metric) rather than refused.

use crate::counters::{fnv1a, update, CounterError, Update};
use crate::host::SharedStore;

const PROBES: usize = 4;
/// owner, second, count in that second, minute, count in that minute.
const WORDS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateWindow {
    Second,
    Minute,
}

impl RateWindow {
    pub fn name(self) -> &'static str {
        match self {
            RateWindow::Second => "per-second",
            RateWindow::Minute => "per-minute",
        }
    }

    pub fn seconds(self) -> u64 {
        match self {
            RateWindow::Second => 1,
            RateWindow::Minute => 60,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanRates {
    pub per_second: Option<u64>,
    pub per_minute: Option<u64>,
}

impl PlanRates {
    /// This Envoy's share when `instances` Envoys enforce the same plan.
    pub fn share(self, instances: u64) -> PlanRates {
        let part = |limit: Option<u64>| limit.map(|l| l.div_ceil(instances.max(1)));
        PlanRates {
            per_second: part(self.per_second),
            per_minute: part(self.per_minute),
        }
    }
}

/// The most constraining window after this request, for response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub window: RateWindow,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOutcome {
    Unlimited,
    Admitted(RateStatus),
    Limited(RateStatus),
    /// No slot free for this workspace (or the host failed): not limited, but counted.
    Untracked,
}

fn reset_s(window: RateWindow, now_ms: u64) -> u64 {
    let period = window.seconds() * 1000;
    (period - now_ms % period).div_ceil(1000)
}

/// Admits one request of `workspace` if both windows have room, counting it.
pub fn admit(
    store: &dyn SharedStore,
    slots: usize,
    workspace: &str,
    rates: PlanRates,
    now_ms: u64,
) -> RateOutcome {
    if rates.per_second.is_none() && rates.per_minute.is_none() {
        return RateOutcome::Unlimited;
    }
    let owner = fnv1a(workspace.as_bytes()) | 1;
    let second = now_ms / 1000;
    let minute = now_ms / 60_000;
    let first = (owner % slots.max(1) as u64) as usize;
    for probe in 0..PROBES.min(slots.max(1)) {
        let key = format!("tollgate.rate.{}", (first + probe) % slots.max(1));
        let result = update(store, &key, WORDS, |record| {
            let (mut count_s, mut count_m) = (0, 0);
            if let Some(r) = record {
                let active = r[3] + 1 >= minute;
                if r[0] != owner && active {
                    return Update::Keep(None);
                }
                if r[0] == owner {
                    count_s = if r[1] == second { r[2] } else { 0 };
                    count_m = if r[3] == minute { r[4] } else { 0 };
                }
            }
            let mut status: Option<RateStatus> = None;
            for (window, limit, count) in [
                (RateWindow::Second, rates.per_second, count_s),
                (RateWindow::Minute, rates.per_minute, count_m),
            ] {
                let Some(limit) = limit else { continue };
                let view = RateStatus {
                    window,
                    limit,
                    remaining: limit.saturating_sub(count + 1),
                    reset_s: reset_s(window, now_ms),
                };
                if count + 1 > limit {
                    return Update::Keep(Some(RateOutcome::Limited(RateStatus {
                        remaining: 0,
                        ..view
                    })));
                }
                if status.is_none_or(|s| view.remaining < s.remaining) {
                    status = Some(view);
                }
            }
            let record = vec![owner, second, count_s + 1, minute, count_m + 1];
            match status {
                Some(status) => Update::Write(record, Some(RateOutcome::Admitted(status))),
                None => Update::Keep(Some(RateOutcome::Unlimited)),
            }
        });
        match result {
            Ok(Some(outcome)) => return outcome,
            Ok(None) => continue,
            // Contention this heavy means the limit is being hammered: refuse, never overshoot.
            Err(CounterError::Contended) => {
                let window = if rates.per_second.is_some() {
                    RateWindow::Second
                } else {
                    RateWindow::Minute
                };
                return RateOutcome::Limited(RateStatus {
                    window,
                    limit: rates.per_second.or(rates.per_minute).unwrap_or(0),
                    remaining: 0,
                    reset_s: reset_s(window, now_ms),
                });
            }
            Err(CounterError::Host(_)) => return RateOutcome::Untracked,
        }
    }
    RateOutcome::Untracked
}

/// Gives back one request counted by `admit` (it was refused for another reason).
pub fn refund(store: &dyn SharedStore, slots: usize, workspace: &str, now_ms: u64) {
    let owner = fnv1a(workspace.as_bytes()) | 1;
    let first = (owner % slots.max(1) as u64) as usize;
    for probe in 0..PROBES.min(slots.max(1)) {
        let key = format!("tollgate.rate.{}", (first + probe) % slots.max(1));
        let found = update(store, &key, WORDS, |record| match record {
            Some(r) if r[0] == owner => {
                let mut r = r.to_vec();
                if r[1] == now_ms / 1000 {
                    r[2] = r[2].saturating_sub(1);
                }
                if r[3] == now_ms / 60_000 {
                    r[4] = r[4].saturating_sub(1);
                }
                Update::Write(r, true)
            }
            _ => Update::Keep(false),
        });
        if found != Ok(false) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    const RATES: PlanRates = PlanRates {
        per_second: Some(5),
        per_minute: Some(12),
    };

    fn admitted(outcome: RateOutcome) -> bool {
        matches!(outcome, RateOutcome::Admitted(_))
    }

    #[test]
    fn per_second_limit_is_exact_and_resets_next_second() {
        let host = FakeHost::default();
        let t = 1_000_000;
        let results: Vec<bool> = (0..8)
            .map(|i| admitted(admit(&host, 64, "ws", RATES, t + i)))
            .collect();
        assert_eq!(results, [true, true, true, true, true, false, false, false]);
        match admit(&host, 64, "ws", RATES, t + 10) {
            RateOutcome::Limited(s) => {
                assert_eq!(s.window, RateWindow::Second);
                assert_eq!(s.reset_s, 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(admitted(admit(&host, 64, "ws", RATES, t + 1_000)));
    }

    #[test]
    fn per_minute_limit_spans_seconds() {
        let host = FakeHost::default();
        let t = 60_000 * 100;
        let mut n = 0;
        for s in 0..10 {
            for _ in 0..5 {
                if admitted(admit(&host, 64, "ws", RATES, t + s * 1000)) {
                    n += 1;
                }
            }
        }
        assert_eq!(n, 12);
        match admit(&host, 64, "ws", RATES, t + 30_000) {
            RateOutcome::Limited(s) => {
                assert_eq!(s.window, RateWindow::Minute);
                assert_eq!(s.reset_s, 30);
            }
            other => panic!("{other:?}"),
        }
        assert!(admitted(admit(&host, 64, "ws", RATES, t + 60_000)));
    }

    #[test]
    fn workspaces_are_counted_apart_and_reuse_slots() {
        let host = FakeHost::default();
        for i in 0..5 {
            assert!(admitted(admit(&host, 1, "a", RATES, 1_000 + i)));
        }
        // One slot, held by an active workspace: another one is not tracked.
        assert_eq!(admit(&host, 1, "b", RATES, 1_010), RateOutcome::Untracked);
        // Two minutes later the slot is free again.
        assert!(admitted(admit(&host, 1, "b", RATES, 200_000)));
        assert_eq!(
            host.data.borrow().len(),
            1,
            "no key per window or per workspace"
        );
    }

    #[test]
    fn remaining_reports_the_tightest_window() {
        let host = FakeHost::default();
        match admit(&host, 8, "ws", RATES, 5_000) {
            RateOutcome::Admitted(s) => {
                assert_eq!((s.window, s.remaining, s.limit), (RateWindow::Second, 4, 5))
            }
            other => panic!("{other:?}"),
        }
        let loose = PlanRates {
            per_second: Some(100),
            per_minute: Some(3),
        };
        match admit(&host, 8, "other", loose, 5_000) {
            RateOutcome::Admitted(s) => {
                assert_eq!((s.window, s.remaining), (RateWindow::Minute, 2))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            admit(&host, 8, "x", PlanRates::default(), 0),
            RateOutcome::Unlimited
        );
    }

    #[test]
    fn instances_share_the_plan() {
        let plan = PlanRates {
            per_second: Some(100),
            per_minute: Some(1000),
        };
        assert_eq!(
            plan.share(3),
            PlanRates {
                per_second: Some(34),
                per_minute: Some(334)
            }
        );
        assert_eq!(plan.share(1), plan);
    }

    #[test]
    fn refund_gives_a_request_back() {
        let host = FakeHost::default();
        for i in 0..5 {
            admit(&host, 8, "ws", RATES, 1_000 + i);
        }
        assert!(!admitted(admit(&host, 8, "ws", RATES, 1_005)));
        refund(&host, 8, "ws", 1_006);
        assert!(admitted(admit(&host, 8, "ws", RATES, 1_007)));
    }
}
