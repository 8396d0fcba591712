//! One Envoy worker's request path and the state its requests share: the key cache, lookups in
//! flight, the outcomes of running requests, the records not yet queued, the blocked-IP view
//! and the limiter's leases. The host is a parameter of every call (`host::Host`), and what to do
//! with a request comes back as an `Action`, so every branch runs in unit tests against
//! `FakeHost` (tests in `worker_tests.rs`).
//!
//! Re-entrancy: Envoy defers `continueDecoding` and local replies until the current VM call
//! returns, so resuming or answering another request from here never calls back into the core
//! while a `RefCell` is borrowed. Borrows are still kept short and never held across host calls.

use crate::action::{Action, Hide, LocalReply, Pass};
use crate::allowed::path_only;
use crate::answer::{classify, LookupAnswer};
use crate::api_key::{parse_key, KeyHash};
use crate::cache::{CacheEntry, CacheLookup, KeyCache, Known};
use crate::config::{FailureMode, FilterConfig, KeySource};
use crate::decision::{decide, Decision, RequestFacts};
use crate::denial::Denial;
use crate::fast_hash::FastMap;
use crate::header_map;
use crate::host::Host;
use crate::ip_block::{record_failure, BlockedView};
use crate::key_source::{read_key, without_param, KeyRead};
use crate::key_state::KeyState;
use crate::limiter::Limiter;
use crate::lookups::{Join, LeaseAsk, Lookups, Owner, Waiter};
use crate::metrics::{Counter, PendingCounts};
use crate::rate_limit::RateView;
use crate::record_batch::RecordBatchWriter;
use crate::worker_leases::LeaseCalls;
use crate::worker_records::{RECORD_BATCH, RECORD_BYTES};
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// While the control plane fails, a stale key is trusted this long before asking again.
const FAILURE_BACKOFF_MS: u64 = 1_000;
/// Distinct keys with a callout in flight on one worker (bounded memory).
const MAX_IN_FLIGHT: usize = 4_096;
/// The largest lookup answer body the adapter needs to read.
pub const MAX_LOOKUP_ANSWER: usize = 64 * 1024;

/// How a request with a known key was decided, read back by its context in `on_log`.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The key's state the decision used (identity, for records and headers).
    pub state: Rc<KeyState>,
    pub denial: Option<Denial>,
    /// Rate limits and where this request left the tightest, for response headers.
    pub rate: Option<RateView>,
}

impl Outcome {
    pub fn key_id(&self) -> &str {
        &self.state.wire.key_id
    }

    pub fn workspace_id(&self) -> &str {
        &self.state.wire.workspace_id
    }

    /// Tollgate let the request through to the upstream (it counts toward quotas).
    pub fn admitted(&self) -> bool {
        self.denial.is_none()
    }
}

/// What a lookup's waiters are told.
pub(crate) enum Verdict {
    Known(CacheEntry),
    /// The control plane did not answer for this key.
    Unavailable(KeyHash),
}

/// Request facts captured once from the request headers.
pub struct RequestHead<'a> {
    pub headers: &'a [(&'a str, &'a [u8])],
    pub facts: RequestFacts,
    pub now_ms: u64,
}

/// Where the actions for requests that waited go: each is carried out in its own context
/// (which the core has just made current) and the request resumed.
pub type Resume<'s> = dyn FnMut(u32, Action<'_>) + 's;

pub struct Worker {
    pub config: Rc<FilterConfig>,
    pub(crate) authorization: String,
    pub(crate) cache: RefCell<KeyCache>,
    lookups: RefCell<Lookups>,
    pub counts: RefCell<PendingCounts>,
    /// Outcomes of requests still running, keyed by context id (bounded by live requests).
    outcomes: RefCell<FastMap<u32, Outcome>>,
    /// Records not yet handed to the usage service (`worker_records.rs`).
    pub(crate) records: RefCell<RecordBatchWriter>,
    /// This Envoy's instance id (shared by its workers), sent with lookups and records.
    pub instance: String,
    /// The worker's root context, which owns lookups nobody else can (see `rescue_orphans`).
    pub(crate) root_context: u32,
    blocked: RefCell<BlockedView>,
    pub(crate) limiter: RefCell<Limiter>,
    /// Lease callouts in flight or queued for the root's tick (`worker_leases.rs`).
    pub(crate) leases: RefCell<LeaseCalls>,
    /// The context Envoy called the core for (a request, or the root on a tick): the SDK hands
    /// the answer of a callout sent during that call to it, whichever request it is for.
    pub(crate) entered: Cell<u32>,
}

