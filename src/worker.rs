//! Per-worker state shared by the worker's root context and every request on that worker, and
//! the request path that uses it. Decisions, caching, coalescing and records come from
//! host-free modules; this file moves data between them and Envoy.
//!
//! Re-entrancy: Envoy defers `continueDecoding` and local replies until the current VM call
//! returns, so resuming or answering another request from here never calls back into the VM
//! while a `RefCell` is borrowed. Borrows are still kept short and never held across host calls.

use crate::allowed::path_only;
use crate::answer::{classify, LookupAnswer};
use crate::api_key::{parse_key, KeyHash};
use crate::cache::{CacheEntry, CacheLookup, KeyCache, Known};
use crate::config::{FailureMode, FilterConfig};
use crate::decision::{decide, Decision, Identity, RequestFacts};
use crate::denial::Denial;
use crate::host::Clock;
use crate::key_source::{read_key, KeyRead};
use crate::lookups::{Join, Lookups, Owner, Waiter};
use crate::metrics::{Counter, PendingCounts};
use crate::usage_service::USAGE_QUEUE;
use crate::wasm_host::{describe, WasmHost};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

pub const HEADER_KEY_ID: &str = "x-tollgate-key-id";
pub const HEADER_WORKSPACE_ID: &str = "x-tollgate-workspace-id";
/// While the control plane fails, a stale key is trusted this long before asking again.
const FAILURE_BACKOFF_MS: u64 = 1_000;
/// Distinct keys with a callout in flight on one worker (bounded memory).
const MAX_IN_FLIGHT: usize = 4_096;
/// Records are handed to the usage service in batches of at most this many.
const RECORD_BATCH: usize = 64;

/// How a request with a known key was decided, read back by its context in `on_log`.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub identity: Identity,
    pub denial: Option<Denial>,
}

/// What a lookup's waiters are told.
enum Verdict {
    Known(CacheEntry),
    Unavailable,
}

/// Request facts captured once from the request headers.
pub struct RequestHead<'a> {
    pub headers: &'a [(String, Vec<u8>)],
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
    outcomes: RefCell<HashMap<u32, Outcome>>,
    /// JSON lines not yet handed to the usage service (at most `RECORD_BATCH`).
    records: RefCell<(Vec<u8>, usize)>,
    vm_id: String,
    queue_id: Cell<Option<u32>>,
}

impl Worker {
    pub fn new(config: FilterConfig, vm_id: String) -> Worker {
        Worker {
            authorization: format!("Bearer {}", config.filter_token),
            cache: RefCell::new(KeyCache::new(
                config.cache.max_keys,
                config.cache.max_invalid_keys,
            )),
            lookups: RefCell::new(Lookups::new(MAX_IN_FLIGHT)),
            counts: RefCell::new(PendingCounts::default()),
            outcomes: RefCell::new(HashMap::new()),
            records: RefCell::new((Vec::new(), 0)),
            vm_id,
            queue_id: Cell::new(None),
            config: Rc::new(config),
        }
    }

    pub fn count(&self, counter: Counter) {
        self.counts.borrow_mut().add(counter);
    }

    pub fn on_request_headers(&self, ctx: u32, head: &RequestHead) -> Action {
        let (key, key_header) = match read_key(&self.config.key_sources, head.headers) {
            KeyRead::Missing => return self.deny(ctx, Denial::MissingKey),
            KeyRead::Repeated => return self.deny(ctx, Denial::InvalidKey),
            KeyRead::Present { key, header } => (key, header),
        };
        let hash = match parse_key(key) {
            Ok(hash) => hash,
            Err(_) => return self.deny(ctx, Denial::InvalidKey),
        };
        let now = head.now_ms;
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
        let path = format!("/v1/filter/keys/{}", hash.to_hex());
        let upstream = &self.config.control_plane;
        let headers = upstream.get_headers(&path, &self.authorization);
        match hostcalls::dispatch_http_call(
            &upstream.cluster,
            headers,
            None,
            vec![],
            upstream.timeout,
        ) {
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
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, 64 * 1024)
            .ok()
            .flatten();
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
        if let Err(status) = hostcalls::set_effective_context(ctx) {
            log::warn!(
                "[ctx {ctx}] cannot restore the effective context: {}",
                describe(status)
            );
        }
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
        match &entry.known {
            Known::Valid(state) => {
                let decision = decide(state, now, facts);
                let identity = Identity {
                    key_id: state.wire.key_id.clone(),
                    workspace_id: state.wire.workspace_id.clone(),
                };
                let denial = match &decision {
                    Decision::Deny(denial) => Some(*denial),
                    _ => None,
                };
                self.outcomes
                    .borrow_mut()
                    .insert(ctx, Outcome { identity, denial });
                self.apply(ctx, decision, key_header, paused)
            }
            Known::Unknown => {
                self.apply(ctx, Decision::Deny(Denial::InvalidKey), key_header, paused)
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
                self.apply(ctx, decision, key_header, paused)
            }
        }
    }

    fn deny(&self, ctx: u32, denial: Denial) -> Action {
        self.apply(ctx, Decision::Deny(denial), "", false)
    }

    /// Carries out a decision on the effective context's request.
    fn apply(&self, ctx: u32, decision: Decision, key_header: &str, paused: bool) -> Action {
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
                // Set, not add: a client-sent x-tollgate-* header is replaced, never trusted.
                set(HEADER_KEY_ID, Some(&identity.key_id));
                set(HEADER_WORKSPACE_ID, Some(&identity.workspace_id));
            }
            Decision::PassUnverified => {
                self.count(Counter::AllowedUnverified);
                set(HEADER_KEY_ID, None);
                set(HEADER_WORKSPACE_ID, None);
            }
            Decision::Deny(denial) => {
                self.count(Counter::Denied(denial));
                let mut headers = vec![("content-type", "application/json")];
                headers.extend_from_slice(denial.extra_headers());
                let body = denial.body();
                if let Err(status) =
                    hostcalls::send_http_response(denial.status(), headers, Some(body.as_bytes()))
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
    pub fn push_record(&self, ctx: u32, line: &[u8]) {
        let full = {
            let mut records = self.records.borrow_mut();
            records.0.extend_from_slice(line);
            records.0.push(b'\n');
            records.1 += 1;
            records.1 >= RECORD_BATCH
        };
        if full {
            self.flush_records(ctx);
        }
    }

    /// Hands the batch to the usage service through the shared queue.
    pub fn flush_records(&self, ctx: u32) {
        let (batch, count) = {
            let mut records = self.records.borrow_mut();
            if records.1 == 0 {
                return;
            }
            (
                std::mem::take(&mut records.0),
                std::mem::take(&mut records.1),
            )
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

pub fn request_facts(headers: &[(String, Vec<u8>)]) -> RequestFacts {
    RequestFacts {
        method: header_text(headers, ":method"),
        path: path_only(&header_text(headers, ":path")).to_string(),
    }
}

pub fn header_text(headers: &[(String, Vec<u8>)], name: &str) -> String {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}
