//! One stream through the native filter: reads the request once, lets its worker's core
//! decide, carries out the decision, and at the end turns a request with a known key into a
//! usage record and the filter-state summary. The same steps as the wasm build's
//! `src/request.rs`, over the dynamic-module ABI. No decision is made here.

use crate::abi::{AttributeId, EnvoyHttpHeader, HttpHeaderType};
use crate::envoy::{header_bytes, header_pairs, CalloutAnswer, Filter};
use crate::plugin::Plugin;
use crate::resumed::Resumed;
use crate::worker_slot::{gather, now_ns, Caller, Decided, NativeHost, NativeWorker, WorkerSlot};
use std::sync::Arc;
use tollgate_core::action::{is_reserved_header, Action, HeaderChange, LocalReply};
use tollgate_core::client_ip::{header_client_ip, ip_of};
use tollgate_core::denial::Denial;
use tollgate_core::header_map;
use tollgate_core::limit_headers::rate_limit_headers;
use tollgate_core::worker::{request_facts, RequestHead};
use tollgate_core::worker_records::RequestNotes;

/// The filter-state key of the summary (`%FILTER_STATE(tollgate:PLAIN)%` in an access log).
pub const FILTER_STATE_KEY: &str = "tollgate";
/// `%RESPONSE_CODE_DETAILS%` of Tollgate's local replies.
const DENIAL_DETAILS: &str = "tollgate_denied";

thread_local! {
    /// The array Envoy writes a request's header entries into (its pointers are Envoy's).
    static HEADER_ENTRIES: std::cell::Cell<Vec<EnvoyHttpHeader>> =
        const { std::cell::Cell::new(Vec::new()) };
}

/// What a request hook does once the worker's lock is released.
pub enum Verdict {
    Continue,
    Pause,
    Reply(LocalReply),
}

pub struct RequestFilter {
    plugin: Arc<Plugin>,
    worker: usize,
    ctx: u32,
    /// The request waited for an answer (its context is in the worker's `waiting`).
    paused: bool,
    /// The core has been told the request is over.
    finished: bool,
    notes: RequestNotes,
}

impl RequestFilter {
    pub fn new(plugin: Arc<Plugin>, filter: Filter) -> RequestFilter {
        let (worker, _) = plugin.worker(filter.worker_index());
        let ctx = plugin.new_context();
        RequestFilter {
            plugin,
            worker,
            ctx,
            paused: false,
            finished: false,
            notes: RequestNotes::default(),
        }
    }

    fn slot(&self) -> &WorkerSlot {
        self.plugin.worker(self.worker as u32).1
    }

    pub fn on_request_headers(&mut self, filter: Filter) -> Verdict {
        self.notes.start_ns = now_ns();
        // The entries' array is reused from request to request on this thread.
        let mut raw = HEADER_ENTRIES.with(|entries| entries.take());
        let verdict = self.read_request(filter, &mut raw);
        HEADER_ENTRIES.with(|entries| entries.replace(raw));
        verdict
    }

