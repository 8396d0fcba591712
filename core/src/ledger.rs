//! The local ledger: what this Envoy admitted per key, in ten-second buckets counted exactly in
//! shared data, so a key's limits see this Envoy's admissions before the control plane does
//! (see docs/protocol.md, "Quota counts per Envoy instance"). Two ledgers use this one
//! mechanism: quotas count requests (`Ledger::Calls`), credit budgets count credits
//! (`Ledger::Credits`).
//!
//! A record is one per key slot: the key's tag, the newest bucket index and `BUCKETS`
//! ten-second buckets (≈ 10.7 minutes). Records delivered later than that after a long
//! control-plane outage are not double-checked: stated in the README.

use crate::api_key::KeyHash;
use crate::counters::{update, CounterError, Update};
use crate::host::SharedStore;
use crate::lease::LeaseBook;

pub const BUCKET_MS: u64 = 10_000;
pub const BUCKETS: usize = 64;
const WORDS: usize = 2 + BUCKETS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ledger {
    Calls,
    Credits,
}

impl Ledger {
    fn table(self) -> &'static str {
        match self {
            Ledger::Calls => "tollgate.quota.",
            Ledger::Credits => "tollgate.credits.",
        }
    }
}

fn record_key(ledger: Ledger, hash: KeyHash, slots: usize) -> String {
    format!("{}{}", ledger.table(), hash.slot(slots))
}

fn tag(hash: KeyHash) -> u64 {
    u64::from_le_bytes([
        hash.0[8], hash.0[9], hash.0[10], hash.0[11], hash.0[12], hash.0[13], hash.0[14],
        hash.0[15],
    ]) | 1
}

/// The ledger's buckets moved forward to `bucket` (older buckets cleared).
fn advanced(record: Option<&[u64]>, owner: u64, bucket: u64) -> Vec<u64> {
    let mut fresh = vec![0; WORDS];
    fresh[0] = owner;
    fresh[1] = bucket;
    let Some(r) = record.filter(|r| r[0] == owner && r[1] <= bucket) else {
        return fresh;
    };
    let newest = r[1];
    for b in newest.saturating_sub(BUCKETS as u64 - 1)..=newest {
        if b + BUCKETS as u64 > bucket {
            let i = 2 + (b % BUCKETS as u64) as usize;
            fresh[i] = r[i];
        }
    }
    fresh
}

fn admitted_since(record: &[u64], since_ms: u64) -> u64 {
    let newest = record[1];
    let first = (since_ms / BUCKET_MS).max(newest.saturating_sub(BUCKETS as u64 - 1));
    (first..=newest)
        .map(|b| record[2 + (b % BUCKETS as u64) as usize])
        .sum()
}

/// Units of a key this worker holds: granted in the ledger bucket `bucket`, `left` unspent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerLease {
    bucket: u64,
    left: u64,
}

impl LedgerLease {
    /// Spends `units` (at least 1) if the lease holds them and was granted since the split point (a lease
    /// from before it is no longer counted by the ledger's view since the split).
    pub fn spend(&mut self, units: u64, split_ms: u64) -> bool {
        if self.left >= units && self.bucket >= split_ms / BUCKET_MS {
            self.left -= units;
            true
        } else {
            false
        }
    }

    /// The units this lease holds that still count since the split point.
    pub fn held(&self, split_ms: u64) -> u64 {
        if self.bucket >= split_ms / BUCKET_MS {
            self.left
        } else {
            0
        }
    }

    /// Gives back units spent from this lease (their request was refused after all).
    pub fn refund(&mut self, units: u64) {
        self.left += units;
    }
}

pub type LedgerLeases = LeaseBook<KeyHash, LedgerLease>;

pub fn new_leases() -> LedgerLeases {
    LeaseBook::new(8_192)
}

