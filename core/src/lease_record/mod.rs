//! This Envoy's leases of one key on one meter: the Envoy-wide record in shared data that
//! every worker takes units from (docs/protocol.md, "Budget leases"). A worker takes a chunk
//! of units with one CAS and spends it without a host call (`budgets.rs`); units are counted as
//! taken at once, so what the record says was taken is never less than what was admitted.
//!
//! The record also coordinates the callouts: the worker whose take brings what is left down to
//! the low-water mark **claims** the renewal (one per key per Envoy); every callout carries the
//! settlements of the leases that ended. After a grant with no units (or a failed callout) the
//! record stays **quiet** for a while: a request that finds no units is denied without asking.
//!
//! Layout: `HEADER` words (owner tag, claim and quiet deadlines, the smallest cost the quiet
//! applies to, what is exhausted, the last take), then `SLOTS` leases of `SLOT_WORDS` words. A lease **ends** when its deadline passes,
//! when it is used up, or when it is frozen (deadline 0) because the key went idle; an ended
//! lease stays until its settlement has been answered.

use crate::api_key::KeyHash;
use crate::budget::{Exhausted, Meter};
use crate::chunk::chunk;
use crate::counters::{update, CounterError, Update};
use crate::host::SharedStore;

const OWNER: usize = 0;
const CLAIM_UNTIL: usize = 1;
const QUIET_UNTIL: usize = 2;
const QUIET_MIN: usize = 3;
const EXHAUSTED: usize = 4;
const LAST_TAKE: usize = 5;
const HEADER: usize = 6;
/// Leases one record holds: the one being spent, the next one, and room for ended ones that
/// wait for their settlement and for a worker's own grant while another worker renews.
pub const SLOTS: usize = 4;
const SLOT_WORDS: usize = 5;
pub const WORDS: usize = HEADER + SLOTS * SLOT_WORDS;

/// A lease with no history of the key's rate asks for this many units.
pub const INITIAL_WANT: u64 = 10;
/// A lease is sized for this much of the key's traffic on this Envoy.
pub const TARGET_LEASE_MS: u64 = 10_000;
/// The most units one lease asks for.
const MAX_WANT: u64 = 1_000_000_000;

/// One lease as the record holds it. `id` 0 = empty slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lease {
    pub id: u64,
    pub units: u64,
    pub taken: u64,
    /// This Envoy's clock; 0 = frozen (ended early).
    pub deadline_ms: u64,
    pub granted_ms: u64,
}

impl Lease {
    pub fn is_empty(&self) -> bool {
        self.id == 0
    }

    pub fn left(&self) -> u64 {
        self.units.saturating_sub(self.taken)
    }