impl Worker {
    /// `nonce`: a random number of this worker's own (its lease ids derive from it).
    pub fn new(config: FilterConfig, instance: String, root_context: u32, nonce: u64) -> Worker {
        // A renewal's claim outlives a callout sent at the next tick and its timeout.
        let claim_ms = config.control_plane.timeout.as_millis() as u64 + 2_000;
        Worker {
            root_context,
            authorization: format!("Bearer {}", config.filter_token),
            cache: RefCell::new(KeyCache::new(
                config.cache.max_keys,
                config.cache.max_invalid_keys,
            )),
            lookups: RefCell::new(Lookups::new(MAX_IN_FLIGHT)),
            counts: RefCell::new(PendingCounts::default()),
            outcomes: RefCell::new(FastMap::default()),
            records: RefCell::new(RecordBatchWriter::new(RECORD_BATCH, RECORD_BYTES)),
            instance,
            blocked: RefCell::new(BlockedView::default()),
            limiter: RefCell::new(Limiter::new(config.cache.max_keys, claim_ms)),
            leases: RefCell::new(LeaseCalls::new(nonce)),
            entered: Cell::new(root_context),
            config: Rc::new(config),
        }
    }

    /// Who owns a callout sent now: the context Envoy called the core for, which the SDK gives
    /// its answer to (a request's end orphans it; the root's never ends).
    pub(crate) fn callout_owner(&self) -> Owner {
        match self.entered.get() {
            ctx if ctx == self.root_context => Owner::Root,
            ctx => Owner::Context(ctx),
        }
    }

    /// IP blocking is on and some address is blocked right now: only then does a request need
    /// its client address before the decision (reading it costs a host call).
    pub fn blocks_any_ip(&self) -> bool {
        self.config.ip_blocking.is_some() && !self.blocked.borrow().is_empty()
    }

    pub fn count(&self, counter: Counter) {
        self.counts.borrow_mut().add(counter);
    }

