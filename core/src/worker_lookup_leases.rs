//! The first leases of a key, asked for with its lookup (docs/protocol.md, "The first leases,
//! granted with the lookup"): a never-seen key with a budget passes after one round trip to
//! the control plane instead of two (the lookup, then a lease callout).
//!
//! A lookup asks only when this Envoy's lease records of the key hold no live lease on either
//! meter (and are not quiet). The leases of its answer go into the key's records exactly as a
//! lease callout's grants do (`Worker::settle_answer`), before the requests that waited for
//! the lookup are decided, so they spend from them at once. The ids carry the lookup's bit
//! (`lease_wire::LOOKUP_LEASE`), so every worker settles them by name like its own.

use crate::api_key::KeyHash;
use crate::budget::Meter;
use crate::host::Host;
use crate::lease_record::{self, INITIAL_WANT};
use crate::lease_wire;
use crate::lookups::LeaseAsk;
use crate::worker::{Resume, Worker};

impl Worker {
    /// The leases a lookup of `hash` starting now asks for: a fresh lease id base when the
    /// key's records hold no live lease on either meter, else none.
    pub(crate) fn first_lease_ask<H: Host>(
        &self,
        host: &H,
        hash: KeyHash,
        now_ms: u64,
    ) -> Option<LeaseAsk> {
        let wanted = {
            let limiter = self.limiter.borrow();
            [Meter::Calls, Meter::Credits].into_iter().all(|meter| {
                lease_record::wants_first_lease(host, &limiter.budgets.record(hash, meter), now_ms)
            })
        };
        wanted.then(|| LeaseAsk {
            base: self.leases.borrow_mut().next_lookup_base(),
            sent_ms: 0,
        })
    }

    /// The path of the lookup of `hash`, asking for leases `ask` if any.
    pub(crate) fn lookup_path(&self, hash: KeyHash, ask: Option<LeaseAsk>) -> String {
        let query = ask
            .map(|ask| lease_wire::lookup_query(&self.instance, ask.base, INITIAL_WANT))
            .unwrap_or_default();
        format!("/v1/filter/keys/{}{query}", hash.to_hex())
    }

    /// Installs the leases a lookup answer (`body`, a 200 with the key) carries for `ask` into
    /// the key's records, as a lease callout's grants are; nobody waits on them here (the
    /// lookup's waiters are decided next).
    pub(crate) fn install_lookup_leases<H: Host>(
        &self,
        host: &H,
        ctx: u32,
        hash: KeyHash,
        ask: LeaseAsk,
        body: &[u8],
        resume: &mut Resume,
    ) {
        match lease_wire::lookup_leases(&self.instance, body, ask.base, ask.sent_ms) {
            Ok(answers) => {
                for (meter, answer) in answers {
                    self.settle_answer(host, ctx, (hash, meter), answer, Vec::new(), resume);
                }
            }
            // Never spent: the control plane charges them in full at their expiry.
            Err(reason) => log::warn!(
                "[ctx {ctx}] leases of the lookup of key {} unusable: {reason}",
                hash.short()
            ),
        }
    }
}