    /// Units may still be taken from it.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.is_empty() && now_ms < self.deadline_ms && self.taken < self.units
    }

    /// Nothing more will be taken from it: it waits for its settlement.
    pub fn has_ended(&self, now_ms: u64) -> bool {
        !self.is_empty() && !self.is_live(now_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    pub owner: u64,
    pub claim_until_ms: u64,
    pub quiet_until_ms: u64,
    /// Requests costing less than this may still ask while quiet: the control plane refused
    /// a lease of this many units, not fewer.
    pub quiet_min: u64,
    pub exhausted: Option<Exhausted>,
    pub last_take_ms: u64,
    pub leases: [Lease; SLOTS],
}

impl LeaseRecord {
    fn fresh(owner: u64) -> LeaseRecord {
        LeaseRecord {
            owner,
            ..Default::default()
        }
    }

    /// The record of `owner` in `words`, or a fresh one (absent, unreadable, or another key's:
    /// that key's leases are abandoned, and the control plane charges them at their expiry).
    fn of(words: Option<&[u64]>, owner: u64) -> LeaseRecord {
        match words {
            Some(w) if w.len() == WORDS && w[OWNER] == owner => {
                let mut leases = [Lease::default(); SLOTS];
                for (i, lease) in leases.iter_mut().enumerate() {
                    let s = &w[HEADER + i * SLOT_WORDS..HEADER + (i + 1) * SLOT_WORDS];
                    *lease = Lease {
                        id: s[0],
                        units: s[1],
                        taken: s[2],
                        deadline_ms: s[3],
                        granted_ms: s[4],
                    };
                }
                LeaseRecord {
                    owner,
                    claim_until_ms: w[CLAIM_UNTIL],
                    quiet_until_ms: w[QUIET_UNTIL],
                    quiet_min: w[QUIET_MIN],
                    exhausted: Exhausted::from_code(w[EXHAUSTED]),
                    last_take_ms: w[LAST_TAKE],
                    leases,
                }
            }
            _ => LeaseRecord::fresh(owner),
        }
    }

    fn words(&self) -> Vec<u64> {
        let mut w = vec![0; WORDS];
        w[OWNER] = self.owner;
        w[CLAIM_UNTIL] = self.claim_until_ms;
        w[QUIET_UNTIL] = self.quiet_until_ms;
        w[QUIET_MIN] = self.quiet_min;
        w[EXHAUSTED] = self.exhausted.map_or(0, Exhausted::code);
        w[LAST_TAKE] = self.last_take_ms;
        for (i, l) in self.leases.iter().enumerate() {
            let at = HEADER + i * SLOT_WORDS;
            w[at..at + SLOT_WORDS].copy_from_slice(&[
                l.id,
                l.units,
                l.taken,
                l.deadline_ms,
                l.granted_ms,
            ]);
        }
        w
    }

    /// Units left in live leases.
    fn live_left(&self, now_ms: u64) -> u64 {
        self.leases
            .iter()
            .filter(|l| l.is_live(now_ms))
            .map(Lease::left)
            .sum()
    }

    /// The live lease to spend `cost` from: the one that ends first.
    fn spendable(&self, cost: u64, now_ms: u64) -> Option<usize> {
        (0..SLOTS)
            .filter(|&i| self.leases[i].is_live(now_ms) && self.leases[i].left() >= cost)
            .min_by_key(|&i| self.leases[i].deadline_ms)
    }

    fn ended(&self, now_ms: u64) -> Vec<Settlement> {
        self.leases
            .iter()
            .filter(|l| l.has_ended(now_ms))
            .map(|l| Settlement {
                id: l.id,
                spent: l.taken.min(l.units),
            })
            .collect()
    }

    /// The newest lease, for the key's rate: units taken per ms since it was granted.
    fn want(&self, cost: u64, now_ms: u64) -> u64 {
        let newest = self
            .leases
            .iter()
            .filter(|l| !l.is_empty())
            .max_by_key(|l| l.granted_ms);
        let estimate = match newest {
            None => INITIAL_WANT,
            Some(l) => {
                let elapsed = now_ms.saturating_sub(l.granted_ms).max(1_000);
                l.taken.saturating_mul(TARGET_LEASE_MS) / elapsed
            }
        };
        estimate.max(cost).clamp(1, MAX_WANT)
    }

    /// What is left has reached the low-water mark: a quarter of the newest live lease.
    fn low(&self, now_ms: u64) -> bool {
        let newest = self
            .leases
            .iter()
            .filter(|l| l.is_live(now_ms))
            .map(|l| l.units)
            .max()
            .unwrap_or(0);
        self.live_left(now_ms) <= newest.div_ceil(4)
    }

    fn claim(&mut self, now_ms: u64, claim_ms: u64) -> bool {
        if self.claim_until_ms > now_ms {
            return false;
        }
        self.claim_until_ms = now_ms + claim_ms;
        true
    }
}

/// A lease this Envoy will not spend from again, and the units it took from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    pub id: u64,
    pub spent: u64,
}

/// What a lease callout for the record asks: the settlements of its ended leases (every
/// callout carries them: settling twice is harmless, the control plane ignores a lease it no
/// longer holds) and, unless it only settles, a grant of `want` units, at least `min`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    pub settle: Vec<Settlement>,
    /// 0: settlements only.
    pub want: u64,
    pub min: u64,
    /// This callout holds the record's claim (the answer releases it).
    pub claimed: bool,
}

/// The outcome of a take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// `units` (at least the cost) taken from lease `lease`, spendable until `deadline_ms`;
    /// `renew`: what is left reached the low-water mark and this worker claimed the renewal.
    Took {
        lease: u64,
        units: u64,
        deadline_ms: u64,
        renew: Option<Renewal>,
    },
    /// No live lease holds the cost: ask for a lease (claimed or not) and wait.
    Starved(Renewal),
    /// The control plane said the budget is full (`Some`), or could not be reached (`None`),
    /// a moment ago: deny without asking.
    Quiet(Option<Exhausted>),
}

/// Where a key's record lives and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    pub key: String,
    pub owner: u64,
}