    /// The request headers into `raw`, then the core's decision on them.
    fn read_request(&mut self, filter: Filter, raw: &mut Vec<EnvoyHttpHeader>) -> Verdict {
        if !filter.headers_into(HttpHeaderType::REQUEST_HEADER, raw) {
            log::error!("[ctx {}] cannot read the request headers", self.ctx);
            return Verdict::Reply(unavailable());
        }
        // SAFETY: Envoy's header pointers, valid until the first header change below (every
        // change is made after the last read of `headers`).
        let headers = header_pairs(raw.iter().map(|h| unsafe { header_bytes(h) }));
        // Removed before Tollgate's own are added, so a client cannot spoof them.
        let reserved: Vec<String> = headers
            .iter()
            .filter(|(name, _)| is_reserved_header(name))
            .map(|(name, _)| name.to_string())
            .collect();
        // Borrowed, not cloned: every worker would write the one shared count.
        let plugin = &*self.plugin;
        let config = &plugin.config;
        let client_ip = header_client_ip(config, &headers);
        // With IP blocking on, the address is read now (a plain call here): a request decided
        // later, on another thread, must not need its stream to tell it.
        let client_ip = if client_ip.is_empty() && config.ip_blocking.is_some() {
            filter
                .attribute_string(AttributeId::SOURCE_ADDRESS)
                .map(|a| ip_of(&a).to_string())
                .unwrap_or_default()
        } else {
            client_ip
        };
        let request_id = if config.usage.enabled {
            header_map::text(&headers, "x-request-id")
        } else {
            String::new()
        };
        let head = RequestHead {
            headers: &headers,
            facts: request_facts(&headers, client_ip),
            now_ms: self.notes.start_ns / 1_000_000,
        };
        let ctx = self.ctx;
        let (verdict, paused) = self.slot().with(|worker| {
            let host = NativeHost::new(plugin, worker, Caller::Stream { filter, ctx });
            let mut decided = Decided::new();
            let action =
                worker
                    .core
                    .on_request_headers(&host, ctx, &head, &mut gather(&mut decided));
            // Its own decision may have come at once (a callout that could not be sent).
            let own = take_own(&mut decided, ctx);
            worker.deliver(decided);
            for name in &reserved {
                filter.set_header(HttpHeaderType::REQUEST_HEADER, name, None);
            }
            match (action, own) {
                (Action::Wait, Some(resumed)) => (carry_out_here(filter, resumed), false),
                (Action::Wait, None) => match filter.new_scheduler() {
                    Some(scheduler) => {
                        worker.wait(ctx, scheduler);
                        (Verdict::Pause, true)
                    }
                    None => {
                        log::error!("[ctx {ctx}] Envoy gave no scheduler to wait with");
                        (Verdict::Reply(unavailable()), false)
                    }
                },
                (Action::Pass(pass), _) => {
                    for change in pass.header_changes() {
                        apply(filter, ctx, change);
                    }
                    (Verdict::Continue, false)
                }
                (Action::Deny(reply), _) => (Verdict::Reply(reply), false),
            }
        });
        self.notes.request_id = request_id;
        self.notes.facts = Some(head.facts);
        self.paused = paused;
        verdict
    }

    /// A decision for this waiting request arrived (its scheduler's event).
    /// A decision for this waiting request arrived (its scheduler's event): what to do once
    /// the hook's hold on the stream ends (`resume`).
    pub fn on_scheduled(&mut self, filter: Filter) -> Option<Verdict> {
        let ctx = self.ctx;
        let resumed = self.slot().with(|worker| worker.take_resumed(ctx))?;
        Some(carry_out_here(filter, resumed))
    }

    /// The answer to a callout this stream sent. The other requests it decides are woken
    /// through their schedulers; this stream's own decision, when it waited for the answer,
    /// comes back to be carried out at once (`resume`), a trip through the scheduler fewer
    /// on a never-seen key's request.
    pub fn on_callout_answer(
        &mut self,
        filter: Filter,
        id: u64,
        answer: CalloutAnswer,
    ) -> Option<Verdict> {
        let ctx = self.ctx;
        let plugin = &*self.plugin;
        let own = self.slot().with(|worker: &NativeWorker| {
            let token = worker.stream_callout_answered(ctx, id)?;
            let host = NativeHost::new(plugin, worker, Caller::Stream { filter, ctx });
            let mut decided = Decided::new();
            worker.core.on_callout_answer(
                &host,
                ctx,
                token,
                answer.status.as_deref(),
                Some(&answer.body),
                &mut gather(&mut decided),
            );
            let own = take_own(&mut decided, ctx);
            worker.deliver(decided);
            own
        });
        own.map(|resumed| carry_out_here(filter, resumed))
    }

    pub fn on_response_headers(&mut self, filter: Filter) {
        let ctx = self.ctx;
        let plugin = &*self.plugin;
        let usage = plugin.config.usage.enabled;
        let mode = plugin.config.limits.headers;
        let known = self.slot().with(|worker| {
            let outcome = worker.core.outcome(ctx)?;
            // Denials carry these headers already (sent with the local reply).
            if let (None, Some(view)) = (outcome.denial, outcome.rate) {
                for (name, value) in rate_limit_headers(mode, &view) {
                    filter.set_header(HttpHeaderType::RESPONSE_HEADER, name, Some(&value));
                }
            }
            Some(())
        });
        if known.is_some() && usage {
            self.notes.first_byte_ns = now_ns();
            self.notes.response_code = filter
                .header(HttpHeaderType::RESPONSE_HEADER, ":status")
                .and_then(|s| std::str::from_utf8(&s).ok()?.parse().ok())
                .unwrap_or(0);
        }
    }

