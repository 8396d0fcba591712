//! Per-worker state shared by the worker's root context and every request on that worker, and
//! the request path that uses it. Decisions, caching, coalescing and records come from
//! host-free modules; this file moves data between them and Envoy.
//!
//! Re-entrancy: Envoy defers `continueDecoding` and local replies until the current VM call
//! returns, so resuming or answering another request from here never calls back into the VM
//! while a `RefCell` is borrowed. Borrows are still kept short and never held across host calls.

use crate::usage_service::USAGE_QUEUE;
use crate::wasm_host::{describe, WasmHost};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use tollgate_core::allowed::path_only;
use tollgate_core::answer::{classify, LookupAnswer};
use tollgate_core::api_key::{parse_key, KeyHash};
use tollgate_core::cache::{CacheEntry, CacheLookup, KeyCache, Known};
use tollgate_core::config::{FailureMode, FilterConfig};
use tollgate_core::decision::{decide, Decision, RequestFacts};
use tollgate_core::denial::Denial;
use tollgate_core::fast_hash::FastMap;
use tollgate_core::header_map;
use tollgate_core::host::Clock;
use tollgate_core::ip_block::{record_failure, BlockedView};
use tollgate_core::key_source::{read_key, KeyRead};
use tollgate_core::key_state::KeyState;
use tollgate_core::limit_headers::rate_limit_headers;
use tollgate_core::lookups::{Join, Lookups, Owner, Waiter};
use tollgate_core::metrics::{Counter, PendingCounts};
use tollgate_core::quota::{self, QuotaOutcome};
use tollgate_core::rate_limit::{self, PlanRates, RateOutcome, RateStatus};
use tollgate_core::record_batch::RecordBatchWriter;
use tollgate_core::usage_record::{ip_of, UsageRecord};

pub const HEADER_KEY_ID: &str = "x-tollgate-key-id";
pub const HEADER_WORKSPACE_ID: &str = "x-tollgate-workspace-id";
/// While the control plane fails, a stale key is trusted this long before asking again.
const FAILURE_BACKOFF_MS: u64 = 1_000;
/// Distinct keys with a callout in flight on one worker (bounded memory).
const MAX_IN_FLIGHT: usize = 4_096;
/// Records are handed to the usage service in batches of at most this many.
const RECORD_BATCH: usize = 64;
/// A typical record's JSON size, to reserve a batch's room once.
const RECORD_BYTES: usize = 384;

/// How a request with a known key was decided, read back by its context in `on_log`.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The key's state the decision used (identity, for records and headers).
    pub state: Rc<KeyState>,
    pub denial: Option<Denial>,
    /// Plan limits and where this request left them, for response headers.
    pub rate: Option<(PlanRates, RateStatus)>,
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
enum Verdict {
    Known(CacheEntry),
    Unavailable,
}

/// Request facts captured once from the request headers.
pub struct RequestHead<'a> {
    pub headers: &'a [(&'a str, &'a [u8])],
    pub facts: RequestFacts,
    pub now_ms: u64,
}

pub struct Worker {
    pub config: Rc<FilterConfig>,
    authorization: String,
    cache: RefCell<KeyCache>,
    lookups: RefCell<Lookups>,
    pub counts: RefCell<PendingCounts>,
    /// Outcomes of requests still running, keyed by context id (bounded by live requests).
    outcomes: RefCell<FastMap<u32, Outcome>>,
    /// Records not yet handed to the usage service (at most `RECORD_BATCH`).
    records: RefCell<RecordBatchWriter>,
    vm_id: String,
    queue_id: Cell<Option<u32>>,
    /// This Envoy's instance id (shared by its workers), sent with lookups and records.
    pub instance: String,
    /// The worker's root context: every lookup callout is made on its behalf (see `dispatch`).
    root_context: u32,
    blocked: RefCell<BlockedView>,
    rate_leases: RefCell<rate_limit::RateLeases>,
    quota_leases: RefCell<quota::QuotaLeases>,
}

