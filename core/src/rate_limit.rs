//! Plan rate limits: per-second and per-minute fixed windows shared by every key of a
//! workspace, counted in shared data so all workers of one Envoy see one count.
//!
//! Memory: `slots` records of 5 words, reused forever (a workspace takes over a slot whose
//! windows have passed); no shared-data key is ever created per window. A workspace finds its
//! record within `PROBES` slots; if all are held by other active workspaces, its request is not
//! rate limited (counted in a metric) rather than refused.

use crate::counters::{fnv1a, update, CounterError, Update};
use crate::host::SharedStore;
use crate::lease::{chunk, LeaseBook};

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

/// Units this worker holds for a workspace's current windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLease {
    second: u64,
    second_left: u64,
    /// The shared count right after the grant (for the `remaining` estimate).
    second_shared: u64,
    minute: u64,
    minute_left: u64,
    minute_shared: u64,
}

pub type RateLeases = LeaseBook<u64, RateLease>;

pub fn new_leases() -> RateLeases {
    LeaseBook::new(4_096)
}

fn owner_of(workspace: &str) -> u64 {
    fnv1a(workspace.as_bytes()) | 1
}

fn slot_keys(owner: u64, slots: usize) -> impl Iterator<Item = String> {
    let slots = slots.max(1);
    let first = (owner % slots as u64) as usize;
    (0..PROBES.min(slots)).map(move |probe| format!("tollgate.rate.{}", (first + probe) % slots))
}

enum Refill {
    /// This slot belongs to another active workspace.
    Taken,
    Limited(RateWindow),
    Granted(RateLease),
}

/// Admits one request of `workspace` if both windows have room, spending a leased unit and
/// taking a new chunk from shared data when the lease is used up or its window has passed.
pub fn admit(
    store: &dyn SharedStore,
    slots: usize,
    workspace: &str,
    rates: PlanRates,
    now_ms: u64,
    leases: &mut RateLeases,
) -> RateOutcome {
    if rates.per_second.is_none() && rates.per_minute.is_none() {
        return RateOutcome::Unlimited;
    }
    let owner = owner_of(workspace);
    let second = now_ms / 1000;
    let minute = now_ms / 60_000;
    let mut lease = leases.get_mut(&owner).copied().unwrap_or_default();
    let need_second =
        rates.per_second.is_some() && (lease.second != second || lease.second_left == 0);
    let need_minute =
        rates.per_minute.is_some() && (lease.minute != minute || lease.minute_left == 0);
    if need_second || need_minute {
        let mut refill = None;
        for key in slot_keys(owner, slots) {
            let result = update(store, &key, WORDS, |record| {
                let (mut count_s, mut count_m) = (0, 0);
                if let Some(r) = record {
                    if r[0] != owner && r[3] + 1 >= minute {
                        return Update::Keep(Refill::Taken);
                    }
                    if r[0] == owner {
                        count_s = if r[1] == second { r[2] } else { 0 };
                        count_m = if r[3] == minute { r[4] } else { 0 };
                    }
                }
                let mut granted = lease;
                if need_second {
                    let limit = rates.per_second.unwrap_or(0);
                    let grant = chunk(limit, limit.saturating_sub(count_s));
                    if grant == 0 {
                        return Update::Keep(Refill::Limited(RateWindow::Second));
                    }
                    count_s += grant;
                    (granted.second, granted.second_left, granted.second_shared) =
                        (second, grant, count_s);
                }
                if need_minute {
                    let limit = rates.per_minute.unwrap_or(0);
                    let grant = chunk(limit, limit.saturating_sub(count_m));
                    if grant == 0 {
                        return Update::Keep(Refill::Limited(RateWindow::Minute));
                    }
                    count_m += grant;
                    (granted.minute, granted.minute_left, granted.minute_shared) =
                        (minute, grant, count_m);
                }
                let record = vec![owner, second, count_s, minute, count_m];
                Update::Write(record, Refill::Granted(granted))
            });
            match result {
                Ok(Refill::Taken) => continue,
                Ok(other) => {
                    refill = Some(other);
                    break;
                }
                // Contention this heavy means the limit is being hammered: refuse, never
                // overshoot.
                Err(CounterError::Contended) => {
                    let window = if need_second {
                        RateWindow::Second
                    } else {
                        RateWindow::Minute
                    };
                    refill = Some(Refill::Limited(window));
                    break;
                }
                Err(CounterError::Host(_)) => return RateOutcome::Untracked,
            }
        }
        match refill {
            None | Some(Refill::Taken) => return RateOutcome::Untracked,
            Some(Refill::Limited(window)) => {
                let limit = match window {
                    RateWindow::Second => rates.per_second,
                    RateWindow::Minute => rates.per_minute,
                };
                return RateOutcome::Limited(RateStatus {
                    window,
                    limit: limit.unwrap_or(0),
                    remaining: 0,
                    reset_s: reset_s(window, now_ms),
                });
            }
            Some(Refill::Granted(granted)) => lease = granted,
        }
    }
    let mut status: Option<RateStatus> = None;
    if let Some(limit) = rates.per_second {
        lease.second_left -= 1;
        status = Some(RateStatus {
            window: RateWindow::Second,
            limit,
            remaining: limit.saturating_sub(lease.second_shared) + lease.second_left,
            reset_s: reset_s(RateWindow::Second, now_ms),
        });
    }
    if let Some(limit) = rates.per_minute {
        lease.minute_left -= 1;
        let view = RateStatus {
            window: RateWindow::Minute,
            limit,
            remaining: limit.saturating_sub(lease.minute_shared) + lease.minute_left,
            reset_s: reset_s(RateWindow::Minute, now_ms),
        };
        if status.is_none_or(|s| view.remaining < s.remaining) {
            status = Some(view);
        }
    }
    leases.insert(owner, lease);
    match status {
        Some(status) => RateOutcome::Admitted(status),
        None => RateOutcome::Unlimited,
    }
}

