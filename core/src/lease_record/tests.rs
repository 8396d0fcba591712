//! The lease record against `FakeHost`: takes up to the lease and its deadline, one claim per
//! renewal, answers installed once, idle keys settled, full records displacing a lease.

use super::*;
use crate::budget::QuotaWindow;
use crate::host::FakeHost;

const H: KeyHash = KeyHash([3; 32]);
const CLAIM: u64 = 3_000;

fn at() -> RecordKey {
    RecordKey::new(Meter::Calls, H, 64)
}

fn grant(host: &FakeHost, id: u64, units: u64, deadline_ms: u64, now: u64) {
    let answer = Answer::Applied {
        settled: vec![],
        grant: Some(Granted {
            id,
            units,
            deadline_ms,
        }),
    };
    install(host, &at(), &answer, now).unwrap();
}

#[test]
fn a_key_with_no_lease_starves_and_claims_once() {
    let host = FakeHost::default();
    let first = take(&host, &at(), 1, 1_000, CLAIM).unwrap();
    assert_eq!(
        first,
        Take::Starved(Renewal {
            settle: vec![],
            want: INITIAL_WANT,
            min: 1,
            claimed: true
        })
    );
    // Another worker meanwhile: starved too, but the claim is taken.
    match take(&host, &at(), 5, 1_010, CLAIM).unwrap() {
        Take::Starved(r) => assert!(!r.claimed && r.min == 5 && r.want >= 5),
        other => panic!("{other:?}"),
    }
    // The claim lapses if its callout never answers.
    match take(&host, &at(), 1, 1_000 + CLAIM, CLAIM).unwrap() {
        Take::Starved(r) => assert!(r.claimed),
        other => panic!("{other:?}"),
    }
}

#[test]
fn units_are_taken_up_to_the_lease_and_never_past_its_deadline() {
    let host = FakeHost::default();
    grant(&host, 7, 3, 10_000, 0);
    let mut taken = 0;
    for t in 0..10 {
        if let Take::Took { units, lease, .. } = take(&host, &at(), 1, t, CLAIM).unwrap() {
            assert_eq!(lease, 7);
            taken += units;
        }
    }
    assert_eq!(taken, 3);
    grant(&host, 8, 5, 10_000, 20);
    assert!(matches!(
        take(&host, &at(), 1, 10_000, CLAIM).unwrap(),
        Take::Starved(_)
    ));
}

#[test]
fn the_low_water_mark_claims_one_renewal_with_the_ended_leases() {
    let host = FakeHost::default();
    grant(&host, 1, 2, 5_000, 0);
    grant(&host, 2, 8, 50_000, 0);
    let mut renewals = Vec::new();
    for t in 1..=8 {
        if let Take::Took { renew: Some(r), .. } = take(&host, &at(), 1, t, CLAIM).unwrap() {
            renewals.push((t, r));
        }
    }
    // 10 units, a quarter of the newest (8) is 2: the take that leaves 2 claims; the next
    // takes see the claim.
    assert_eq!(renewals.len(), 1, "{renewals:?}");
    let (t, renewal) = &renewals[0];
    assert_eq!(*t, 8);
    assert_eq!(renewal.settle, vec![Settlement { id: 1, spent: 2 }]);
    assert!(renewal.claimed);
}

#[test]
fn a_grant_without_units_quiets_the_record_and_settled_leases_go() {
    let host = FakeHost::default();
    grant(&host, 1, 1, 5_000, 0);
    assert!(matches!(
        take(&host, &at(), 1, 10, CLAIM).unwrap(),
        Take::Took { .. }
    ));
    let answer = Answer::Exhausted {
        settled: vec![1],
        exhausted: Some(Exhausted::Quota(QuotaWindow::Daily)),
        min: 1,
        retry_ms: 1_000,
    };
    install(&host, &at(), &answer, 20).unwrap();
    assert_eq!(
        take(&host, &at(), 1, 500, CLAIM).unwrap(),
        Take::Quiet(Some(Exhausted::Quota(QuotaWindow::Daily)))
    );
    let record = read(&host, &at()).unwrap();
    assert!(record.leases.iter().all(Lease::is_empty));
    assert_eq!(record.claim_until_ms, 0);
    assert!(matches!(
        take(&host, &at(), 1, 1_020, CLAIM).unwrap(),
        Take::Starved(_)
    ));
}