impl Worker {
    pub fn new(config: FilterConfig, vm_id: String, instance: String, root_context: u32) -> Worker {
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
            vm_id,
            queue_id: Cell::new(None),
            instance,
            blocked: RefCell::new(BlockedView::default()),
            rate_leases: RefCell::new(rate_limit::new_leases()),
            quota_leases: RefCell::new(quota::new_leases()),
            config: Rc::new(config),
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

    pub fn on_request_headers(&self, ctx: u32, head: &RequestHead) -> Action {
        let now = head.now_ms;
        let facts = &head.facts;
        if self.blocks_any_ip() && self.blocked.borrow().is_blocked(&facts.client_ip, now) {
            return self.deny(ctx, Denial::IpBlocked, facts);
        }
        let (key, key_header) = match read_key(&self.config.key_sources, head.headers) {
            KeyRead::Missing => return self.deny(ctx, Denial::MissingKey, facts),
            KeyRead::Repeated => return self.deny(ctx, Denial::InvalidKey, facts),
            KeyRead::Present { key, header } => (key, header),
        };
        let hash = match parse_key(key) {
            Ok(hash) => hash,
            Err(_) => return self.deny(ctx, Denial::InvalidKey, facts),
        };
        let cached = self.cache.borrow_mut().lookup(&WasmHost, hash, now);
        match cached {
            CacheLookup::Fresh(entry) => {
                self.count(Counter::CacheHit);
                self.apply_known(ctx, &entry, now, &head.facts, key_header, false)
            }
            CacheLookup::Stale(entry) if entry.retry_after_ms > now => {
                // The control plane failed a moment ago: last known state, no new callout.
                self.apply_known(ctx, &entry, now, &head.facts, key_header, false)
            }
            _ => {
                self.count(Counter::CacheMiss);
                let waiter = Waiter {
                    context_id: ctx,
                    request: head.facts.clone(),
                    key_header: key_header.to_string(),
                };
                let join = self.lookups.borrow_mut().join(hash, waiter);
                match join {
                    Join::Dispatch => {
                        if !self.dispatch(ctx, hash, Owner::Context(ctx)) {
                            let waiters = self.lookups.borrow_mut().abandon(hash);
                            self.resolve(ctx, hash, Verdict::Unavailable, waiters, now);
                        }
                        Action::Pause
                    }
                    Join::Wait => Action::Pause,
                    Join::Full => {
                        log::warn!(
                            "[ctx {ctx}] too many key lookups in flight; key {}",
                            hash.short()
                        );
                        self.apply_unavailable(ctx, hash, now, &head.facts, key_header, false)
                    }
                }
            }
        }
    }

    /// Sends the lookup callout; the answer arrives at the context that is active now.
    fn dispatch(&self, ctx: u32, hash: KeyHash, owner: Owner) -> bool {
        let path = format!(
            "/v1/filter/keys/{}?instance={}&since_ms={}",
            hash.to_hex(),
            self.instance,
            quota::recent_since(WasmHost.now_ms())
        );
        let upstream = &self.config.control_plane;
        let headers = upstream.get_headers(&path, &self.authorization);
        // Made on behalf of the root context, so Envoy does not cancel the callout when the request
        // ends: a cancelled callout never answers, and the SDK then keeps its token for the
        // VM's lifetime (one entry per client that left during a lookup). The SDK still hands
        // the answer to the request that asked, if it is there; else it drops it and forgets
        // the token, and the root dispatches again for anyone still waiting (`rescue_orphans`).
        let on_behalf = ctx != self.root_context;
        if on_behalf {
            if let Err(status) = hostcalls::set_effective_context(self.root_context) {
                log::error!(
                    "[ctx {ctx}] cannot make the lookup on the root's behalf: {}",
                    describe(status)
                );
                self.count(Counter::LookupFailed);
                return false;
            }
        }
        let dispatched = hostcalls::dispatch_http_call(
            &upstream.cluster,
            headers,
            None,
            vec![],
            upstream.timeout,
        );
        if on_behalf {
            restore_effective_context(ctx);
        }
        match dispatched {
            Ok(token) => {
                self.count(Counter::LookupDispatched);
                self.lookups.borrow_mut().dispatched(hash, owner, token);
                true
            }
            Err(status) => {
                self.count(Counter::LookupFailed);
                log::error!(
                    "[ctx {ctx}] cannot call the control plane at {upstream}: {}",
                    describe(status)
                );
                false
            }
        }
    }

    /// A lookup answer arrived at context `ctx` (a request context or the root).
    pub fn on_lookup_answer(&self, ctx: u32, token: u32) {
        // The answer is held by the root context, which made the callout (see `dispatch`), while
        // the SDK made `ctx` effective: read it as the root, then carry on as `ctx`.
        let as_root =
            ctx != self.root_context && hostcalls::set_effective_context(self.root_context).is_ok();
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, 64 * 1024)
            .ok()
            .flatten();
        if as_root {
            restore_effective_context(ctx);
        }
        let answer = classify(status.as_deref(), body.as_deref());
        let Some((hash, waiters)) = self.lookups.borrow_mut().complete(token) else {
            log::debug!("[ctx {ctx}] answer for a lookup nobody waits for (token {token})");
            return;
        };
        let now = WasmHost.now_ms();
        let ttl = &self.config.cache;
        let verdict = match answer {
            LookupAnswer::Found(state) => {
                let suggested = state.wire.cache_ttl_ms.unwrap_or(u64::MAX);
                let ttl_ms = (ttl.ttl.as_millis() as u64).min(suggested);
                self.store(
                    ctx,
                    CacheEntry {
                        hash,
                        known: Known::Valid(Rc::new(*state)),
                        fetched_ms: now,
                        fresh_until_ms: now + ttl_ms,
                        retry_after_ms: 0,
                    },
                )
            }
            LookupAnswer::NotFound => self.store(
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
                Verdict::Unavailable
            }
        };
        self.resolve(ctx, hash, verdict, waiters, now);
    }

