//! A worker's lease callouts (docs/protocol.md, "Budget leases"): the renewals its requests'
//! takes claimed (sent by the root's next tick), the callouts of requests that found no units
//! (they wait for it, coalesced per key and meter like lookups), and the root tick's
//! settlements of ended and idle leases.
//!
//! A callout's body is kept until it is answered. One whose sender went away (the SDK drops
//! its answer) is sent again, unchanged, by the root: the control plane answers a live lease id
//! again without reserving more, so a grant is never lost with the request that asked for it.

use crate::action::Action;
use crate::api_key::KeyHash;
use crate::budget::{Exhausted, Meter};
use crate::cache::CacheLookup;
use crate::fast_hash::FastMap;
use crate::host::{Host, HostError};
use crate::key_state::KeyState;
use crate::lease_record::{self, Answer, Renewal, Settlement};
use crate::lease_wire::{
    self, Asked, FAILURE_BACKOFF_MS, LEASES_PATH, LOOKUP_BASE_BITS, LOOKUP_LEASE,
};
use crate::lookups::{Join, Lookups, Owner, Waiter};
use crate::metrics::Counter;
use crate::worker::{Resume, Verdict, Worker};

/// Keys and meters with a lease callout in flight on one worker (bounded memory).
const MAX_IN_FLIGHT: usize = 4_096;
/// Settlements of displaced leases kept per key until a callout carries them.
const MAX_LOOSE: usize = 16;

type LeaseKey = (KeyHash, Meter);

/// What a lease callout carries, kept until it is answered (its body is made from it, the
/// same each time it is sent).
struct LeaseCall {
    key_id: String,
    renewal: Renewal,
    /// Settlements of leases no longer in the record (displaced by a grant), also in
    /// `renewal`: back in `LeaseCalls::loose` if the callout fails.
    loose: Vec<Settlement>,
    grant: Option<Asked>,
    /// When it was last sent: a lease's deadline counts from it.
    sent_ms: u64,
}

impl LeaseCall {
    fn body(&self, instance: &str, meter: Meter) -> String {
        let id = self.grant.map_or(0, |g| g.id);
        lease_wire::request_body(instance, &self.key_id, meter, &self.renewal, id)
    }

    /// Folds a request's renewal into this call before it is sent: every settlement once
    /// (with the most spent), the larger want and the larger minimum.
    fn merge(&mut self, key_id: &str, renewal: &Renewal) {
        add_settlements(&mut self.renewal.settle, &renewal.settle);
        self.renewal.want = self.renewal.want.max(renewal.want);
        self.renewal.min = self.renewal.min.max(renewal.min);
        if !key_id.is_empty() {
            self.key_id = key_id.to_string();
        }
    }
}

/// A callout that only settles.
fn settle_only() -> Renewal {
    Renewal {
        settle: Vec::new(),
        want: 0,
        min: 0,
        claimed: false,
    }
}

/// Adds `more` to `settle`, each lease once, with the most spent seen.
fn add_settlements(settle: &mut Vec<Settlement>, more: &[Settlement]) {
    for s in more {
        match settle.iter_mut().find(|r| r.id == s.id) {
            Some(r) => r.spent = r.spent.max(s.spent),
            None => settle.push(*s),
        }
    }
}

pub struct LeaseCalls {
    pub waits: Lookups<LeaseKey>,
    calls: FastMap<LeaseKey, LeaseCall>,
    /// Settlements of displaced leases waiting for the next callout for their key.
    loose: FastMap<LeaseKey, Vec<Settlement>>,
    nonce: u64,
    issued: u64,
}

impl LeaseCalls {
    pub fn new(nonce: u64) -> LeaseCalls {
        LeaseCalls {
            waits: Lookups::keeping_unwaited(MAX_IN_FLIGHT),
            calls: FastMap::default(),
            loose: FastMap::default(),
            nonce,
            issued: 0,
        }
    }