impl RecordKey {
    /// Key `hash`'s record on `meter`, one of `slots` per meter.
    pub fn new(meter: Meter, hash: KeyHash, slots: usize) -> RecordKey {
        let h = hash.0;
        RecordKey {
            key: format!("tollgate.lease.{}.{}", meter.name(), hash.slot(slots)),
            owner: u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]) | 1,
        }
    }
}

/// Takes `cost` units (in a chunk of more when the lease is large) from the record at `at`.
/// `claim_ms`: how long a claim of the renewal holds before another worker may take it over.
pub fn take(
    store: &dyn SharedStore,
    at: &RecordKey,
    cost: u64,
    now_ms: u64,
    claim_ms: u64,
) -> Result<Take, CounterError> {
    update(store, &at.key, WORDS, |words| {
        let mut record = LeaseRecord::of(words, at.owner);
        if let Some(i) = record.spendable(cost, now_ms) {
            let lease = &mut record.leases[i];
            let units = chunk(lease.units, lease.left()).max(cost).min(lease.left());
            lease.taken += units;
            let (id, deadline_ms) = (lease.id, lease.deadline_ms);
            record.last_take_ms = now_ms;
            let renew = (record.quiet_until_ms <= now_ms
                && record.low(now_ms)
                && record.claim(now_ms, claim_ms))
            .then(|| Renewal {
                settle: record.ended(now_ms),
                want: record.want(1, now_ms),
                min: 1,
                claimed: true,
            });
            return Update::Write(
                record.words(),
                Take::Took {
                    lease: id,
                    units,
                    deadline_ms,
                    renew,
                },
            );
        }
        if record.quiet_until_ms > now_ms && cost >= record.quiet_min {
            return Update::Keep(Take::Quiet(record.exhausted));
        }
        let claimed = record.claim(now_ms, claim_ms);
        // Leases too small for this request go back with the callout, so the control plane can
        // grant their units again together with the rest.
        for lease in record.leases.iter_mut().filter(|l| l.is_live(now_ms)) {
            lease.deadline_ms = 0;
        }
        let renewal = Renewal {
            settle: record.ended(now_ms),
            want: record.want(cost, now_ms),
            min: cost,
            claimed,
        };
        Update::Write(record.words(), Take::Starved(renewal))
    })
}

/// Gives `units` taken from lease `lease` back to it: a request spent them, then a later limit
/// refused it. Nothing when the lease is gone (its settlement was answered): those units stay
/// charged, which is conservative.
pub fn give_back(
    store: &dyn SharedStore,
    at: &RecordKey,
    lease: u64,
    units: u64,
) -> Result<(), CounterError> {
    update(store, &at.key, WORDS, |words| {
        let mut record = LeaseRecord::of(words, at.owner);
        match record
            .leases
            .iter_mut()
            .find(|l| !l.is_empty() && l.id == lease && l.taken >= units)
        {
            Some(l) => {
                l.taken -= units;
                Update::Write(record.words(), ())
            }
            None => Update::Keep(()),
        }
    })
}

/// A granted lease as this Envoy holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    pub id: u64,
    pub units: u64,
    /// When the request was sent + its `ttl_ms`: never after the control plane's expiry.
    pub deadline_ms: u64,
}

/// What the control plane answered to a record's callout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The settlements were applied; `grant` is the new lease (if one was asked and had units).
    Applied {
        settled: Vec<u64>,
        grant: Option<Granted>,
    },
    /// The grant of at least `min` units had none: deny requests costing `min` or more until
    /// `retry_ms` from now.
    Exhausted {
        settled: Vec<u64>,
        exhausted: Option<Exhausted>,
        min: u64,
        retry_ms: u64,
    },
    /// No usable answer: the settlements stay to be sent again; requests that find no units
    /// are denied for `backoff_ms`.
    Failed { backoff_ms: u64 },
}

