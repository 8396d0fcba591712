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
use crate::lease_record::{self, Answer, Renewal};
use crate::lease_wire::{self, FAILURE_BACKOFF_MS, LEASES_PATH};
use crate::lookups::{Join, Lookups, Owner, Waiter};
use crate::metrics::Counter;
use crate::worker::{Resume, Verdict, Worker};

/// Keys and meters with a lease callout in flight on one worker (bounded memory).
const MAX_IN_FLIGHT: usize = 4_096;

type LeaseKey = (KeyHash, Meter);

/// What a lease callout carries, kept until it is answered.
struct LeaseCall {
    body: String,
    settle: Vec<u64>,
    grant: Option<u64>,
    /// When it was last sent: a lease's deadline counts from it.
    sent_ms: u64,
}

pub struct LeaseCalls {
    pub waits: Lookups<LeaseKey>,
    calls: FastMap<LeaseKey, LeaseCall>,
    nonce: u64,
    issued: u64,
}

impl LeaseCalls {
    pub fn new(nonce: u64) -> LeaseCalls {
        LeaseCalls {
            waits: Lookups::keeping_unwaited(MAX_IN_FLIGHT),
            calls: FastMap::default(),
            nonce,
            issued: 0,
        }
    }

    /// A lease id no other lease of this Envoy has: this worker's nonce and a count, mixed
    /// (splitmix64), never 0.
    fn next_id(&mut self) -> u64 {
        loop {
            self.issued += 1;
            let mut z = self
                .nonce
                .wrapping_add(self.issued.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            if z != 0 {
                return z;
            }
        }
    }

    fn prepare(&mut self, instance: &str, key_id: &str, key: LeaseKey, renewal: &Renewal) {
        let grant = (renewal.want > 0).then(|| self.next_id());
        let body = lease_wire::request_body(instance, key_id, key.1, renewal, grant.unwrap_or(0));
        let call = LeaseCall {
            body,
            settle: renewal.settle.iter().map(|s| s.id).collect(),
            grant,
            sent_ms: 0,
        };
        self.calls.insert(key, call);
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
                leases.prepare(&self.instance, key_id, (hash, meter), &renewal);
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
                leases.prepare(&self.instance, &state.wire.key_id, key, &renewal);
                true
            }
            Join::Wait => self.leases.borrow().waits.is_unsent(key),
            Join::Full => {
                log::warn!(
                    "[ctx {ctx}] too many lease callouts in flight; key {}",
                    hash.short()
                );
                return self.deny(host, ctx, no_units, &facts);
            }
        };
        if send {
            if let Err(waiters) = self.send_lease_call(host, ctx, key, Owner::Context(ctx)) {
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
                    Some(call.body.clone())
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
                leases.calls.remove(&key);
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
        let answer = lease_wire::answer(
            &self.instance,
            meter,
            status,
            body,
            &call.settle,
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
        self.settle_answer(host, ctx, key, answer, waiters, resume);
        true
    }

    /// Writes `answer` into the key's record, then decides for every request that waited.
    fn settle_answer<H: Host>(
        &self,
        host: &H,
        ctx: u32,
        (hash, meter): LeaseKey,
        answer: Answer,
        waiters: Vec<Waiter>,
        resume: &mut Resume,
    ) {
        let now = host.now_ms();
        let at = self.limiter.borrow().budgets.record(hash, meter);
        if let Err(e) = lease_record::install(host, &at, &answer, now) {
            // The record keeps its claim until it lapses; the control plane charges what it
            // granted at the lease's expiry: never over.
            log::warn!(
                "[ctx {ctx}] lease record of key {} not updated: {e:?}",
                hash.short()
            );
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
        let now = host.now_ms();
        let due = self.limiter.borrow_mut().budgets.due(host, now);
        for (hash, meter, renewal) in due {
            let mut leases = self.leases.borrow_mut();
            if leases.waits.start_background((hash, meter)) {
                leases.prepare(&self.instance, "", (hash, meter), &renewal);
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