    /// A lease id no other lease of this Envoy has: this worker's nonce and a count, mixed
    /// (splitmix64), never 0, never with the bit of a lookup's leases (`LOOKUP_LEASE`).
    fn next_id(&mut self) -> u64 {
        loop {
            self.issued += 1;
            let mut z = self
                .nonce
                .wrapping_add(self.issued.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            z &= !LOOKUP_LEASE;
            if z != 0 {
                return z;
            }
        }
    }

    /// A fresh lease id base for a key lookup that asks for the first leases (62 bits: a base
    /// and its meter make one lease id, `lease_wire::lookup_lease_id`).
    pub(crate) fn next_lookup_base(&mut self) -> u64 {
        self.next_id() & LOOKUP_BASE_BITS
    }

    /// The callout for `key` with `renewal`: a new one, or, if one waits unsent, that one with
    /// `renewal` folded in.
    fn prepare(&mut self, key_id: &str, key: LeaseKey, renewal: &Renewal) {
        let loose = self.loose.remove(&key).unwrap_or_default();
        if let Some(call) = self.calls.get_mut(&key) {
            if call.sent_ms == 0 {
                call.merge(key_id, renewal);
                add_settlements(&mut call.renewal.settle, &loose);
                call.loose.extend(loose);
            } else {
                // Sent before and lost with its sender: it goes again unchanged (the control
                // plane may have granted its lease id); this renewal's needs wait for its answer.
                if !loose.is_empty() {
                    self.loose.insert(key, loose);
                }
            }
        } else {
            let mut renewal = renewal.clone();
            add_settlements(&mut renewal.settle, &loose);
            let call = LeaseCall {
                key_id: key_id.to_string(),
                renewal,
                loose,
                grant: None,
                sent_ms: 0,
            };
            self.calls.insert(key, call);
        }
        let next = self.next_id();
        if let Some(call) = self.calls.get_mut(&key) {
            if call.renewal.want > 0 && call.grant.is_none() {
                call.grant = Some(Asked { id: next, min: 1 });
            }
            if let Some(grant) = call.grant.as_mut() {
                grant.min = call.renewal.min.max(1);
            }
        }
    }

    /// Keeps settlements of leases gone from the record for the next callout for `key`.
    fn keep_loose(&mut self, key: LeaseKey, settlements: Vec<Settlement>) {
        if settlements.is_empty() {
            return;
        }
        if self.loose.len() >= MAX_IN_FLIGHT && !self.loose.contains_key(&key) {
            // Never over: the control plane charges these leases in full at their expiry.
            log::warn!(
                "too many lease settlements waiting; {} dropped",
                settlements.len()
            );
            return;
        }
        let kept = self.loose.entry(key).or_default();
        kept.extend(settlements);
        kept.truncate(MAX_LOOSE);
    }
}

impl Worker {
    /// Renewals a request's takes claimed: the root's next tick sends them. One already in
    /// flight for the key answers first (its answer releases the claim; what is left to settle
    /// goes with a later callout).
    pub(crate) fn queue_renewals(
        &self,
        key_id: &str,
        hash: KeyHash,
        renewals: Vec<(Meter, Renewal)>,
    ) {
        for (meter, renewal) in renewals {
            let mut leases = self.leases.borrow_mut();
            if leases.waits.start_background((hash, meter)) {
                leases.prepare(key_id, (hash, meter), &renewal);
            }
        }
    }

