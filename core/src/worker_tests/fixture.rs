//! The fixture of the worker tests: a worker on `FakeHost` and `FakeControlPlane`, requests
//! arriving as their headers, callouts answered as Envoy would answer them (to the context that
//! was called when they were sent, with the token the dispatch returned), the root's ticks.

use super::control_plane::FakeControlPlane;
use crate::action::{Action, HEADER_KEY_ID, HEADER_WORKSPACE_ID};
use crate::api_key::{crc32, encode_checksum};
use crate::config::FilterConfig;
use crate::denial::Denial;
use crate::host::FakeHost;
use crate::lease_wire::LEASES_PATH;
use crate::metrics::Counter;
use crate::worker::{request_facts, RequestHead, Worker};
use std::collections::HashSet;

pub(super) const ROOT: u32 = 1;
pub(super) const T0: u64 = 1_795_000_000_000;

/// A well-formed key, distinct for each `n`.
pub(super) fn key(n: u32) -> String {
    let body = format!("tg_{:0>33}", format!("k{n}"));
    let checksum = encode_checksum(crc32(body.as_bytes()));
    format!("{body}{}", String::from_utf8_lossy(&checksum))
}

/// A lookup answer for a key of workspace `ws`, with `extra` JSON fields.
pub(super) fn state(key_id: &str, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(",{extra}")
    };
    format!(r#"{{"key_id":"{key_id}","workspace_id":"ws_1","active":true{extra}}}"#)
}

/// What happened to a request, owned so tests can keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seen {
    Pass {
        identity: Option<String>,
        headers: Vec<String>,
    },
    Deny {
        status: u32,
        code: &'static str,
        headers: Vec<(String, String)>,
    },
    Wait,
}