    fn store(&self, ctx: u32, entry: CacheEntry) -> Verdict {
        if let Err(e) = self.cache.borrow_mut().insert(&WasmHost, entry.clone()) {
            // The VM-local copy is in place; other workers will ask for themselves.
            log::warn!("[ctx {ctx}] {e}");
        }
        Verdict::Known(entry)
    }

    /// Decides for every request that waited on a lookup, each in its own context.
    fn resolve(&self, ctx: u32, hash: KeyHash, verdict: Verdict, waiters: Vec<Waiter>, now: u64) {
        for waiter in waiters {
            if waiter.context_id != ctx {
                if let Err(status) = hostcalls::set_effective_context(waiter.context_id) {
                    log::debug!(
                        "[ctx {}] waiter gone before its answer: {}",
                        waiter.context_id,
                        describe(status)
                    );
                    continue;
                }
            }
            let (id, facts, header) = (waiter.context_id, &waiter.request, &waiter.key_header);
            match &verdict {
                Verdict::Known(entry) => self.apply_known(id, entry, now, facts, header, true),
                Verdict::Unavailable => self.apply_unavailable(id, hash, now, facts, header, true),
            };
        }
        restore_effective_context(ctx);
    }

    fn apply_known(
        &self,
        ctx: u32,
        entry: &CacheEntry,
        now: u64,
        facts: &RequestFacts,
        key_header: &str,
        paused: bool,
    ) -> Action {
        let state = match &entry.known {
            Known::Valid(state) => state,
            Known::Unknown => {
                return self.apply(
                    ctx,
                    Decision::Deny(Denial::InvalidKey),
                    facts,
                    key_header,
                    paused,
                )
            }
        };
        let mut decision = decide(state, now, facts);
        let mut rate = None;
        if let Decision::Pass(_) = decision {
            match self.check_limits(entry, state, now) {
                Ok(status) => rate = status,
                Err((denial, status)) => {
                    decision = Decision::Deny(denial);
                    rate = status;
                }
            }
        }
        let outcome = Outcome {
            state: state.clone(),
            denial: match &decision {
                Decision::Deny(denial) => Some(*denial),
                _ => None,
            },
            rate,
        };
        self.outcomes.borrow_mut().insert(ctx, outcome);
        self.apply(ctx, decision, facts, key_header, paused)
    }

    /// Per-key quota, then the workspace's plan limits. A request refused by the plan limit
    /// gives its quota unit back, so refused requests never use up a quota.
    #[allow(clippy::type_complexity)]
    fn check_limits(
        &self,
        entry: &CacheEntry,
        state: &KeyState,
        now: u64,
    ) -> Result<Option<(PlanRates, RateStatus)>, (Denial, Option<(PlanRates, RateStatus)>)> {
        let slots = self.config.cache.max_keys;
        let quota = quota::admit(
            &WasmHost,
            slots,
            entry.hash,
            state,
            entry.fetched_ms,
            now,
            &mut self.quota_leases.borrow_mut(),
        );
        match quota {
            QuotaOutcome::Exceeded(window) => return Err((Denial::QuotaExceeded(window), None)),
            QuotaOutcome::Untracked => self.count(Counter::LimitUntracked),
            QuotaOutcome::Unlimited | QuotaOutcome::Admitted => {}
        }
        let plan = PlanRates {
            per_second: state.wire.plan.rate_limit_per_second,
            per_minute: state.wire.plan.rate_limit_per_minute,
        }
        .share(self.config.limits.instances);
        let workspace = &state.wire.workspace_id;
        let rate = rate_limit::admit(
            &WasmHost,
            self.config.limits.rate_slots,
            workspace,
            plan,
            now,
            &mut self.rate_leases.borrow_mut(),
        );
        match rate {
            RateOutcome::Unlimited => Ok(None),
            RateOutcome::Untracked => {
                self.count(Counter::LimitUntracked);
                Ok(None)
            }
            RateOutcome::Admitted(status) => Ok(Some((plan, status))),
            RateOutcome::Limited(status) => {
                if quota == QuotaOutcome::Admitted {
                    quota::refund(entry.hash, &mut self.quota_leases.borrow_mut());
                }
                Err((Denial::RateLimited(status.window), Some((plan, status))))
            }
        }
    }

