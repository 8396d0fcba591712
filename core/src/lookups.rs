//! Coalesces concurrent cache misses: one control-plane callout per key per worker, however
//! many requests wait for it.
//!
//! The SDK delivers a callout's answer to the request context that dispatched it, and drops it
//! if that context has ended (client gone; the callout itself is made on the root's behalf so
//! that Envoy does not cancel it, see `Worker::dispatch`). Such a lookup becomes orphaned; the
//! worker's root context dispatches it again on its next tick if anyone still waits.

use crate::action::Hide;
use crate::api_key::KeyHash;
use crate::decision::RequestFacts;
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub context_id: u32,
    pub request: RequestFacts,
    /// Where the key was, hidden before the request goes upstream (`hide_key`).
    pub hide: Option<Hide<'static>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Not dispatched yet, or its dispatcher is gone.
    Nobody,
    Context(u32),
    Root,
}

#[derive(Debug)]
struct InFlight {
    owner: Owner,
    token: Option<u32>,
    waiters: Vec<Waiter>,
    /// The first leases a key lookup asks for (docs/protocol.md, "key lookup").
    lease_ask: Option<LeaseAsk>,
}

/// The first leases a key lookup asks for with the key: their lease id base (kept when the
/// lookup is sent again, so a retry asks for the same leases) and when it was last sent (their
/// deadlines count from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseAsk {
    pub base: u64,
    pub sent_ms: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// First request for this key: dispatch the callout.
    Dispatch,
    /// A callout is already on its way: pause and wait.
    Wait,
    /// Too many keys in flight on this worker (bounded memory): treat as unavailable.
    Full,
}

/// Callouts in flight by what they are for (`K`: a key's hash for lookups; a key's hash and a
/// meter for lease callouts), each with the requests waiting for it.
pub struct Lookups<K = KeyHash> {
    by_hash: HashMap<K, InFlight>,
    by_token: HashMap<u32, K>,
    max_in_flight: usize,
    /// Keep a callout nobody waits for until it is answered (lease callouts: their answer must
    /// reach the lease record even when the request that sent them has gone).
    keep_unwaited: bool,
}

impl<K: Copy + Eq + Hash> Lookups<K> {
    pub fn new(max_in_flight: usize) -> Lookups<K> {
        Lookups {
            by_hash: HashMap::new(),
            by_token: HashMap::new(),
            max_in_flight,
            keep_unwaited: false,
        }
    }

    /// Callouts that are sent again (by the root) after their sender went away, even when no
    /// request waits for them.
    pub fn keeping_unwaited(max_in_flight: usize) -> Lookups<K> {
        Lookups {
            keep_unwaited: true,
            ..Lookups::new(max_in_flight)
        }
    }

    pub fn join(&mut self, hash: K, waiter: Waiter) -> Join {
        if let Some(in_flight) = self.by_hash.get_mut(&hash) {
            in_flight.waiters.push(waiter);
            return Join::Wait;
        }
        if self.by_hash.len() >= self.max_in_flight {
            return Join::Full;
        }
        self.by_hash.insert(
            hash,
            InFlight {
                owner: Owner::Nobody,
                token: None,
                waiters: vec![waiter],
                lease_ask: None,
            },
        );
        Join::Dispatch
    }

    /// Starts a refresh nobody waits for (refresh-ahead from the root context).
    pub fn start_background(&mut self, hash: K) -> bool {
        if self.by_hash.contains_key(&hash) || self.by_hash.len() >= self.max_in_flight {
            return false;
        }
        self.by_hash.insert(
            hash,
            InFlight {
                owner: Owner::Nobody,
                token: None,
                waiters: Vec::new(),
                lease_ask: None,
            },
        );
        true
    }

    pub fn dispatched(&mut self, hash: K, owner: Owner, token: u32) {
        if let Some(in_flight) = self.by_hash.get_mut(&hash) {
            in_flight.owner = owner;
            in_flight.token = Some(token);
            self.by_token.insert(token, hash);
        }
    }

    /// The callout could not even be dispatched: everyone waiting gets the failure now.
    pub fn abandon(&mut self, hash: K) -> Vec<Waiter> {
        self.by_hash
            .remove(&hash)
            .map(|f| {
                if let Some(token) = f.token {
                    self.by_token.remove(&token);
                }
                f.waiters
            })
            .unwrap_or_default()
    }

    /// The answer arrived: who was waiting for it.
    pub fn complete(&mut self, token: u32) -> Option<(K, Vec<Waiter>)> {
        self.complete_asking(token)
            .map(|(hash, waiters, _)| (hash, waiters))
    }

    /// The answer arrived: who was waiting for it, and the leases the callout asked for.
    pub fn complete_asking(&mut self, token: u32) -> Option<(K, Vec<Waiter>, Option<LeaseAsk>)> {
        let hash = self.by_token.remove(&token)?;
        let in_flight = self.by_hash.remove(&hash)?;
        Some((hash, in_flight.waiters, in_flight.lease_ask))
    }

    /// The leases the callout for `hash` asks for (`None`: none, or it is not in flight).
    pub fn lease_ask(&self, hash: K) -> Option<LeaseAsk> {
        self.by_hash.get(&hash).and_then(|f| f.lease_ask)
    }

