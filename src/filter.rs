//! The proxy-wasm adapter: root context (configuration, tick, rescued lookups) and the HTTP
//! context (one per request). Decisions, caching and coalescing live in host-free modules; this
//! file only moves data between them and Envoy.
//!
//! Re-entrancy: Envoy defers `continueDecoding` and local replies until the current VM call
//! returns, so resuming or answering another request from here never calls back into the VM
//! while a `RefCell` is borrowed. Borrows are still kept short and never held across host calls.

use crate::allowed::path_only;
use crate::answer::{classify, LookupAnswer};
use crate::api_key::{parse_key, KeyHash};
use crate::cache::{CacheEntry, CacheLookup, KeyCache, Known};
use crate::config::{FailureMode, FilterConfig};
use crate::decision::{decide, Decision, RequestFacts};
use crate::denial::Denial;
use crate::host::Clock;
use crate::key_source::{read_key, KeyRead};
use crate::lookups::{Join, Lookups, Owner, Waiter};
use crate::metrics::{self, Counter, PendingCounts};
use crate::wasm_host::{describe, WasmHost};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType, MetricType};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

pub const HEADER_KEY_ID: &str = "x-tollgate-key-id";
pub const HEADER_WORKSPACE_ID: &str = "x-tollgate-workspace-id";
const TICK: Duration = Duration::from_millis(250);
/// While the control plane fails, a stale key is trusted this long before asking again.
const FAILURE_BACKOFF_MS: u64 = 1_000;
/// Distinct keys with a callout in flight on one worker (bounded memory).
const MAX_IN_FLIGHT: usize = 4_096;

/// Per-worker state shared by the root context and every request on that worker.
pub struct Worker {
    config: Rc<FilterConfig>,
    authorization: String,
    cache: RefCell<KeyCache>,
    lookups: RefCell<Lookups>,
    counts: RefCell<PendingCounts>,
}

/// What a lookup's waiters are told.
enum Verdict {
    Known(CacheEntry),
    Unavailable,
}

impl Worker {
    fn new(config: FilterConfig) -> Worker {
        Worker {
            authorization: format!("Bearer {}", config.filter_token),
            cache: RefCell::new(KeyCache::new(
                config.cache.max_keys,
                config.cache.max_invalid_keys,
            )),
            lookups: RefCell::new(Lookups::new(MAX_IN_FLIGHT)),
            counts: RefCell::new(PendingCounts::default()),
            config: Rc::new(config),
        }
    }

    fn count(&self, counter: Counter) {
        self.counts.borrow_mut().add(counter);
    }