/// Gives back one request admitted by `admit` (it was refused for another reason): the unit
/// returns to this worker's lease, no host call.
pub fn refund(workspace: &str, now_ms: u64, leases: &mut RateLeases) {
    if let Some(lease) = leases.get_mut(&owner_of(workspace)) {
        if lease.second == now_ms / 1000 {
            lease.second_left += 1;
        }
        if lease.minute == now_ms / 60_000 {
            lease.minute_left += 1;
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
        let mut l = new_leases();
        let t = 1_000_000;
        let results: Vec<bool> = (0..8)
            .map(|i| admitted(admit(&host, 64, "ws", RATES, t + i, &mut l)))
            .collect();
        assert_eq!(results, [true, true, true, true, true, false, false, false]);
        match admit(&host, 64, "ws", RATES, t + 10, &mut l) {
            RateOutcome::Limited(s) => {
                assert_eq!(s.window, RateWindow::Second);
                assert_eq!(s.reset_s, 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(admitted(admit(&host, 64, "ws", RATES, t + 1_000, &mut l)));
    }

    #[test]
    fn per_minute_limit_spans_seconds() {
        let host = FakeHost::default();
        let mut l = new_leases();
        let t = 60_000 * 100;
        let mut n = 0;
        for s in 0..10 {
            for _ in 0..5 {
                if admitted(admit(&host, 64, "ws", RATES, t + s * 1000, &mut l)) {
                    n += 1;
                }
            }
        }
        assert_eq!(n, 12);
        match admit(&host, 64, "ws", RATES, t + 30_000, &mut l) {
            RateOutcome::Limited(s) => {
                assert_eq!(s.window, RateWindow::Minute);
                assert_eq!(s.reset_s, 30);
            }
            other => panic!("{other:?}"),
        }
        assert!(admitted(admit(&host, 64, "ws", RATES, t + 60_000, &mut l)));
    }

    #[test]
    fn workspaces_are_counted_apart_and_reuse_slots() {
        let host = FakeHost::default();
        let mut l = new_leases();
        for i in 0..5 {
            assert!(admitted(admit(&host, 1, "a", RATES, 1_000 + i, &mut l)));
        }
        // One slot, held by an active workspace: another one is not tracked.
        assert_eq!(
            admit(&host, 1, "b", RATES, 1_010, &mut l),
            RateOutcome::Untracked
        );
        // Two minutes later the slot is free again.
        assert!(admitted(admit(&host, 1, "b", RATES, 200_000, &mut l)));
        assert_eq!(
            host.data.borrow().len(),
            1,
            "no key per window or per workspace"
        );
    }

    #[test]
    fn remaining_reports_the_tightest_window() {
        let host = FakeHost::default();
        let mut l = new_leases();
        match admit(&host, 8, "ws", RATES, 5_000, &mut l) {
            RateOutcome::Admitted(s) => {
                assert_eq!((s.window, s.remaining, s.limit), (RateWindow::Second, 4, 5))
            }
            other => panic!("{other:?}"),
        }
        let loose = PlanRates {
            per_second: Some(100),
            per_minute: Some(3),
        };
        match admit(&host, 8, "other", loose, 5_000, &mut l) {
            RateOutcome::Admitted(s) => {
                assert_eq!((s.window, s.remaining), (RateWindow::Minute, 2))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            admit(&host, 8, "x", PlanRates::default(), 0, &mut l),
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
        let mut l = new_leases();
        for i in 0..5 {
            admit(&host, 8, "ws", RATES, 1_000 + i, &mut l);
        }
        assert!(!admitted(admit(&host, 8, "ws", RATES, 1_005, &mut l)));
        refund("ws", 1_006, &mut l);
        assert!(admitted(admit(&host, 8, "ws", RATES, 1_007, &mut l)));
    }

    #[test]
    fn two_workers_never_exceed_the_limit_and_lose_little() {
        let host = FakeHost::default();
        let (mut a, mut b) = (new_leases(), new_leases());
        let rates = PlanRates {
            per_second: Some(10_000),
            per_minute: None,
        };
        let t = 7_000;
        let mut admitted_count = 0;
        for i in 0..30_000u64 {
            let leases = if i % 3 == 0 { &mut a } else { &mut b };
            if admitted(admit(&host, 8, "ws", rates, t + i % 1000, leases)) {
                admitted_count += 1;
            }
        }
        assert!(admitted_count <= 10_000, "{admitted_count}");
        assert!(admitted_count >= 9_900, "{admitted_count}");
    }

    #[test]
    fn large_limits_take_few_shared_writes() {
        let host = FakeHost::default();
        let mut l = new_leases();
        let rates = PlanRates {
            per_second: Some(1_000_000),
            per_minute: Some(60_000_000),
        };
        for i in 0..10_000 {
            assert!(admitted(admit(
                &host,
                8,
                "ws",
                rates,
                9_000 + i % 900,
                &mut l
            )));
        }
        assert!(host.gets.get() < 10, "{} shared reads", host.gets.get());
    }
}