    /// A request's headers arrived (context `ctx`, current). Requests that waited for a lookup
    /// this call settles (none unless its callout could not be sent) go to `resume`.
    pub fn on_request_headers<'a, H: Host>(
        &'a self,
        host: &H,
        ctx: u32,
        head: &RequestHead,
        resume: &mut Resume,
    ) -> Action<'a> {
        self.entered.set(ctx);
        let now = head.now_ms;
        let facts = &head.facts;
        if self.blocks_any_ip() && self.blocked.borrow().is_blocked(&facts.client_ip, now) {
            return self.deny(host, ctx, Denial::IpBlocked, facts);
        }
        let (key, source) = match read_key(&self.config.key_sources, head.headers) {
            KeyRead::Missing => return self.deny(host, ctx, Denial::MissingKey, facts),
            KeyRead::Repeated => return self.deny(host, ctx, Denial::InvalidKey, facts),
            KeyRead::Present { key, source } => (key, source),
        };
        let hash = match parse_key(&key) {
            Ok(hash) => hash,
            Err(_) => return self.deny(host, ctx, Denial::InvalidKey, facts),
        };
        // Only a well-formed key can pass, so only then is its hiding worked out.
        let hide = self.hide(source, head.headers);
        let cached = self.cache.borrow_mut().lookup(host, hash, now);
        match cached {
            CacheLookup::Fresh(entry) => {
                self.count(Counter::CacheHit);
                self.apply_known(host, ctx, &entry, now, facts, hide, resume)
            }
            CacheLookup::Stale(entry) if entry.retry_after_ms > now => {
                // The control plane failed a moment ago: last known state, no new callout.
                self.apply_known(host, ctx, &entry, now, facts, hide, resume)
            }
            _ => {
                self.count(Counter::CacheMiss);
                let waiter = Waiter {
                    context_id: ctx,
                    request: facts.clone(),
                    hide: hide.clone().map(Hide::into_owned),
                };
                let join = self.lookups.borrow_mut().join(hash, waiter);
                match join {
                    Join::Dispatch => {
                        if let Some(ask) = self.first_lease_ask(host, hash, now) {
                            self.lookups.borrow_mut().set_lease_ask(hash, ask);
                        }
                        if !self.dispatch(host, ctx, hash, Owner::Context(ctx)) {
                            let waiters = self.lookups.borrow_mut().abandon(hash);
                            let verdict = Verdict::Unavailable(hash);
                            self.resolve(host, ctx, verdict, waiters, now, resume);
                        }
                        Action::Wait
                    }
                    Join::Wait => Action::Wait,
                    Join::Full => {
                        log::warn!(
                            "[ctx {ctx}] too many key lookups in flight; key {}",
                            hash.short()
                        );
                        self.apply_unavailable(host, ctx, hash, now, facts, hide, resume)
                    }
                }
            }
        }
    }

    /// Sends the lookup callout for context `ctx` (with the first leases it asks for, the same
    /// each time it is sent); false if it could not be sent.
    fn dispatch<H: Host>(&self, host: &H, ctx: u32, hash: KeyHash, owner: Owner) -> bool {
        let ask = self.lookups.borrow().lease_ask(hash);
        let path = self.lookup_path(hash, ask);
        let upstream = &self.config.control_plane;
        let headers = upstream.get_headers(&path, &self.authorization);
        let now = host.now_ms();
        match host.dispatch(ctx, &upstream.cluster, headers, None, upstream.timeout) {
            Ok(token) => {
                self.count(Counter::LookupDispatched);
                let mut lookups = self.lookups.borrow_mut();
                lookups.dispatched(hash, owner, token);
                if let Some(ask) = ask {
                    // The leases' deadlines count from when it was sent.
                    lookups.set_lease_ask(
                        hash,
                        LeaseAsk {
                            sent_ms: now,
                            ..ask
                        },
                    );
                }
                true
            }
            Err(e) => {
                self.count(Counter::LookupFailed);
                log::error!("[ctx {ctx}] cannot call the control plane at {upstream}: {e}");
                false
            }
        }
    }

    /// The answer to callout `token` arrived at context `ctx` (a request context or the root):
    /// its `:status` and body, if the host could read them. Every request that waited for it is
    /// decided, in its own context, and goes to `resume`.
    pub fn on_callout_answer<H: Host>(
        &self,
        host: &H,
        ctx: u32,
        token: u32,
        status: Option<&str>,
        body: Option<&[u8]>,
        resume: &mut Resume,
    ) {
        self.entered.set(ctx);
        let completed = self.lookups.borrow_mut().complete_asking(token);
        let Some((hash, waiters, lease_ask)) = completed else {
            if !self.on_lease_answer(host, ctx, token, status, body, resume) {
                log::debug!("[ctx {ctx}] answer for a callout nobody waits for (token {token})");
            }
            return;
        };
        let answer = classify(status, body);
        let now = host.now_ms();
        let ttl = &self.config.cache;
        let verdict = match answer {
            LookupAnswer::Found(state) => {
                let suggested = state.wire.cache_ttl_ms.unwrap_or(u64::MAX);
                let ttl_ms = (ttl.ttl.as_millis() as u64).min(suggested);
                let verdict = self.store(
                    host,
                    ctx,
                    CacheEntry {
                        hash,
                        known: Known::Valid(Rc::new(*state)),
                        fetched_ms: now,
                        fresh_until_ms: now + ttl_ms,
                        retry_after_ms: 0,
                    },
                );
                // Before the waiters are decided: they spend from these leases at once.
                if let (Some(ask), Some(body)) = (lease_ask, body) {
                    self.install_lookup_leases(host, ctx, hash, ask, body, resume);
                }
                verdict
            }
            LookupAnswer::NotFound => self.store(
                host,
                ctx,
                CacheEntry {
                    hash,
                    known: Known::Unknown,
                    fetched_ms: now,
                    fresh_until_ms: now + ttl.negative_ttl.as_millis() as u64,
                    retry_after_ms: 0,
                },
            ),
            LookupAnswer::Unavailable(reason) => {
                self.count(Counter::LookupFailed);
                log::warn!(
                    "[ctx {ctx}] control plane lookup for key {} failed: {reason}",
                    hash.short()
                );
                self.cache
                    .borrow_mut()
                    .back_off(hash, now + FAILURE_BACKOFF_MS);
                Verdict::Unavailable(hash)
            }
        };
        self.resolve(host, ctx, verdict, waiters, now, resume);
    }

    fn store<H: Host>(&self, host: &H, ctx: u32, entry: CacheEntry) -> Verdict {
        if let Err(e) = self.cache.borrow_mut().insert(host, entry.clone()) {
            // The VM-local copy is in place; other workers will ask for themselves.
            log::warn!("[ctx {ctx}] {e}");
        }
        Verdict::Known(entry)
    }

    /// Decides for every request that waited on a lookup, each in its own context, then makes
    /// `ctx` current again.
    pub(crate) fn resolve<H: Host>(
        &self,
        host: &H,
        ctx: u32,
        verdict: Verdict,
        waiters: Vec<Waiter>,
        now: u64,
        resume: &mut Resume,
    ) {
        // The effective context: each waiter is decided in its own (the answering context may
        // come after others in the list).
        let mut current = ctx;
        for waiter in waiters {
            let Waiter {
                context_id: id,
                request: facts,
                hide,
            } = waiter;
            if id != current {
                if let Err(e) = host.switch_to(id) {
                    log::debug!("[ctx {id}] waiter gone before its answer: {e}");
                    continue;
                }
                current = id;
            }
            let action = match &verdict {
                Verdict::Known(entry) => {
                    self.apply_known(host, id, entry, now, &facts, hide, resume)
                }
                Verdict::Unavailable(hash) => {
                    self.apply_unavailable(host, id, *hash, now, &facts, hide, resume)
                }
            };
            // One that waits again (now for a lease) is resumed when that answer comes.
            if !matches!(action, Action::Wait) {
                resume(id, action);
            }
        }
        if current != ctx {
            if let Err(e) = host.switch_to(ctx) {
                log::error!("[ctx {ctx}] cannot restore the effective context: {e}");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_known<'a, H: Host>(
        &'a self,
        host: &H,
        ctx: u32,
        entry: &CacheEntry,
        now: u64,
        facts: &RequestFacts,
        hide: Option<Hide<'a>>,
        resume: &mut Resume,
    ) -> Action<'a> {
        let state = match &entry.known {
            Known::Valid(state) => state,
            Known::Unknown => return self.deny(host, ctx, Denial::InvalidKey, facts),
        };
        let mut decision = decide(state, now, facts);
        let mut rate = None;
        if let Decision::Pass(_) = decision {
            let checked =
                self.limiter
                    .borrow_mut()
                    .check(host, &self.config, entry, state, facts, now);
            if checked.untracked > 0 {
                self.counts
                    .borrow_mut()
                    .add_n(Counter::LimitUntracked, checked.untracked);
            }
            if checked.lease_failed {
                self.count(Counter::LeaseFailed);
            }
            self.queue_renewals(&state.wire.key_id, entry.hash, checked.renewals);
            if let Some((meter, renewal)) = checked.starved {
                let waiter = Waiter {
                    context_id: ctx,
                    request: facts.clone(),
                    hide: hide.map(Hide::into_owned),
                };
                return self
                    .wait_for_lease(host, ctx, state, entry.hash, meter, renewal, waiter, resume);
            }
            rate = checked.rate;
            if let Some(denial) = checked.denial {
                decision = Decision::Deny(denial);
            }
        }
        let denial = match &decision {
            Decision::Deny(denial) => Some(*denial),
            _ => None,
        };
        let outcome = Outcome {
            state: state.clone(),
            denial,
            rate,
        };
        self.outcomes.borrow_mut().insert(ctx, outcome);
        match denial {
            Some(denial) => self.deny(host, ctx, denial, facts),
            None => self.pass(Some(state.clone()), hide),
        }
    }

    /// The control plane did not answer: last known state if any, else the failure mode.
    #[allow(clippy::too_many_arguments)]
    fn apply_unavailable<'a, H: Host>(
        &'a self,
        host: &H,
        ctx: u32,
        hash: KeyHash,
        now: u64,
        facts: &RequestFacts,
        hide: Option<Hide<'a>>,
        resume: &mut Resume,
    ) -> Action<'a> {
        let cached = self.cache.borrow_mut().lookup(host, hash, now);
        match cached {
            CacheLookup::Fresh(entry) | CacheLookup::Stale(entry) => {
                self.apply_known(host, ctx, &entry, now, facts, hide, resume)
            }
            CacheLookup::Miss => match self.config.failure_mode {
                FailureMode::Closed => self.deny(host, ctx, Denial::VerificationUnavailable, facts),
                FailureMode::Open => self.pass(None, hide),
            },
        }
    }

    fn pass<'a>(&'a self, identity: Option<Rc<KeyState>>, hide: Option<Hide<'a>>) -> Action<'a> {
        self.count(match identity {
            Some(_) => Counter::Allowed,
            None => Counter::AllowedUnverified,
        });
        Action::Pass(Pass {
            identity,
            hide,
            forward_meta: &self.config.forward_meta,
        })
    }

    /// How to hide the key from the upstream, when `hide_key` is on: its header, or `:path`
    /// without its query parameter.
    fn hide<'a>(&self, source: &'a KeySource, headers: &[(&str, &[u8])]) -> Option<Hide<'a>> {
        if !self.config.hide_key {
            return None;
        }
        Some(match source {
            KeySource::Header(name) | KeySource::Bearer(name) => Hide::Header(Cow::Borrowed(name)),
            KeySource::Query(param) => {
                let path = header_map::get(headers, ":path").unwrap_or_default();
                Hide::Path(without_param(&String::from_utf8_lossy(path), param))
            }
        })
    }

    /// The local reply for `denial`, counted; an authentication failure also counts against
    /// the client IP.
    pub(crate) fn deny<H: Host>(
        &self,
        host: &H,
        ctx: u32,
        denial: Denial,
        facts: &RequestFacts,
    ) -> Action<'static> {
        self.count(Counter::Denied(denial));
        if denial.is_auth_failure() {
            self.note_auth_failure(host, ctx, &facts.client_ip, host.now_ms());
        }
        let rate = self.outcomes.borrow().get(&ctx).and_then(|o| o.rate);
        let limits = &self.config.limits;
        Action::Deny(LocalReply::new(
            denial,
            limits.quota_status,
            limits.headers,
            rate,
        ))
    }

    /// Counts a failed authentication against the client IP, blocking it past the threshold.
    fn note_auth_failure<H: Host>(&self, host: &H, ctx: u32, ip: &str, now: u64) {
        let Some(policy) = &self.config.ip_blocking else {
            return;
        };
        // Read lazily: the current context is this request's, also when it waited.
        let ip = client_ip_or_downstream(host, ip);
        let ip = ip.as_ref();
        if ip.is_empty() {
            return;
        }
        if let Some(until) = record_failure(host, policy, ip, now) {
            self.count(Counter::IpBlocked);
            log::warn!(
                "[ctx {ctx}] blocking {ip} until {until} (ms): too many failed authentications"
            );
            self.blocked.borrow_mut().refresh(host, now);
        }
    }

    /// Root tick: pick up IPs other workers blocked.
    pub fn refresh_blocked<H: Host>(&self, host: &H, now: u64) {
        if self.config.ip_blocking.is_some() {
            self.blocked.borrow_mut().refresh(host, now);
        }
    }

    /// Root tick: lookups whose dispatcher went away are sent again if someone still waits.
    pub fn rescue_orphans<H: Host>(&self, host: &H, resume: &mut Resume) {
        let root = self.root_context;
        self.entered.set(root);
        let orphans = self.lookups.borrow_mut().orphans();
        for hash in orphans {
            self.count(Counter::LookupRescued);
            if !self.dispatch(host, root, hash, Owner::Root) {
                let waiters = self.lookups.borrow_mut().abandon(hash);
                let now = host.now_ms();
                self.resolve(host, root, Verdict::Unavailable(hash), waiters, now, resume);
            }
        }
    }

    /// The outcome of a request with a known key, if it had one.
    pub fn outcome(&self, ctx: u32) -> Option<Outcome> {
        self.outcomes.borrow().get(&ctx).cloned()
    }

    /// The request is over: forget it everywhere.
    pub fn finish(&self, ctx: u32, waited: bool) -> Option<Outcome> {
        if waited {
            // Gone before (or after) its answer: stop waiting; a callout it owned goes to the root.
            self.lookups.borrow_mut().leave(ctx);
            self.leases.borrow_mut().waits.leave(ctx);
        }
        self.outcomes.borrow_mut().remove(&ctx)
    }
}

/// The facts of a request its headers tell, with the client IP found apart (`client_ip`).
pub fn request_facts(headers: &[(&str, &[u8])], client_ip: String) -> RequestFacts {
    let path = header_map::get(headers, ":path").unwrap_or_default();
    RequestFacts {
        method: header_map::text(headers, ":method"),
        path: path_only(&String::from_utf8_lossy(path)).to_string(),
        client_ip,
    }
}

/// `ip` if the request's headers gave it, else the host's peer address of the current request
/// (a host call, made only when the address is really needed).
pub fn client_ip_or_downstream<'a, H: Host>(host: &H, ip: &'a str) -> Cow<'a, str> {
    if ip.is_empty() {
        Cow::Owned(host.downstream_ip())
    } else {
        Cow::Borrowed(ip)
    }
}