    fn on_request_headers(&self, ctx: u32) -> Action {
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(status) => {
                log::error!(
                    "[ctx {ctx}] cannot read request headers: {}",
                    describe(status)
                );
                return self.apply(
                    ctx,
                    Decision::Deny(Denial::VerificationUnavailable),
                    None,
                    false,
                );
            }
        };
        let (key, key_header) = match read_key(&self.config.key_sources, &headers) {
            KeyRead::Missing => {
                return self.apply(ctx, Decision::Deny(Denial::MissingKey), None, false)
            }
            KeyRead::Repeated => {
                return self.apply(ctx, Decision::Deny(Denial::InvalidKey), None, false)
            }
            KeyRead::Present { key, header } => (key, header),
        };
        let hash = match parse_key(key) {
            Ok(hash) => hash,
            Err(_) => return self.apply(ctx, Decision::Deny(Denial::InvalidKey), None, false),
        };
        let facts = request_facts(&headers);
        let now = WasmHost.now_ms();
        let cached = self.cache.borrow_mut().lookup(&WasmHost, hash, now);
        match cached {
            CacheLookup::Fresh(entry) => {
                self.count(Counter::CacheHit);
                let decision = self.decide_known(&entry, now, &facts);
                self.apply(ctx, decision, Some(key_header), false)
            }
            CacheLookup::Stale(entry) if entry.retry_after_ms > now => {
                // The control plane failed a moment ago: last known state, no new callout.
                let decision = self.decide_known(&entry, now, &facts);
                self.apply(ctx, decision, Some(key_header), false)
            }
            _ => {
                self.count(Counter::CacheMiss);
                let waiter = Waiter {
                    context_id: ctx,
                    request: facts,
                    key_header: key_header.to_string(),
                };
                let join = self.lookups.borrow_mut().join(hash, waiter);
                match join {
                    Join::Dispatch => {
                        if self.dispatch(ctx, hash, Owner::Context(ctx)) {
                            Action::Pause
                        } else {
                            let waiters = self.lookups.borrow_mut().abandon(hash);
                            self.resolve(ctx, hash, Verdict::Unavailable, waiters, now);
                            Action::Pause
                        }
                    }
                    Join::Wait => Action::Pause,
                    Join::Full => {
                        log::warn!(
                            "[ctx {ctx}] too many key lookups in flight; key {}",
                            hash.short()
                        );
                        let decision = self.decide_unavailable(hash, now, &request_facts(&headers));
                        self.apply(ctx, decision, Some(key_header), false)
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
    fn on_lookup_answer(&self, ctx: u32, token: u32) {
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
            let decision = match &verdict {
                Verdict::Known(entry) => self.decide_known(entry, now, &waiter.request),
                Verdict::Unavailable => self.decide_unavailable(hash, now, &waiter.request),
            };
            self.apply(waiter.context_id, decision, Some(&waiter.key_header), true);
        }
        if let Err(status) = hostcalls::set_effective_context(ctx) {
            log::warn!(
                "[ctx {ctx}] cannot restore the effective context: {}",
                describe(status)
            );
        }
    }

    fn decide_known(&self, entry: &CacheEntry, now: u64, facts: &RequestFacts) -> Decision {
        match &entry.known {
            Known::Valid(state) => decide(state, now, facts),
            Known::Unknown => Decision::Deny(Denial::InvalidKey),
        }
    }

    /// The control plane did not answer: last known state if any, else the failure mode.
    fn decide_unavailable(&self, hash: KeyHash, now: u64, facts: &RequestFacts) -> Decision {
        let cached = self.cache.borrow_mut().lookup(&WasmHost, hash, now);
        match cached {
            CacheLookup::Fresh(entry) | CacheLookup::Stale(entry) => {
                self.decide_known(&entry, now, facts)
            }
            CacheLookup::Miss => match self.config.failure_mode {
                FailureMode::Closed => Decision::Deny(Denial::VerificationUnavailable),
                FailureMode::Open => Decision::PassUnverified,
            },
        }
    }

    /// Carries out a decision on the effective context's request.
    fn apply(
        &self,
        ctx: u32,
        decision: Decision,
        key_header: Option<&str>,
        paused: bool,
    ) -> Action {
        let set = |name: &str, value: Option<&str>| {
            if let Err(status) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value)
            {
                log::error!(
                    "[ctx {ctx}] cannot set request header {name}: {}",
                    describe(status)
                );
            }
        };
        let pass = match decision {
            Decision::Pass(identity) => {
                self.count(Counter::Allowed);
                // Set, not add: a client-sent x-tollgate-* header is replaced, never trusted.
                set(HEADER_KEY_ID, Some(&identity.key_id));
                set(HEADER_WORKSPACE_ID, Some(&identity.workspace_id));
                true
            }
            Decision::PassUnverified => {
                self.count(Counter::AllowedUnverified);
                set(HEADER_KEY_ID, None);
                set(HEADER_WORKSPACE_ID, None);
                true
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
                false
            }
        };
        if !pass {
            return Action::Pause;
        }
        if self.config.hide_key {
            if let Some(header) = key_header {
                set(header, None);
            }
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
    fn rescue_orphans(&self, root_ctx: u32) {
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
}

fn request_facts(headers: &[(String, Vec<u8>)]) -> RequestFacts {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    RequestFacts {
        method: get(":method"),
        path: path_only(&get(":path")).to_string(),
    }
}

pub struct TollgateRoot {
    context_id: u32,
    worker: Option<Rc<Worker>>,
    metric_ids: Vec<u32>,
}

impl TollgateRoot {
    pub fn new(context_id: u32) -> TollgateRoot {
        TollgateRoot {
            context_id,
            worker: None,
            metric_ids: Vec::new(),
        }
    }

    fn flush_metrics(&self, worker: &Worker) {
        let deltas = worker.counts.borrow_mut().drain();
        for (index, delta) in deltas {
            if let Some(id) = self.metric_ids.get(index) {
                if let Err(status) = hostcalls::increment_metric(*id, delta as i64) {
                    log::warn!(
                        "[ctx {}] metric update failed: {}",
                        self.context_id,
                        describe(status)
                    );
                }
            }
        }
    }
}

impl Context for TollgateRoot {
    fn on_http_call_response(&mut self, token: u32, _: usize, _: usize, _: usize) {
        if let Some(worker) = &self.worker {
            worker.on_lookup_answer(self.context_id, token);
        }
    }
}

impl RootContext for TollgateRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let ctx = self.context_id;
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log::error!(
                    "[ctx {ctx}] tollgate: cannot read the plugin configuration: {}",
                    describe(status)
                );
                return false;
            }
        };
        let config = match FilterConfig::parse(&bytes, |name| std::env::var(name).ok()) {
            Ok(config) => config,
            Err(e) => {
                log::error!("[ctx {ctx}] tollgate: bad plugin configuration: {e}");
                return false;
            }
        };
        let mut ids = Vec::new();
        for (_, name) in metrics::all() {
            match hostcalls::define_metric(MetricType::Counter, &name) {
                Ok(id) => ids.push(id),
                Err(status) => {
                    log::error!(
                        "[ctx {ctx}] tollgate: cannot define metric {name}: {}",
                        describe(status)
                    );
                    return false;
                }
            }
        }
        if let Err(status) = hostcalls::set_tick_period(TICK) {
            log::error!(
                "[ctx {ctx}] tollgate: cannot set the tick period: {}",
                describe(status)
            );
            return false;
        }
        log::info!(
            "[ctx {ctx}] tollgate: configured; control plane {}, cache ttl {:?}, failure mode {:?}",
            config.control_plane,
            config.cache.ttl,
            config.failure_mode
        );
        self.metric_ids = ids;
        self.worker = Some(Rc::new(Worker::new(config)));
        true
    }

    fn on_tick(&mut self) {
        if let Some(worker) = self.worker.clone() {
            worker.rescue_orphans(self.context_id);
            self.flush_metrics(&worker);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(TollgateRequest {
            context_id,
            worker: self.worker.clone(),
            paused: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

pub struct TollgateRequest {
    context_id: u32,
    /// `None` only if configuration failed, in which case Envoy should not run requests at all.
    worker: Option<Rc<Worker>>,
    paused: bool,
}

impl Context for TollgateRequest {
    fn on_http_call_response(&mut self, token: u32, _: usize, _: usize, _: usize) {
        if let Some(worker) = &self.worker {
            worker.on_lookup_answer(self.context_id, token);
        }
    }
}

impl HttpContext for TollgateRequest {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(worker) = self.worker.clone() else {
            log::error!("[ctx {}] tollgate is not configured", self.context_id);
            let denial = Denial::VerificationUnavailable;
            let body = denial.body();
            let headers = vec![("content-type", "application/json")];
            if let Err(status) =
                hostcalls::send_http_response(denial.status(), headers, Some(body.as_bytes()))
            {
                log::error!(
                    "[ctx {}] cannot send denial: {}",
                    self.context_id,
                    describe(status)
                );
            }
            return Action::Pause;
        };
        let action = worker.on_request_headers(self.context_id);
        self.paused = action == Action::Pause;
        action
    }

    fn on_log(&mut self) {
        if self.paused {
            if let Some(worker) = &self.worker {
                // Gone before (or after) its answer: stop waiting, hand its callout to the root.
                worker.lookups.borrow_mut().leave(self.context_id);
            }
        }
    }
}