    /// The callout for `hash` asks for leases `ask` (it keeps them when it is sent again).
    pub fn set_lease_ask(&mut self, hash: K, ask: LeaseAsk) {
        if let Some(in_flight) = self.by_hash.get_mut(&hash) {
            in_flight.lease_ask = Some(ask);
        }
    }

    /// A request context ended (answered, or its client went away).
    pub fn leave(&mut self, context_id: u32) {
        let mut emptied = Vec::new();
        for (hash, in_flight) in self.by_hash.iter_mut() {
            in_flight.waiters.retain(|w| w.context_id != context_id);
            if in_flight.owner == Owner::Context(context_id) {
                // The SDK drops the answer of an ended context: nobody will hear it.
                in_flight.owner = Owner::Nobody;
                if let Some(token) = in_flight.token.take() {
                    self.by_token.remove(&token);
                }
                if in_flight.waiters.is_empty() && !self.keep_unwaited {
                    emptied.push(*hash);
                }
            }
        }
        for hash in emptied {
            self.by_hash.remove(&hash);
        }
    }

    /// Lookups that lost their dispatcher but still have waiters; drops those with none.
    pub fn orphans(&mut self) -> Vec<K> {
        let keep = self.keep_unwaited;
        self.by_hash.retain(|_, f| {
            keep || f.owner != Owner::Nobody || f.token.is_some() || !f.waiters.is_empty()
        });
        self.by_hash
            .iter()
            .filter(|(_, f)| f.owner == Owner::Nobody && f.token.is_none())
            .map(|(hash, _)| *hash)
            .collect()
    }

    pub fn in_flight(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_in_flight(&self, hash: K) -> bool {
        self.by_hash.contains_key(&hash)
    }

    /// Started (or orphaned) but not sent: whoever comes next sends it.
    pub fn is_unsent(&self, hash: K) -> bool {
        self.by_hash
            .get(&hash)
            .is_some_and(|f| f.owner == Owner::Nobody && f.token.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(context_id: u32) -> Waiter {
        Waiter {
            context_id,
            request: RequestFacts {
                method: "GET".into(),
                path: "/".into(),
                client_ip: String::new(),
            },
            hide: None,
        }
    }

    const H: KeyHash = KeyHash([1; 32]);

    #[test]
    fn one_dispatch_for_many_waiters() {
        let mut lookups = Lookups::new(10);
        assert_eq!(lookups.join(H, waiter(1)), Join::Dispatch);
        lookups.dispatched(H, Owner::Context(1), 77);
        for id in 2..200 {
            assert_eq!(lookups.join(H, waiter(id)), Join::Wait);
        }
        let (hash, waiters) = lookups.complete(77).unwrap();
        assert_eq!(hash, H);
        assert_eq!(waiters.len(), 199);
        assert_eq!(lookups.in_flight(), 0);
        assert!(lookups.complete(77).is_none());
    }

    #[test]
    fn bounded_number_of_keys_in_flight() {
        let mut lookups = Lookups::new(2);
        assert_eq!(lookups.join(KeyHash([1; 32]), waiter(1)), Join::Dispatch);
        assert_eq!(lookups.join(KeyHash([2; 32]), waiter(2)), Join::Dispatch);
        assert_eq!(lookups.join(KeyHash([3; 32]), waiter(3)), Join::Full);
        assert_eq!(lookups.join(KeyHash([1; 32]), waiter(4)), Join::Wait);
    }

    #[test]
    fn dispatcher_leaving_orphans_the_lookup_for_the_root() {
        let mut lookups = Lookups::new(10);
        lookups.join(H, waiter(1));
        lookups.dispatched(H, Owner::Context(1), 5);
        lookups.join(H, waiter(2));
        lookups.leave(1);
        assert_eq!(lookups.orphans(), vec![H]);
        // The cancelled callout's token no longer resolves.
        assert!(lookups.complete(5).is_none());
        lookups.dispatched(H, Owner::Root, 6);
        assert!(lookups.orphans().is_empty());
        let (_, waiters) = lookups.complete(6).unwrap();
        assert_eq!(waiters, vec![waiter(2)]);
    }

    #[test]
    fn orphan_without_waiters_is_dropped() {
        let mut lookups = Lookups::new(10);
        lookups.join(H, waiter(1));
        lookups.dispatched(H, Owner::Context(1), 5);
        lookups.leave(1);
        assert!(lookups.orphans().is_empty());
        assert_eq!(lookups.in_flight(), 0);
    }

    #[test]
    fn abandon_returns_everyone() {
        let mut lookups = Lookups::new(10);
        lookups.join(H, waiter(1));
        lookups.join(H, waiter(2));
        assert_eq!(lookups.abandon(H).len(), 2);
        assert_eq!(lookups.in_flight(), 0);
    }

    #[test]
    fn background_refresh_does_not_duplicate() {
        let mut lookups = Lookups::new(10);
        assert!(lookups.start_background(H));
        assert!(!lookups.start_background(H));
        assert_eq!(lookups.join(H, waiter(3)), Join::Wait);
    }
}