/// Takes units for the key from its ledger record: `grant` sees what this Envoy admitted since
/// `split_ms` and says how many units to take, or why none. The units are counted in `now_ms`'s
/// bucket at once (so the shared count never falls behind what is admitted); the new lease
/// holds them and the old lease's `held` units (already counted), minus `spent`, which the
/// request that asked spends now.
#[allow(clippy::too_many_arguments)]
pub fn take<E>(
    store: &dyn SharedStore,
    ledger: Ledger,
    slots: usize,
    hash: KeyHash,
    split_ms: u64,
    now_ms: u64,
    spent: u64,
    leases: &mut LedgerLeases,
    grant: impl Fn(u64) -> Result<u64, E>,
) -> Result<Result<(), E>, CounterError> {
    let owner = tag(hash);
    let bucket = now_ms / BUCKET_MS;
    let old = leases.get_mut(&hash).copied().unwrap_or_default();
    let held = old.held(split_ms);
    let result = update(store, &record_key(ledger, hash, slots), WORDS, |record| {
        let mut record = advanced(record, owner, bucket);
        match grant(admitted_since(&record, split_ms)) {
            Err(refused) => Update::Keep(Err(refused)),
            Ok(units) => {
                record[2 + (bucket % BUCKETS as u64) as usize] += units;
                Update::Write(record, Ok(units))
            }
        }
    });
    match result {
        Ok(Ok(units)) => {
            let left = (held + units).saturating_sub(spent);
            // Held units keep their older bucket: the lease stops counting as soon as they would.
            let bucket = if held > 0 { old.bucket } else { bucket };
            leases.insert(hash, LedgerLease { bucket, left });
            Ok(Ok(()))
        }
        // A refused request leaves the lease alone: a cheaper one may still fit in it.
        other => other.map(|r| r.map(|_| ())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    const H: KeyHash = KeyHash([7; 32]);

    fn take_units(host: &FakeHost, now_ms: u64, units: u64, leases: &mut LedgerLeases) {
        let granted: Result<Result<(), ()>, _> =
            take(host, Ledger::Calls, 16, H, 0, now_ms, units, leases, |_| {
                Ok(units)
            });
        assert_eq!(granted, Ok(Ok(())));
    }

    #[test]
    fn old_buckets_roll_off_the_ledger() {
        let host = FakeHost::default();
        for i in 0..5 {
            take_units(&host, i * 1000, 1, &mut new_leases());
        }
        let key = record_key(Ledger::Calls, H, 16);
        let record = crate::counters::decode(&host.data.borrow()[&key].0, WORDS).unwrap();
        assert_eq!(admitted_since(&record, 0), 5);
        let moved = advanced(Some(&record), tag(H), BUCKETS as u64 + 5);
        assert_eq!(admitted_since(&moved, 0), 0);
    }

    #[test]
    fn the_two_ledgers_are_apart_and_a_lease_spends_only_after_the_split() {
        let host = FakeHost::default();
        let mut leases = new_leases();
        let seen = std::cell::Cell::new(None);
        let _: Result<Result<(), ()>, _> = take(
            &host,
            Ledger::Credits,
            16,
            H,
            0,
            25_000,
            0,
            &mut leases,
            |local| {
                seen.set(Some(local));
                Ok(10)
            },
        );
        assert_eq!(seen.get(), Some(0));
        assert_eq!(host.data.borrow().len(), 1);
        let _: Result<Result<(), ()>, _> = take(
            &host,
            Ledger::Credits,
            16,
            H,
            20_000,
            31_000,
            0,
            &mut leases,
            |local| {
                seen.set(Some(local));
                Err(())
            },
        );
        assert_eq!(
            seen.get(),
            Some(10),
            "bucket 2 (20 s) counts since the split at 20 s"
        );
        let mut lease = LedgerLease {
            bucket: 2,
            left: 10,
        };
        assert!(lease.spend(5, 20_000));
        assert!(!lease.spend(6, 20_000), "only 5 left");
        assert!(!lease.spend(1, 30_000), "granted before the split point");
        lease.refund(5);
        assert!(lease.spend(10, 0));
    }
}
