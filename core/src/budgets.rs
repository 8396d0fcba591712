//! How a request spends its key's budgets: one unit of the `calls` meter for the quotas, the
//! route's credits of the `credits` meter for the credit budget, each from a lease the control
//! plane granted this Envoy (docs/protocol.md, "Budget leases"). A worker takes units from the
//! Envoy-wide lease record (`lease_record.rs`) in chunks and spends its chunk without a host
//! call; a request that finds no units waits for a lease (the worker sends the callout).

use crate::api_key::KeyHash;
use crate::budget::{Exhausted, Meter};
use crate::chunk::ChunkBook;
use crate::fast_hash::FastMap;
use crate::host::SharedStore;
use crate::key_state::KeyState;
use crate::lease_record::{self, Due, RecordKey, Renewal, Take};

/// A key unused this long on this Envoy gives its leases back.
pub const IDLE_MS: u64 = 5_000;
/// How often the root tick looks at a record this worker spent from.
const LOOK_EVERY_MS: u64 = 1_000;
/// Keys per worker whose chunks (and whose records, for the tick) a worker keeps.
const MAX_KEYS: usize = 8_192;

/// Units of one lease a worker holds: spendable until `deadline_ms`.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    /// The lease its units were taken from.
    lease: u64,
    left: u64,
    deadline_ms: u64,
}

/// What spending one meter for a request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spend {
    /// No budget on this meter, or the request costs nothing: nothing spent.
    Unlimited,
    /// Spent; `renew`: this worker claimed the record's renewal (send it).
    Spent { renew: Option<Renewal> },
    /// No units: ask for a lease with this renewal and wait for it.
    Starved(Renewal),
    /// The budget is full, or no lease can be had right now: deny.
    Denied(Exhausted),
    /// The lease record could not be updated (host failure, contention): deny, never above.
    Failed(Exhausted),
}

/// This worker's chunks of its keys' leases.
pub struct Budgets {
    slots: usize,
    claim_ms: u64,
    chunks: ChunkBook<(KeyHash, Meter), Chunk>,
    /// Records this worker took from, and when the tick looks at each again.
    held: FastMap<(KeyHash, Meter), u64>,
}

impl Budgets {
    /// `slots` records per meter in shared data; a claim lapses after `claim_ms`.
    pub fn new(slots: usize, claim_ms: u64) -> Budgets {
        Budgets {
            slots,
            claim_ms,
            chunks: ChunkBook::new(MAX_KEYS),
            held: FastMap::default(),
        }
    }

    pub fn record(&self, hash: KeyHash, meter: Meter) -> RecordKey {
        RecordKey::new(meter, hash, self.slots)
    }

    /// Spends `cost` units of `meter` for a request of key `hash` (state `state`).
    pub fn spend(
        &mut self,
        store: &dyn SharedStore,
        hash: KeyHash,
        meter: Meter,
        state: &KeyState,
        cost: u64,
        now_ms: u64,
    ) -> Spend {
        if cost == 0 || !meter.limits(state) {
            return Spend::Unlimited;
        }
        if let Some(chunk) = self.chunks.get_mut(&(hash, meter)) {
            if now_ms < chunk.deadline_ms && chunk.left >= cost {
                chunk.left -= cost;
                return Spend::Spent { renew: None };
            }
        }
        self.hold(hash, meter, now_ms);
        let at = self.record(hash, meter);
        match lease_record::take(store, &at, cost, now_ms, self.claim_ms) {
            Ok(Take::Took {
                lease,
                units,
                deadline_ms,
                renew,
            }) => {
                // The old chunk's units, if any, stay counted as spent: never over.
                let left = units - cost.min(units);
                self.chunks.insert(
                    (hash, meter),
                    Chunk {
                        lease,
                        left,
                        deadline_ms,
                    },
                );
                Spend::Spent { renew }
            }
            Ok(Take::Starved(renewal)) => Spend::Starved(renewal),
            Ok(Take::Quiet(exhausted)) => {
                Spend::Denied(exhausted.unwrap_or_else(|| Exhausted::of(meter, state)))
            }
            Err(e) => {
                log::warn!("lease record of key {} not updated: {e:?}", hash.short());
                Spend::Failed(Exhausted::of(meter, state))
            }
        }
    }