    /// A request with no units of `meter` waits for a lease: it joins the callout in flight on
    /// this worker, or sends one (`renewal`) now from its own context.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn wait_for_lease<'a, H: Host>(
        &'a self,
        host: &H,
        ctx: u32,
        state: &KeyState,
        hash: KeyHash,
        meter: Meter,
        renewal: Renewal,
        waiter: Waiter,
        resume: &mut Resume,
    ) -> Action<'a> {
        let key = (hash, meter);
        let facts = waiter.request.clone();
        let no_units = Exhausted::of(meter, state).denial();
        let join = self.leases.borrow_mut().waits.join(key, waiter);
        let send = match join {
            Join::Dispatch => {
                let mut leases = self.leases.borrow_mut();
                leases.prepare(&state.wire.key_id, key, &renewal);
                true
            }
            Join::Wait => {
                let mut leases = self.leases.borrow_mut();
                let unsent = leases.waits.is_unsent(key);
                if unsent {
                    // A renewal queued for the tick: it goes now, with this request's needs.
                    leases.prepare(&state.wire.key_id, key, &renewal);
                }
                unsent
            }
            Join::Full => {
                log::warn!(
                    "[ctx {ctx}] too many lease callouts in flight; key {}",
                    hash.short()
                );
                return self.deny(host, ctx, no_units, &facts);
            }
        };
        if send {
            // Sent for this request, but owned by the context Envoy called the core for (it
            // differs while the answer of another callout is being given to its waiters).
            let owner = self.callout_owner();
            if let Err(waiters) = self.send_lease_call(host, ctx, key, owner) {
                // No lease can be had: this request is denied now, any other waiter too.
                let others = waiters
                    .into_iter()
                    .filter(|w| w.context_id != ctx)
                    .collect();
                let failed = Answer::Failed {
                    backoff_ms: FAILURE_BACKOFF_MS,
                };
                self.settle_answer(host, ctx, key, failed, others, resume);
                return self.deny(host, ctx, no_units, &facts);
            }
        }
        Action::Wait
    }

    /// Sends the prepared callout for `key` for context `ctx`. If it cannot be sent, it is
    /// dropped and its waiters come back (they get no units).
    fn send_lease_call<H: Host>(
        &self,
        host: &H,
        ctx: u32,
        key: LeaseKey,
        owner: Owner,
    ) -> Result<(), Vec<Waiter>> {
        let now = host.now_ms();
        let body = {
            let mut leases = self.leases.borrow_mut();
            match leases.calls.get_mut(&key) {
                Some(call) => {
                    call.sent_ms = now;
                    Some(call.body(&self.instance, key.1))
                }
                None => None,
            }
        };
        let upstream = &self.config.control_plane;
        let sent = match &body {
            Some(body) => host.dispatch(
                ctx,
                &upstream.cluster,
                upstream.post_headers(LEASES_PATH, &self.authorization),
                Some(body.as_bytes()),
                upstream.timeout,
            ),
            None => Err(HostError("no callout prepared")),
        };
        match sent {
            Ok(token) => {
                self.count(Counter::LeaseDispatched);
                self.leases.borrow_mut().waits.dispatched(key, owner, token);
                Ok(())
            }
            Err(e) => {
                self.count(Counter::LeaseFailed);
                log::error!(
                    "[ctx {ctx}] cannot ask the control plane at {upstream} for a lease: {e}"
                );
                let mut leases = self.leases.borrow_mut();
                if let Some(call) = leases.calls.remove(&key) {
                    leases.keep_loose(key, call.loose);
                }
                Err(leases.waits.abandon(key))
            }
        }
    }

    /// The answer to callout `token`, if it is a lease callout of this worker (else false).
    pub(crate) fn on_lease_answer<H: Host>(
        &self,
        host: &H,
        ctx: u32,
        token: u32,
        status: Option<&str>,
        body: Option<&[u8]>,
        resume: &mut Resume,
    ) -> bool {
        let (key, waiters, call) = {
            let mut leases = self.leases.borrow_mut();
            let Some((key, waiters)) = leases.waits.complete(token) else {
                return false;
            };
            (key, waiters, leases.calls.remove(&key))
        };
        let Some(call) = call else {
            return true;
        };
        let (hash, meter) = key;
        let settled: Vec<u64> = call.renewal.settle.iter().map(|s| s.id).collect();
        let answer = lease_wire::answer(
            &self.instance,
            meter,
            status,
            body,
            &settled,
            call.grant,
            call.sent_ms,
        )
        .unwrap_or_else(|reason| {
            self.count(Counter::LeaseFailed);
            log::warn!(
                "[ctx {ctx}] lease callout for key {} failed: {reason}",
                hash.short()
            );
            Answer::Failed {
                backoff_ms: FAILURE_BACKOFF_MS,
            }
        });
        if matches!(answer, Answer::Failed { .. }) {
            self.leases.borrow_mut().keep_loose(key, call.loose);
        }
        self.settle_answer(host, ctx, key, answer, waiters, resume);
        true
    }

    /// Writes `answer` into the key's record, then decides for every request that waited
    /// (also the grants that came with a key lookup, with no waiters of their own).
    pub(crate) fn settle_answer<H: Host>(
        &self,
        host: &H,
        ctx: u32,
        (hash, meter): LeaseKey,
        answer: Answer,
        waiters: Vec<Waiter>,
        resume: &mut Resume,
    ) {
        let now = host.now_ms();
        let at = {
            let mut limiter = self.limiter.borrow_mut();
            // A lease installed while nobody spends is still given back by this worker's tick.
            limiter.budgets.hold(hash, meter, now);
            limiter.budgets.record(hash, meter)
        };
        match lease_record::install(host, &at, &answer, now) {
            // Settled by the root's next tick unless a callout for the key goes first.
            Ok(displaced) if !displaced.is_empty() => {
                self.leases
                    .borrow_mut()
                    .keep_loose((hash, meter), displaced);
            }
            Ok(_) => {}
            // The record keeps its claim until it lapses; the control plane charges what it
            // granted at the lease's expiry: never over.
            Err(e) => log::warn!(
                "[ctx {ctx}] lease record of key {} not updated: {e:?}",
                hash.short()
            ),
        }
        if waiters.is_empty() {
            return;
        }
        let cached = self.cache.borrow_mut().lookup(host, hash, now);
        let verdict = match cached {
            CacheLookup::Fresh(entry) | CacheLookup::Stale(entry) => Verdict::Known(entry),
            CacheLookup::Miss => Verdict::Unavailable(hash),
        };
        self.resolve(host, ctx, verdict, waiters, now, resume);
    }

    /// Root tick: settlements of ended and idle leases, renewals queued by requests, and
    /// callouts whose sender went away are sent from the root.
    pub fn tick_leases<H: Host>(&self, host: &H, resume: &mut Resume) {
        self.entered.set(self.root_context);
        let now = host.now_ms();
        let due = self.limiter.borrow_mut().budgets.due(host, now);
        for (hash, meter, renewal) in due {
            let mut leases = self.leases.borrow_mut();
            if leases.waits.start_background((hash, meter)) {
                leases.prepare("", (hash, meter), &renewal);
            }
        }
        {
            // Settlements of displaced leases no callout carried yet (none for the key went, it
            // failed, or one was already queued or on its way) go by themselves: kept for this
            // worker's next callout for the key, they might never go (another worker settles
            // the record), and the control plane would charge their unspent units at expiry.
            let mut leases = self.leases.borrow_mut();
            let loose: Vec<LeaseKey> = leases.loose.keys().copied().collect();
            for key in loose {
                if leases.waits.start_background(key) {
                    leases.prepare("", key, &settle_only());
                }
            }
        }
        let unsent = self.leases.borrow_mut().waits.orphans();
        let root = self.root_context;
        for key in unsent {
            if let Err(waiters) = self.send_lease_call(host, root, key, Owner::Root) {
                let failed = Answer::Failed {
                    backoff_ms: FAILURE_BACKOFF_MS,
                };
                self.settle_answer(host, root, key, failed, waiters, resume);
            }
        }
    }
}