    /// The control plane did not answer: last known state if any, else the failure mode.
    fn apply_unavailable(
        &self,
        ctx: u32,
        hash: KeyHash,
        now: u64,
        facts: &RequestFacts,
        key_header: &str,
        paused: bool,
    ) -> Action {
        let cached = self.cache.borrow_mut().lookup(&WasmHost, hash, now);
        match cached {
            CacheLookup::Fresh(entry) | CacheLookup::Stale(entry) => {
                self.apply_known(ctx, &entry, now, facts, key_header, paused)
            }
            CacheLookup::Miss => {
                let decision = match self.config.failure_mode {
                    FailureMode::Closed => Decision::Deny(Denial::VerificationUnavailable),
                    FailureMode::Open => Decision::PassUnverified,
                };
                self.apply(ctx, decision, facts, key_header, paused)
            }
        }
    }

    fn deny(&self, ctx: u32, denial: Denial, facts: &RequestFacts) -> Action {
        self.apply(ctx, Decision::Deny(denial), facts, "", false)
    }

    /// Counts a failed authentication against the client IP, blocking it past the threshold.
    fn note_auth_failure(&self, ctx: u32, ip: &str, now: u64) {
        let Some(policy) = &self.config.ip_blocking else {
            return;
        };
        // Read lazily: the effective context is this request's, also when it waited.
        let ip = client_ip_or_downstream(ip);
        let ip = ip.as_ref();
        if ip.is_empty() {
            return;
        }
        if let Some(until) = record_failure(&WasmHost, policy, ip, now) {
            self.count(Counter::IpBlocked);
            log::warn!(
                "[ctx {ctx}] blocking {ip} until {until} (ms): too many failed authentications"
            );
            self.blocked.borrow_mut().refresh(&WasmHost, now);
        }
    }

    /// Root tick: pick up IPs other workers blocked.
    pub fn refresh_blocked(&self, now: u64) {
        if self.config.ip_blocking.is_some() {
            self.blocked.borrow_mut().refresh(&WasmHost, now);
        }
    }