    /// The stream is complete (before the access log is written): the record and summary
    /// (`Worker::end_request`).
    pub fn on_stream_complete(&mut self, filter: Filter) {
        if self.finished {
            return;
        }
        self.finished = true;
        let ctx = self.ctx;
        let plugin = &*self.plugin;
        let read_code = || {
            filter
                .attribute_int(AttributeId::RESPONSE_CODE)
                .unwrap_or(0) as u32
        };
        let notes = &self.notes;
        let paused = self.paused;
        let summary = self.slot().with(|worker| {
            let host = NativeHost::new(plugin, worker, Caller::Stream { filter, ctx });
            worker
                .core
                .end_request(&host, ctx, paused, notes, read_code, now_ns)
        });
        if let Some(summary) = summary {
            if !filter.set_filter_state(FILTER_STATE_KEY, summary.as_bytes()) {
                log::debug!("[ctx {ctx}] cannot set filter state");
            }
        }
    }

    /// The stream is destroyed: forget it in the worker; its scheduler is deleted here, after
    /// the lock (no thread can commit to it any more).
    pub fn on_destroy(&mut self) {
        let ctx = self.ctx;
        let paused = self.paused;
        let finished = self.finished;
        let scheduler = self.slot().with(|worker| {
            // Envoy always completes a stream before destroying it; should it not, the core
            // still forgets the request.
            if !finished {
                worker.core.finish(ctx, paused);
            }
            if paused {
                worker.forget(ctx)
            } else {
                None
            }
        });
        drop(scheduler);
    }
}

/// The decision for request `ctx` among `decided`, taken out.
fn take_own(decided: &mut Decided, ctx: u32) -> Option<Resumed> {
    let i = decided.iter().position(|(c, _)| *c == ctx)?;
    Some(decided.swap_remove(i).1)
}

/// Resumes a request that waited, with its decision: on to the upstream, or its denial.
/// Called once no borrow of the stream is held: Envoy may run the stream's next hooks inside.
pub fn resume(filter: Filter, verdict: Verdict) {
    match verdict {
        Verdict::Continue => filter.continue_decoding(),
        Verdict::Reply(reply) => send_denial(filter, 0, &reply),
        Verdict::Pause => {}
    }
}

/// Carries out a decision for the request whose hook is running (the lock may be held:
/// header changes never call back into the module).
fn carry_out_here(filter: Filter, resumed: Resumed) -> Verdict {
    match resumed {
        Resumed::Pass(changes) => {
            for change in &changes {
                apply(filter, 0, change.borrowed());
            }
            Verdict::Continue
        }
        Resumed::Deny(reply) => Verdict::Reply(reply),
    }
}

fn apply(filter: Filter, ctx: u32, change: HeaderChange) {
    let (name, done) = match change {
        HeaderChange::Add(name, value) => (
            name,
            filter.add_header(HttpHeaderType::REQUEST_HEADER, name, value),
        ),
        HeaderChange::Remove(name) => (
            name,
            filter.set_header(HttpHeaderType::REQUEST_HEADER, name, None),
        ),
        HeaderChange::Set(name, value) => (
            name,
            filter.set_header(HttpHeaderType::REQUEST_HEADER, name, Some(value)),
        ),
    };
    if !done {
        log::debug!("[ctx {ctx}] request header {name} unchanged");
    }
}

/// Sends a denial (never with the worker locked: Envoy may finish the stream inside).
pub fn send_denial(filter: Filter, ctx: u32, reply: &LocalReply) {
    let body = reply.body();
    log::trace!("[ctx {ctx}] {} denial", reply.denial.code());
    filter.send_response(
        reply.status,
        &reply.headers(),
        body.as_bytes(),
        DENIAL_DETAILS,
    );
}

/// The local reply when the filter cannot do its work for a request.
pub fn unavailable() -> LocalReply {
    LocalReply::new(
        Denial::VerificationUnavailable,
        429,
        tollgate_core::config::LimitHeaders::None,
        None,
    )
}