/// Writes a callout's answer into the record and releases the claim. Answers the leases a
/// grant had to displace (every slot was held): they are settled by another callout.
pub fn install(
    store: &dyn SharedStore,
    at: &RecordKey,
    answer: &Answer,
    now_ms: u64,
) -> Result<Vec<Settlement>, CounterError> {
    update(store, &at.key, WORDS, |words| {
        let mut displaced = Vec::new();
        let mut record = LeaseRecord::of(words, at.owner);
        record.claim_until_ms = 0;
        let settled: &[u64] = match answer {
            Answer::Applied { settled, .. } | Answer::Exhausted { settled, .. } => settled,
            Answer::Failed { .. } => &[],
        };
        // The control plane has charged them: never spend from them again.
        for lease in record.leases.iter_mut() {
            if settled.contains(&lease.id) {
                *lease = Lease::default();
            }
        }
        match answer {
            Answer::Applied { grant: Some(g), .. } => {
                record.quiet_until_ms = 0;
                record.exhausted = None;
                let known = record.leases.iter().any(|l| l.id == g.id);
                if !known {
                    let lease = Lease {
                        id: g.id,
                        units: g.units,
                        taken: 0,
                        deadline_ms: g.deadline_ms,
                        granted_ms: now_ms,
                    };
                    // An empty slot, else the lease with the least left, frozen: it goes back
                    // to the caller to be settled (what workers took of it counts as spent).
                    let slot = (0..SLOTS)
                        .find(|&i| record.leases[i].is_empty())
                        .or_else(|| (0..SLOTS).min_by_key(|&i| record.leases[i].left()));
                    if let Some(i) = slot {
                        let old = record.leases[i];
                        if !old.is_empty() {
                            displaced.push(Settlement {
                                id: old.id,
                                spent: old.taken.min(old.units),
                            });
                        }
                        record.leases[i] = lease;
                    }
                }
            }
            Answer::Applied { grant: None, .. } => {}
            Answer::Exhausted {
                exhausted,
                min,
                retry_ms,
                ..
            } => {
                record.quiet_until_ms = now_ms + retry_ms;
                record.quiet_min = (*min).max(1);
                record.exhausted = *exhausted;
            }
            Answer::Failed { backoff_ms } => {
                record.quiet_until_ms = record.quiet_until_ms.max(now_ms + backoff_ms);
                record.quiet_min = 1;
                record.exhausted = None;
            }
        }
        Update::Write(record.words(), displaced)
    })
}

/// The root tick's look at a record this worker spent from: a live lease of a key idle for
/// `idle_ms` is frozen (its unused units go back), and if any lease has ended and nobody holds
/// the claim, this worker claims it and gets the settlements to send. `Due::Gone` once the
/// record holds no lease of this key at all (the worker may forget it).
pub fn due(
    store: &dyn SharedStore,
    at: &RecordKey,
    now_ms: u64,
    idle_ms: u64,
    claim_ms: u64,
) -> Result<Due, CounterError> {
    update(store, &at.key, WORDS, |words| {
        // Absent or another key's: a fresh record, which holds nothing (`Gone`, not written).
        let mut record = LeaseRecord::of(words, at.owner);
        let mut froze = false;
        if record.last_take_ms + idle_ms <= now_ms {
            for lease in record.leases.iter_mut().filter(|l| l.is_live(now_ms)) {
                lease.deadline_ms = 0;
                froze = true;
            }
        }
        let ended = record.ended(now_ms);
        if !ended.is_empty() && record.claim(now_ms, claim_ms) {
            return Update::Write(
                record.words(),
                Due::Settle(Renewal {
                    settle: ended,
                    want: 0,
                    min: 0,
                    claimed: true,
                }),
            );
        }
        let held = record.leases.iter().any(|l| !l.is_empty());
        let due = if held { Due::Held } else { Due::Gone };
        if froze {
            Update::Write(record.words(), due)
        } else {
            Update::Keep(due)
        }
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Send these settlements (this worker holds the claim).
    Settle(Renewal),
    /// Leases still held: look again later.
    Held,
    /// No lease left (or the record is another key's now).
    Gone,
}

/// A key lookup may ask for the record's first lease: it holds no live lease, and it is not
/// quiet (the budget was full, or a callout failed, a moment ago: asking waits for the retry).
pub fn wants_first_lease(store: &dyn SharedStore, at: &RecordKey, now_ms: u64) -> bool {
    read(store, at).is_none_or(|record| {
        record.quiet_until_ms <= now_ms && !record.leases.iter().any(|l| l.is_live(now_ms))
    })
}

/// The record as stored, for tests and diagnostics.
pub fn read(store: &dyn SharedStore, at: &RecordKey) -> Option<LeaseRecord> {
    let (bytes, _) = store.get(&at.key).ok()??;
    let words = crate::counters::decode(&bytes, WORDS)?;
    (words[OWNER] == at.owner).then(|| LeaseRecord::of(Some(&words), at.owner))
}

#[cfg(test)]
mod tests;