    /// Carries out a decision on the effective context's request.
    fn apply(
        &self,
        ctx: u32,
        decision: Decision,
        facts: &RequestFacts,
        key_header: &str,
        paused: bool,
    ) -> Action {
        let add = |name: &str, value: &str| {
            // Client-sent x-tollgate-* headers were removed on arrival: add, never duplicate.
            if let Err(status) = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value)
            {
                log::error!(
                    "[ctx {ctx}] cannot add request header {name}: {}",
                    describe(status)
                );
            }
        };
        let set = |name: &str, value: Option<&str>| {
            if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value)
            {
                log::error!(
                    "[ctx {ctx}] cannot set request header {name}: {}",
                    describe(status)
                );
            }
        };
        match decision {
            Decision::Pass(identity) => {
                self.count(Counter::Allowed);
                add(HEADER_KEY_ID, identity.key_id);
                add(HEADER_WORKSPACE_ID, identity.workspace_id);
            }
            Decision::PassUnverified => {
                self.count(Counter::AllowedUnverified);
                set(HEADER_KEY_ID, None);
                set(HEADER_WORKSPACE_ID, None);
            }
            Decision::Deny(denial) => {
                self.count(Counter::Denied(denial));
                if denial.is_auth_failure() {
                    self.note_auth_failure(ctx, &facts.client_ip, WasmHost.now_ms());
                }
                let rate_headers = match self.outcomes.borrow().get(&ctx).and_then(|o| o.rate) {
                    Some((plan, status)) => {
                        let mut h = rate_limit_headers(self.config.limits.headers, plan, status);
                        if let Denial::RateLimited(_) = denial {
                            h.push(("retry-after", status.reset_s.max(1).to_string()));
                        }
                        h
                    }
                    None => Vec::new(),
                };
                let mut headers = vec![("content-type", "application/json")];
                headers.extend_from_slice(denial.extra_headers());
                headers.extend(rate_headers.iter().map(|(k, v)| (*k, v.as_str())));
                let body = denial.body();
                let status_code = denial.status(self.config.limits.quota_status);
                if let Err(status) =
                    hostcalls::send_http_response(status_code, headers, Some(body.as_bytes()))
                {
                    log::error!(
                        "[ctx {ctx}] cannot send the {} denial: {}",
                        denial.code(),
                        describe(status)
                    );
                }
                return Action::Pause;
            }
        }
        if self.config.hide_key && !key_header.is_empty() {
            set(key_header, None);
        }
        if paused {
            if let Err(status) = hostcalls::resume_http_request() {
                log::error!(
                    "[ctx {ctx}] cannot resume the request: {}",
                    describe(status)
                );
            }
        }
        Action::Continue
    }

    /// Root tick: lookups whose dispatcher went away are sent again if someone still waits.
    pub fn rescue_orphans(&self, root_ctx: u32) {
        let orphans = self.lookups.borrow_mut().orphans();
        for hash in orphans {
            self.count(Counter::LookupRescued);
            if !self.dispatch(root_ctx, hash, Owner::Root) {
                let waiters = self.lookups.borrow_mut().abandon(hash);
                let now = WasmHost.now_ms();
                self.resolve(root_ctx, hash, Verdict::Unavailable, waiters, now);
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
        }
        self.outcomes.borrow_mut().remove(&ctx)
    }

    /// Adds one record to this worker's batch, handing the batch over when full.
    pub fn push_record(&self, ctx: u32, record: &UsageRecord) {
        let (stored, full) = {
            let mut records = self.records.borrow_mut();
            let stored = records.push(|out| record.write_json(out));
            (stored, records.len() >= RECORD_BATCH)
        };
        if !stored {
            self.counts.borrow_mut().add(Counter::RecordDropped);
        }
        if full || !stored {
            self.flush_records(ctx);
        }
    }

    /// Hands the batch to the usage service through the shared queue.
    pub fn flush_records(&self, ctx: u32) {
        let (batch, count) = {
            let mut records = self.records.borrow_mut();
            if records.is_empty() {
                return;
            }
            let count = records.len();
            (records.finish(), count)
        };
        let queue = match self.queue_id.get() {
            Some(id) => Some(id),
            None => match hostcalls::resolve_shared_queue(&self.vm_id, USAGE_QUEUE) {
                Ok(Some(id)) => {
                    self.queue_id.set(Some(id));
                    Some(id)
                }
                Ok(None) | Err(_) => None,
            },
        };
        let delivered = match queue {
            Some(id) => match hostcalls::enqueue_shared_queue(id, Some(&batch)) {
                Ok(()) => true,
                Err(status) => {
                    log::warn!(
                        "[ctx {ctx}] usage queue refused a batch: {}",
                        describe(status)
                    );
                    self.queue_id.set(None);
                    false
                }
            },
            None => {
                log::warn!(
                    "[ctx {ctx}] no usage service: queue '{USAGE_QUEUE}' in vm '{}' not found; \
                     {count} records dropped (add the envoy.bootstrap.wasm service)",
                    self.vm_id
                );
                false
            }
        };
        let counter = if delivered {
            Counter::RecordQueued
        } else {
            Counter::RecordDropped
        };
        self.counts.borrow_mut().add_n(counter, count as u64);
    }
}

/// Makes `ctx` the effective context again after acting for another one.
fn restore_effective_context(ctx: u32) {
    if let Err(status) = hostcalls::set_effective_context(ctx) {
        log::error!(
            "[ctx {ctx}] cannot restore the effective context: {}",
            describe(status)
        );
    }
}

pub fn request_facts(headers: &[(&str, &[u8])], client_ip: String) -> RequestFacts {
    let path = header_map::get(headers, ":path").unwrap_or_default();
    RequestFacts {
        method: header_map::text(headers, ":method"),
        path: path_only(&String::from_utf8_lossy(path)).to_string(),
        client_ip,
    }
}

/// `ip` if the request's headers gave it, else Envoy's `source.address` (a host call, made only
/// when the address is really needed).
pub fn client_ip_or_downstream(ip: &str) -> Cow<'_, str> {
    if ip.is_empty() {
        Cow::Owned(downstream_ip())
    } else {
        Cow::Borrowed(ip)
    }
}

/// The downstream peer's IP (Envoy's `source.address` without the port); empty if unknown.
pub fn downstream_ip() -> String {
    hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()
        .map(|b| ip_of(&String::from_utf8_lossy(&b)).to_string())
        .unwrap_or_default()
}
