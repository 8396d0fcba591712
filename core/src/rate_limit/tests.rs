//! The rate tables against `FakeHost`: exact windows, slots reused and held, the tightest
//! status, plan and key tables apart.

use super::*;
use crate::host::FakeHost;

const RATES: Rates = Rates {
    per_second: Some(5),
    per_minute: Some(12),
    per_hour: None,
};

/// A plan's admission for `workspace`, as the limiter makes it.
fn admit_ws(
    host: &FakeHost,
    slots: usize,
    workspace: &str,
    rates: Rates,
    now_ms: u64,
    chunks: &mut RateChunks,
) -> RateOutcome {
    let owner = workspace_owner(workspace);
    admit(host, Scope::Plan, slots, owner, rates, now_ms, chunks)
}

fn new_chunks() -> RateChunks {
    super::new_chunks(4_096)
}

fn admitted(outcome: RateOutcome) -> bool {
    matches!(outcome, RateOutcome::Admitted(_))
}

#[test]
fn per_second_limit_is_exact_and_resets_next_second() {
    let host = FakeHost::default();
    let mut l = new_chunks();
    let t = 1_000_000;
    let results: Vec<bool> = (0..8)
        .map(|i| admitted(admit_ws(&host, 64, "ws", RATES, t + i, &mut l)))
        .collect();
    assert_eq!(results, [true, true, true, true, true, false, false, false]);
    match admit_ws(&host, 64, "ws", RATES, t + 10, &mut l) {
        RateOutcome::Limited(s) => {
            assert_eq!(s.window, RateWindow::Second);
            assert_eq!(s.reset_s, 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(admitted(admit_ws(
        &host,
        64,
        "ws",
        RATES,
        t + 1_000,
        &mut l
    )));
}

#[test]
fn per_minute_limit_spans_seconds() {
    let host = FakeHost::default();
    let mut l = new_chunks();
    let t = 60_000 * 100;
    let mut n = 0;
    for s in 0..10 {
        for _ in 0..5 {
            if admitted(admit_ws(&host, 64, "ws", RATES, t + s * 1000, &mut l)) {
                n += 1;
            }
        }
    }
    assert_eq!(n, 12);
    match admit_ws(&host, 64, "ws", RATES, t + 30_000, &mut l) {
        RateOutcome::Limited(s) => {
            assert_eq!(s.window, RateWindow::Minute);
            assert_eq!(s.reset_s, 30);
        }
        other => panic!("{other:?}"),
    }
    assert!(admitted(admit_ws(
        &host,
        64,
        "ws",
        RATES,
        t + 60_000,
        &mut l
    )));
}

#[test]
fn workspaces_are_counted_apart_and_reuse_slots() {
    let host = FakeHost::default();
    let mut l = new_chunks();
    for i in 0..5 {
        assert!(admitted(admit_ws(&host, 1, "a", RATES, 1_000 + i, &mut l)));
    }
    // One slot, held by an active workspace: another one is not tracked.
    assert_eq!(
        admit_ws(&host, 1, "b", RATES, 1_010, &mut l),
        RateOutcome::Untracked
    );
    // Two minutes later the slot is free again.
    assert!(admitted(admit_ws(&host, 1, "b", RATES, 200_000, &mut l)));
    assert_eq!(
        host.data.borrow().len(),
        1,
        "no key per window or per workspace"
    );
}

#[test]
fn remaining_reports_the_tightest_window() {
    let host = FakeHost::default();
    let mut l = new_chunks();
    match admit_ws(&host, 8, "ws", RATES, 5_000, &mut l) {
        RateOutcome::Admitted(s) => {
            assert_eq!((s.window, s.remaining, s.limit), (RateWindow::Second, 4, 5))
        }
        other => panic!("{other:?}"),
    }
    let loose = Rates {
        per_second: Some(100),
        per_minute: Some(3),
        per_hour: None,
    };
    match admit_ws(&host, 8, "other", loose, 5_000, &mut l) {
        RateOutcome::Admitted(s) => {
            assert_eq!((s.window, s.remaining), (RateWindow::Minute, 2))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        admit_ws(&host, 8, "x", Rates::default(), 0, &mut l),
        RateOutcome::Unlimited
    );
}

#[test]
fn instances_share_the_plan() {
    let plan = Rates {
        per_second: Some(100),
        per_minute: Some(1000),
        per_hour: Some(10_000),
    };
    assert_eq!(
        plan.share(3),
        Rates {
            per_second: Some(34),
            per_minute: Some(334),
            per_hour: Some(3_334),
        }
    );
    assert_eq!(plan.share(1), plan);
}

#[test]
fn refund_gives_a_request_back() {
    let host = FakeHost::default();
    let mut l = new_chunks();
    for i in 0..5 {
        admit_ws(&host, 8, "ws", RATES, 1_000 + i, &mut l);
    }
    assert!(!admitted(admit_ws(&host, 8, "ws", RATES, 1_005, &mut l)));
    refund(workspace_owner("ws"), 1_006, &mut l);
    assert!(admitted(admit_ws(&host, 8, "ws", RATES, 1_007, &mut l)));
}

#[test]
fn two_workers_never_exceed_the_limit_and_lose_little() {
    let host = FakeHost::default();
    let (mut a, mut b) = (new_chunks(), new_chunks());
    let rates = Rates {
        per_second: Some(10_000),
        ..Rates::default()
    };
    let t = 7_000;
    let mut admitted_count = 0;
    for i in 0..30_000u64 {
        let chunks = if i % 3 == 0 { &mut a } else { &mut b };
        if admitted(admit_ws(&host, 8, "ws", rates, t + i % 1000, chunks)) {
            admitted_count += 1;
        }
    }
    assert!(admitted_count <= 10_000, "{admitted_count}");
    assert!(admitted_count >= 9_900, "{admitted_count}");
}

#[test]
fn large_limits_take_few_shared_writes() {
    let host = FakeHost::default();
    let mut l = new_chunks();
    let rates = Rates {
        per_second: Some(1_000_000),
        per_minute: Some(60_000_000),
        per_hour: None,
    };
    for i in 0..10_000 {
        assert!(admitted(admit_ws(
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
#[test]
fn per_hour_limit_spans_minutes_and_holds_its_slot_for_the_hour() {
    let host = FakeHost::default();
    let mut l = new_chunks();
    let hourly = Rates {
        per_hour: Some(3),
        ..Rates::default()
    };
    let key = 0xabcd_u64 | 1;
    let t = 3_600_000 * 50;
    let at = |m: u64| t + m * 60_000;
    for m in 0..3 {
        assert!(admitted(admit(
            &host,
            Scope::Key,
            1,
            key,
            hourly,
            at(m),
            &mut l
        )));
    }
    match admit(&host, Scope::Key, 1, key, hourly, at(30), &mut l) {
        RateOutcome::Limited(s) => {
            assert_eq!(
                (s.scope, s.window, s.limit),
                (Scope::Key, RateWindow::Hour, 3)
            );
            assert_eq!(s.reset_s, 30 * 60);
        }
        other => panic!("{other:?}"),
    }
    // Ten minutes after the key's last request, another key cannot take its one slot (the
    // hour's count would be lost), but it can once the hour has passed.
    let other = 0x1234_u64 | 1;
    assert_eq!(
        admit(&host, Scope::Key, 1, other, hourly, at(40), &mut l),
        RateOutcome::Untracked
    );
    assert!(admitted(admit(
        &host,
        Scope::Key,
        1,
        other,
        hourly,
        at(61),
        &mut l
    )));
    // Now the other key holds the slot for its hour.
    assert_eq!(
        admit(&host, Scope::Key, 1, key, hourly, at(63), &mut l),
        RateOutcome::Untracked
    );
}

#[test]
fn plan_and_key_tables_count_apart() {
    let host = FakeHost::default();
    let (mut plan, mut key) = (new_chunks(), new_chunks());
    let one = Rates {
        per_second: Some(1),
        ..Rates::default()
    };
    let owner = 7;
    assert!(admitted(admit(
        &host,
        Scope::Plan,
        8,
        owner,
        one,
        1_000,
        &mut plan
    )));
    assert!(admitted(admit(
        &host,
        Scope::Key,
        8,
        owner,
        one,
        1_000,
        &mut key
    )));
    assert!(!admitted(admit(
        &host,
        Scope::Key,
        8,
        owner,
        one,
        1_001,
        &mut key
    )));
    assert_eq!(host.data.borrow().len(), 2, "one record in each table");
}

#[test]
fn the_tighter_status_is_the_one_with_fewer_left() {
    let status = |scope, remaining| RateStatus {
        scope,
        window: RateWindow::Second,
        limit: 10,
        remaining,
        reset_s: 1,
    };
    let plan = Some(status(Scope::Plan, 4));
    let key = Some(status(Scope::Key, 2));
    assert_eq!(RateStatus::tighter(plan, key), key);
    assert_eq!(RateStatus::tighter(key, plan), key);
    assert_eq!(RateStatus::tighter(plan, Some(status(Scope::Key, 4))), plan);
    assert_eq!(RateStatus::tighter(None, key), key);
}