    /// Gives back units a request spent (a later limit refused it). To this worker's chunk while
    /// it holds more units of the lease (they are spent with them, or lost with them: the
    /// chunk's bounded undershoot); else to the lease in the shared record, so a chunk of one
    /// unit (small budgets) loses nothing and the whole budget stays spendable. The lease given
    /// back to, if any: a settlement of it taken with the spend is no longer true.
    pub fn refund(
        &mut self,
        store: &dyn SharedStore,
        hash: KeyHash,
        meter: Meter,
        units: u64,
    ) -> Option<u64> {
        let chunk = self.chunks.get_mut(&(hash, meter))?;
        if chunk.left > 0 {
            chunk.left += units;
            return None;
        }
        let lease = chunk.lease;
        match lease_record::give_back(store, &self.record(hash, meter), lease, units) {
            Ok(()) => Some(lease),
            Err(e) => {
                // The units stay counted as taken: never over.
                log::warn!("lease record of key {} not refunded: {e:?}", hash.short());
                None
            }
        }
    }

    /// Looks at the key's record on the root's ticks from now on (until it holds no lease).
    pub fn hold(&mut self, hash: KeyHash, meter: Meter, now_ms: u64) {
        if self.held.len() >= MAX_KEYS && !self.held.contains_key(&(hash, meter)) {
            // Forgotten records are settled by another worker's tick or, at worst, charged in
            // full at their expiry by the control plane: never over.
            self.held.clear();
        }
        self.held
            .entry((hash, meter))
            .or_insert(now_ms + LOOK_EVERY_MS);
    }