impl Seen {
    pub(super) fn of(action: Action) -> Seen {
        match action {
            Action::Wait => Seen::Wait,
            Action::Deny(reply) => Seen::Deny {
                status: reply.status,
                code: reply.denial.code(),
                headers: reply
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            Action::Pass(pass) => Seen::Pass {
                identity: pass.identity.as_ref().map(|s| s.wire.key_id.clone()),
                headers: pass.header_changes().map(|c| format!("{c:?}")).collect(),
            },
        }
    }

    pub(super) fn status(&self) -> u32 {
        match self {
            Seen::Pass { .. } => 200,
            Seen::Deny { status, .. } => *status,
            Seen::Wait => 0,
        }
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        match self {
            Seen::Deny { headers, .. } => headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

pub(super) fn passed(key_id: &str) -> Seen {
    Seen::Pass {
        identity: Some(key_id.to_string()),
        headers: vec![
            format!("Add({HEADER_KEY_ID:?}, {key_id:?})"),
            format!("Add({HEADER_WORKSPACE_ID:?}, \"ws_1\")"),
            "Remove(\"x-api-key\")".to_string(),
        ],
    }
}

pub(super) fn denied(denial: Denial) -> (u32, &'static str) {
    (denial.status(401), denial.code())
}

pub(super) struct Filter {
    pub(super) host: FakeHost,
    pub(super) worker: Worker,
    /// Requests that waited and were decided, with the context current when they were.
    pub(super) resumed: Vec<(u32, u32, Seen)>,
    /// Answers lease callouts at once (`serve_leases`) unless `cp_down`.
    pub(super) cp: FakeControlPlane,
    /// Lease callouts answered (their tokens).
    pub(super) served: HashSet<u32>,
    /// Lease callouts are answered 503, as Envoy answers for a control plane that is down.
    pub(super) cp_down: bool,
    /// Lease callouts wait for `serve_leases` instead of being answered at once.
    pub(super) hold_leases: bool,
}

impl Filter {
    pub(super) fn new(config: &str) -> Filter {
        let config = FilterConfig::parse(config.as_bytes(), |_| Some("t0k".into())).unwrap();
        Filter {
            host: FakeHost::at(T0).with_queue(),
            worker: Worker::new(config, "i_test".into(), ROOT, 7),
            resumed: Vec::new(),
            cp: FakeControlPlane::new(),
            served: HashSet::new(),
            cp_down: false,
            hold_leases: false,
        }
    }

    pub(super) fn plain() -> Filter {
        Filter::new(r#"{"control_plane":{"cluster":"cp"}}"#)
    }

    /// A request with these headers on context `ctx` (current while it runs).
    pub(super) fn request_with(&mut self, ctx: u32, headers: &[(&str, &str)], ip: &str) -> Seen {
        self.request_to(ctx, "GET", "/v1/things/1", headers, ip)
    }

    /// A request for `method` and `path` with these headers on context `ctx`.
    pub(super) fn request_to(
        &mut self,
        ctx: u32,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        ip: &str,
    ) -> Seen {
        self.host.current.set(ctx);
        self.host.entered.set(ctx);
        let mut all: Vec<(&str, &[u8])> =
            vec![(":method", method.as_bytes()), (":path", path.as_bytes())];
        all.extend(headers.iter().map(|(k, v)| (*k, v.as_bytes())));
        let head = RequestHead {
            headers: &all,
            facts: request_facts(&all, ip.to_string()),
            now_ms: self.host.now_ms.get(),
        };
        let (host, resumed) = (&self.host, &mut self.resumed);
        let action = self
            .worker
            .on_request_headers(host, ctx, &head, &mut |id, action| {
                resumed.push((id, host.current.get(), Seen::of(action)))
            });
        let seen = Seen::of(action);
        if seen != Seen::Wait || self.hold_leases {
            return seen;
        }
        // A request waiting for a lease is decided once the control plane answers.
        if !self.serve_leases() {
            return seen;
        }
        match self.resumed.iter().position(|(id, _, _)| *id == ctx) {
            Some(i) => {
                let (id, current, seen) = self.resumed.remove(i);
                assert_eq!(id, current, "a waiter is decided in its own context");
                seen
            }
            None => Seen::Wait,
        }
    }

    /// The control plane answers every lease callout not answered yet (and those the answers
    /// lead to), to the context that sent it.
    pub(super) fn serve_leases(&mut self) -> bool {
        let mut served = false;
        loop {
            let pending = self
                .host
                .unanswered(&self.served, |c| c.path == LEASES_PATH);
            if pending.is_empty() {
                return served;
            }
            served = true;
            for callout in pending {
                self.served.insert(callout.token);
                let (status, body) = if self.cp_down {
                    ("503", "upstream connect error".to_string())
                } else {
                    (
                        "200",
                        self.cp.answer(callout.body.as_deref().unwrap_or_default()),
                    )
                };
                self.deliver(callout.ctx, callout.token, status, &body);
            }
        }
    }

    pub(super) fn request(&mut self, ctx: u32, key: &str) -> Seen {
        self.request_with(ctx, &[("x-api-key", key)], "10.0.0.1")
    }

    /// Envoy answers lookup `token` (to `ctx`, which it makes current); the control plane
    /// learns the key's budgets from the answer, and lease callouts are answered.
    pub(super) fn answer(&mut self, ctx: u32, token: u32, status: &str, body: &str) {
        self.cp.learn(body);
        self.deliver(ctx, token, status, body);
        if !self.hold_leases {
            self.serve_leases();
        }
    }

    /// Envoy answers lookup `token` (to `ctx`) with `body` and the first leases the lookup
    /// asked for, granted by the control plane; then lease callouts are answered.
    pub(super) fn answer_with_leases(&mut self, ctx: u32, token: u32, body: &str) {
        let path = self.lookup_path(token);
        let body = self.cp.lookup_answer(&path, body);
        self.deliver(ctx, token, "200", &body);
        if !self.hold_leases {
            self.serve_leases();
        }
    }

    /// The path of lookup callout `token`.
    pub(super) fn lookup_path(&self, token: u32) -> String {
        let callouts = self.host.callouts.borrow();
        let lookup = callouts.iter().find(|c| c.token == token);
        lookup.unwrap().path.clone()
    }

    /// Envoy delivers the answer to callout `token` to `ctx`, which it makes current.
    pub(super) fn deliver(&mut self, ctx: u32, token: u32, status: &str, body: &str) {
        self.host.current.set(ctx);
        self.host.entered.set(ctx);
        let (host, resumed) = (&self.host, &mut self.resumed);
        self.worker.on_callout_answer(
            host,
            ctx,
            token,
            Some(status),
            Some(body.as_bytes()),
            &mut |id, action| resumed.push((id, host.current.get(), Seen::of(action))),
        );
        assert_eq!(
            self.host.current.get(),
            ctx,
            "the answering context is current again"
        );
    }

    /// The root's tick: orphaned lookups sent again, lease callouts sent, records flushed.
    pub(super) fn tick(&mut self) {
        self.host.current.set(ROOT);
        self.host.entered.set(ROOT);
        let (host, resumed) = (&self.host, &mut self.resumed);
        self.worker.rescue_orphans(host, &mut |id, action| {
            resumed.push((id, host.current.get(), Seen::of(action)))
        });
        self.worker.tick_leases(host, &mut |id, action| {
            resumed.push((id, host.current.get(), Seen::of(action)))
        });
        self.worker.flush_records(host, ROOT);
        if !self.hold_leases {
            self.serve_leases();
        }
    }

    pub(super) fn callouts(&self) -> usize {
        self.host.callouts.borrow().len()
    }

    /// The token of the last key lookup sent.
    pub(super) fn last_token(&self) -> u32 {
        let callouts = self.host.callouts.borrow();
        let lookup = callouts.iter().rev().find(|c| c.path != LEASES_PATH);
        lookup.unwrap().token
    }

    pub(super) fn counted(&self, counter: Counter) -> u64 {
        self.worker.counts.borrow().get(counter)
    }

    pub(super) fn take_resumed(&mut self) -> Vec<(u32, Seen)> {
        std::mem::take(&mut self.resumed)
            .into_iter()
            .map(|(id, current, seen)| {
                assert_eq!(id, current, "a waiter is decided in its own context");
                (id, seen)
            })
            .collect()
    }

    /// A key the control plane knows as `state`, cached by a first request (context 99).
    pub(super) fn known(&mut self, n: u32, body: &str) -> String {
        let key = key(n);
        assert_eq!(self.request(99, &key), Seen::Wait);
        self.answer(99, self.last_token(), "200", body);
        self.take_resumed();
        self.worker.finish(99, true);
        key
    }
}

/// A key state with a daily quota of `quota`, none used.
pub(super) fn daily(key_id: &str, quota: u64) -> String {
    state(
        key_id,
        &format!(r#""quotas":{{"daily":{quota}}},"usage":{{"daily":0}}"#),
    )
}

/// The lease callouts sent so far.
pub(super) fn lease_callouts(f: &Filter) -> Vec<crate::host::FakeCallout> {
    f.host
        .callouts
        .borrow()
        .iter()
        .filter(|c| c.path == LEASES_PATH)
        .cloned()
        .collect()
}