#[test]
fn a_failed_callout_keeps_the_settlements_and_quiets_only_the_starved() {
    let host = FakeHost::default();
    grant(&host, 1, 4, 100, 0);
    grant(&host, 2, 4, 10_000, 0);
    install(&host, &at(), &Answer::Failed { backoff_ms: 1_000 }, 200).unwrap();
    // Units held are still spent during the backoff.
    assert!(matches!(
        take(&host, &at(), 1, 300, CLAIM).unwrap(),
        Take::Took { lease: 2, .. }
    ));
    assert!(read(&host, &at()).unwrap().leases.iter().any(|l| l.id == 1));
    for t in 301..304 {
        take(&host, &at(), 1, t, CLAIM).unwrap();
    }
    assert_eq!(
        take(&host, &at(), 1, 400, CLAIM).unwrap(),
        Take::Quiet(None)
    );
}

#[test]
fn an_idle_key_gives_its_units_back_on_the_tick() {
    let host = FakeHost::default();
    grant(&host, 1, 100, 60_000, 0);
    take(&host, &at(), 1, 10, CLAIM).unwrap();
    assert_eq!(due(&host, &at(), 2_000, 5_000, CLAIM).unwrap(), Due::Held);
    match due(&host, &at(), 5_010, 5_000, CLAIM).unwrap() {
        Due::Settle(r) => {
            assert_eq!(r.settle.len(), 1);
            assert_eq!(r.settle[0].id, 1);
            assert!(r.settle[0].spent >= 1 && r.settle[0].spent < 100);
        }
        other => panic!("{other:?}"),
    }
    // Frozen: nobody takes from it any more, and the claim is held for its settlement.
    match take(&host, &at(), 1, 5_020, CLAIM).unwrap() {
        Take::Starved(r) => assert!(!r.claimed),
        other => panic!("{other:?}"),
    }
    let answer = Answer::Applied {
        settled: vec![1],
        grant: None,
    };
    install(&host, &at(), &answer, 5_030).unwrap();
    assert_eq!(due(&host, &at(), 5_040, 5_000, CLAIM).unwrap(), Due::Gone);
}

#[test]
fn another_keys_record_is_taken_over_and_a_grant_is_installed_once() {
    let host = FakeHost::default();
    let other = RecordKey {
        owner: at().owner ^ 2,
        ..at()
    };
    install(
        &host,
        &other,
        &Answer::Applied {
            settled: vec![],
            grant: Some(Granted {
                id: 9,
                units: 50,
                deadline_ms: 9_000,
            }),
        },
        0,
    )
    .unwrap();
    assert!(matches!(
        take(&host, &at(), 1, 1, CLAIM).unwrap(),
        Take::Starved(_)
    ));
    grant(&host, 4, 10, 9_000, 2);
    grant(&host, 4, 10, 9_000, 3);
    let record = read(&host, &at()).unwrap();
    assert_eq!(record.leases.iter().filter(|l| l.id == 4).count(), 1);
    assert_eq!(due(&host, &other, 10, 5_000, CLAIM).unwrap(), Due::Gone);
}

#[test]
fn a_grant_into_a_full_record_displaces_the_lease_with_least_left_for_settlement() {
    let host = FakeHost::default();
    for (id, units) in [(1, 5), (2, 9), (3, 7), (4, 8)] {
        grant(&host, id, units, 60_000, 0);
    }
    for t in 0..5 {
        take(&host, &at(), 1, t, CLAIM).unwrap();
    }
    let answer = Answer::Applied {
        settled: vec![],
        grant: Some(Granted {
            id: 5,
            units: 3,
            deadline_ms: 60_000,
        }),
    };
    let displaced = install(&host, &at(), &answer, 10).unwrap();
    // Lease 1 (5 units, taken first: none left) goes, with what was taken of it.
    assert_eq!(displaced, vec![Settlement { id: 1, spent: 5 }]);
    let record = read(&host, &at()).unwrap();
    assert!(record.leases.iter().any(|l| l.id == 5));
    assert!(!record.leases.iter().any(|l| l.id == 1));
}

#[test]
fn chunks_grow_with_the_lease_and_want_follows_the_rate() {
    let host = FakeHost::default();
    grant(&host, 1, 100_000, 60_000, 0);
    match take(&host, &at(), 1, 1, CLAIM).unwrap() {
        Take::Took { units, .. } => assert_eq!(units, 500),
        other => panic!("{other:?}"),
    }
    let record = read(&host, &at()).unwrap();
    // 500 units in the first second: 5,000 for 10 s of this rate.
    assert_eq!(record.want(1, 1_000), 5_000);
    assert_eq!(record.want(7, 1_000), 5_000);
}