    /// Root tick: the records this worker spent from that are due for a look; each that has
    /// leases to settle (ended, or frozen because the key went idle) comes back with the
    /// settlements, claimed by this worker.
    pub fn due(&mut self, store: &dyn SharedStore, now_ms: u64) -> Vec<(KeyHash, Meter, Renewal)> {
        let mut settle = Vec::new();
        let mut gone = Vec::new();
        let looks: Vec<(KeyHash, Meter)> = self
            .held
            .iter()
            .filter(|(_, at)| **at <= now_ms)
            .map(|(k, _)| *k)
            .collect();
        for (hash, meter) in looks {
            let at = self.record(hash, meter);
            match lease_record::due(store, &at, now_ms, IDLE_MS, self.claim_ms) {
                Ok(Due::Settle(renewal)) => settle.push((hash, meter, renewal)),
                Ok(Due::Held) | Err(_) => {}
                Ok(Due::Gone) => gone.push((hash, meter)),
            }
            self.held.insert((hash, meter), now_ms + LOOK_EVERY_MS);
        }
        for key in gone {
            self.held.remove(&key);
            self.chunks.remove(&key);
        }
        settle
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::QuotaWindow;
    use crate::host::FakeHost;
    use crate::key_state::KeyStateWire;
    use crate::lease_record::{install, Answer, Granted};

    const H: KeyHash = KeyHash([5; 32]);

    fn daily(n: u64) -> KeyState {
        let wire: KeyStateWire = serde_json::from_str(&format!(
            r#"{{"key_id":"key_1","workspace_id":"ws_1","active":true,"quotas":{{"daily":{n}}}}}"#
        ))
        .unwrap();
        KeyState::from_wire(wire).unwrap()
    }

    fn grant(host: &FakeHost, budgets: &Budgets, id: u64, units: u64, deadline_ms: u64) {
        let answer = Answer::Applied {
            settled: vec![],
            grant: Some(Granted {
                id,
                units,
                deadline_ms,
            }),
        };
        install(host, &budgets.record(H, Meter::Calls), &answer, 0).unwrap();
    }

    #[test]
    fn two_workers_spend_exactly_the_leased_units() {
        let host = FakeHost::default();
        let s = daily(1_000_000);
        let (mut a, mut b) = (Budgets::new(64, 3_000), Budgets::new(64, 3_000));
        grant(&host, &a, 1, 1_000, 60_000);
        let spent = (0..3_000u64)
            .filter(|i| {
                let w = if i % 2 == 0 { &mut a } else { &mut b };
                matches!(
                    w.spend(&host, H, Meter::Calls, &s, 1, 10 + i),
                    Spend::Spent { .. }
                )
            })
            .count();
        assert!(spent <= 1_000, "{spent}");
        // Chunks of a 1,000-unit lease are 5 units: at most one partial chunk per worker.
        assert!(spent >= 1_000 - 2 * 5, "{spent}");
    }

    #[test]
    fn a_key_without_budget_costs_nothing_and_a_refund_into_a_chunk_needs_no_host_call() {
        let host = FakeHost::default();
        let mut w = Budgets::new(64, 3_000);
        let s = daily(10_000);
        assert_eq!(
            w.spend(&host, H, Meter::Credits, &s, 5, 1),
            Spend::Unlimited
        );
        assert!(host.data.borrow().is_empty());
        // A 2,000-unit lease is taken 10 units at a time: the refund joins the other nine.
        grant(&host, &w, 1, 2_000, 60_000);
        assert!(matches!(
            w.spend(&host, H, Meter::Calls, &s, 1, 2),
            Spend::Spent { .. }
        ));
        let gets = host.gets.get();
        w.refund(&host, H, Meter::Calls, 1);
        for now in 3..13 {
            assert!(matches!(
                w.spend(&host, H, Meter::Calls, &s, 1, now),
                Spend::Spent { .. }
            ));
        }
        assert_eq!(host.gets.get(), gets, "ten spent from the chunk");
    }

    #[test]
    fn a_refund_of_a_one_unit_chunk_goes_back_to_the_lease_so_nothing_is_lost() {
        let host = FakeHost::default();
        let mut w = Budgets::new(64, 3_000);
        let mut other = Budgets::new(64, 3_000);
        let s = daily(3);
        grant(&host, &w, 1, 3, 60_000);
        assert!(matches!(
            w.spend(&host, H, Meter::Calls, &s, 1, 2),
            Spend::Spent { .. }
        ));
        w.refund(&host, H, Meter::Calls, 1);
        // All three units are still there, for any worker.
        for now in 3..6 {
            assert!(matches!(
                other.spend(&host, H, Meter::Calls, &s, 1, now),
                Spend::Spent { .. }
            ));
        }
        assert!(!matches!(
            other.spend(&host, H, Meter::Calls, &s, 1, 6),
            Spend::Spent { .. }
        ));
    }

    #[test]
    fn a_quiet_record_denies_with_the_quota_it_names_or_the_keys_own() {
        let host = FakeHost::default();
        let mut w = Budgets::new(64, 3_000);
        let s = daily(10);
        let at = w.record(H, Meter::Calls);
        install(&host, &at, &Answer::Failed { backoff_ms: 1_000 }, 0).unwrap();
        assert_eq!(
            w.spend(&host, H, Meter::Calls, &s, 1, 10),
            Spend::Denied(Exhausted::Quota(QuotaWindow::Daily))
        );
        let full = Answer::Exhausted {
            settled: vec![],
            exhausted: Some(Exhausted::Quota(QuotaWindow::Total)),
            min: 1,
            retry_ms: 1_000,
        };
        install(&host, &at, &full, 2_000).unwrap();
        assert_eq!(
            w.spend(&host, H, Meter::Calls, &s, 1, 2_010),
            Spend::Denied(Exhausted::Quota(QuotaWindow::Total))
        );
    }

    #[test]
    fn the_tick_settles_an_idle_keys_lease_once() {
        let host = FakeHost::default();
        let s = daily(100);
        let (mut a, mut b) = (Budgets::new(64, 3_000), Budgets::new(64, 3_000));
        grant(&host, &a, 1, 50, 60_000);
        a.spend(&host, H, Meter::Calls, &s, 1, 10);
        b.spend(&host, H, Meter::Calls, &s, 1, 20);
        assert!(a.due(&host, 2_000).is_empty());
        let first = a.due(&host, 6_000);
        let second = b.due(&host, 6_000);
        assert_eq!(first.len() + second.len(), 1, "{first:?} {second:?}");
        let (_, _, renewal) = first.into_iter().chain(second).next().unwrap();
        assert_eq!(renewal.settle[0].id, 1);
        assert_eq!(renewal.settle[0].spent, 2);
    }
}
