//! The Envoy of the limiters' model (`model.rs`): its workers on one `FakeHost` and
//! `FakeControlPlane`, each op applied as Envoy would apply it, and the reference model every
//! decision is checked against, after every step and once everything is settled.

use super::*;
use crate::worker::Resume;
use serde_json::Value;
use std::collections::HashMap;

const MAX_FAILURES: u64 = 3;
const KEY_ID: &str = "key_m";
/// The client IPs that send the good key; one more sends malformed keys.
const GOOD_IPS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
const BAD_IP: &str = "192.0.2.66";

/// What the reference model knows: what was admitted, when, and each IP's failures.
#[derive(Default)]
struct Reference {
    admitted: u64,
    /// Admitted requests of the key per second (`now_ms / 1000`).
    per_second: HashMap<u64, u64>,
    /// Credits admitted per credit period (its start).
    credits: HashMap<u64, u64>,
    /// Times (ms) of the bad IP's failed authentications.
    failures: Vec<u64>,
}

pub(super) struct Envoy {
    host: FakeHost,
    workers: Vec<Worker>,
    cp: FakeControlPlane,
    cp_down: bool,
    /// Callout token → the worker that sent it.
    owner: HashMap<u32, usize>,
    answered: HashSet<u32>,
    /// Answers Envoy dropped (their context had ended).
    dropped: u64,
    /// The leases granted in those answers.
    dropped_leases: HashSet<String>,
    /// Waiting request context → (worker, client, route).
    waiting: HashMap<u32, (usize, usize, Route)>,
    next_ctx: u32,
    limits: Limits,
    key: String,
    model: Reference,
}

fn root(worker: usize) -> u32 {
    1 + worker as u32
}

impl Envoy {
    /// The Envoy, its clock at `start_ms`.
    pub(super) fn new(limits: Limits, start_ms: u64) -> Envoy {
        let post = limits.credits.map_or(1, |c| c.post);
        let config = format!(
            r#"{{"control_plane":{{"cluster":"cp"}},
                "ip_blocking":{{"max_failures":{MAX_FAILURES},"window":"60s","block_for":"5m"}},
                "usage":{{"routes":[{{"method":"POST","path":"/v1/things","credits":{post}}},
                                    {{"method":"GET","path":"/v1/free","credits":0}}]}}}}"#
        );
        let workers = (0..WORKERS)
            .map(|w| {
                let config = FilterConfig::parse(config.as_bytes(), |_| Some("t0k".into()));
                Worker::new(config.unwrap(), "i_test".into(), root(w), 7 + w as u64)
            })
            .collect();
        let mut cp = FakeControlPlane::new();
        cp.share = true;
        cp.now_ms = start_ms;
        Envoy {
            host: FakeHost::at(start_ms).with_queue(),
            workers,
            cp,
            cp_down: false,
            owner: HashMap::new(),
            answered: HashSet::new(),
            dropped: 0,
            dropped_leases: HashSet::new(),
            waiting: HashMap::new(),
            next_ctx: 100,
            limits,
            key: key(1),
            model: Reference::default(),
        }
    }

    /// The key as the control plane's lookup answers it now.
    fn state(&self) -> String {
        let l = &self.limits;
        let mut fields = vec![format!(
            r#""rate_limits":{{"per_second":{}}},"plan":{{"name":"p","rate_limit_per_second":{}}}"#,
            l.per_second, l.plan_per_second
        )];
        if let Some(quota) = l.quota {
            fields.push(format!(
                r#""quotas":{{"daily":{quota}}},"usage":{{"daily":0}}"#
            ));
        }
        if let Some(c) = l.credits {
            let (start, resets) = period_bounds(c.period, self.now());
            let resets = resets.map_or("null".to_string(), |r| r.to_string());
            fields.push(format!(
                r#""credits":{{"limit":{},"period":"{}","used":0,"period_start_ms":{start},
                   "resets_at_ms":{resets}}}"#,
                c.limit,
                c.period.name()
            ));
        }
        state(KEY_ID, &fields.join(","))
    }

    fn now(&self) -> u64 {
        self.host.now_ms.get()
    }

    /// Runs `call` on `worker` as Envoy would (context `ctx` current), owning the callouts it
    /// sends; the decisions of waiting requests it made, in order.
    fn on<R>(
        &mut self,
        worker: usize,
        ctx: u32,
        call: impl FnOnce(&Worker, &FakeHost, &mut Resume) -> R,
    ) -> (R, Vec<(u32, Seen)>) {
        self.host.current.set(ctx);
        self.host.entered.set(ctx);
        let sent = self.host.callouts.borrow().len();
        let mut resumed = Vec::new();
        let host = &self.host;
        let out = call(&self.workers[worker], host, &mut |id, action| {
            resumed.push((id, Seen::of(action)))
        });
        for c in &self.host.callouts.borrow()[sent..] {
            self.owner.insert(c.token, worker);
        }
        (out, resumed)
    }

    fn request(&mut self, worker: usize, client: usize, route: Route) -> Result<(), TestCaseError> {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        let (key, ip) = match GOOD_IPS.get(client) {
            Some(ip) => (self.key.clone(), *ip),
            None => ("tg_not_a_key".to_string(), BAD_IP),
        };
        let (method, path) = route.method_and_path();
        let all: Vec<(&str, &[u8])> = vec![
            (":method", method.as_bytes()),
            (":path", path.as_bytes()),
            ("x-api-key", key.as_bytes()),
        ];
        let head = RequestHead {
            headers: &all,
            facts: request_facts(&all, ip.to_string()),
            now_ms: self.now(),
        };
        let (seen, resumed) = self.on(worker, ctx, |w, host, resume| {
            Seen::of(w.on_request_headers(host, ctx, &head, resume))
        });
        self.decided(worker, ctx, (client, route), &seen, false)?;
        self.resumed(worker, resumed)
    }

    /// The start of the credit period now (0 without a credit budget).
    fn period(&self) -> u64 {
        let period = self.limits.credits.map(|c| c.period);
        period.map_or(0, |p| period_bounds(p, self.now()).0)
    }

    /// Checks the decision `seen` of request `ctx` against the model, and ends the request.
    fn decided(
        &mut self,
        worker: usize,
        ctx: u32,
        (client, route): (usize, Route),
        seen: &Seen,
        waited: bool,
    ) -> Result<(), TestCaseError> {
        let now = self.now();
        let good = client < GOOD_IPS.len();
        let limits = self.limits;
        match seen {
            Seen::Wait => {
                prop_assert!(good, "a malformed key never waits");
                self.waiting.insert(ctx, (worker, client, route));
                return Ok(());
            }
            Seen::Pass { .. } => {
                prop_assert!(good, "a malformed key passed");
                self.model.admitted += 1;
                *self.model.per_second.entry(now / 1000).or_default() += 1;
                if let Some(quota) = limits.quota {
                    prop_assert!(
                        self.model.admitted <= quota,
                        "{} admitted, daily quota {quota}",
                        self.model.admitted
                    );
                }
                if let Some(c) = limits.credits {
                    let period = self.period();
                    let spent = self.model.credits.entry(period).or_default();
                    *spent += limits.cost(route);
                    prop_assert!(
                        *spent <= c.limit,
                        "{spent} credits admitted in the period from {period}, limit {}",
                        c.limit
                    );
                }
                let second = self.model.per_second[&(now / 1000)];
                let limit = limits.per_second.min(limits.plan_per_second);
                prop_assert!(
                    second <= limit,
                    "{second} admitted in one second, limits {} (key) and {} (plan)",
                    limits.per_second,
                    limits.plan_per_second
                );
            }
            Seen::Deny { status, code, .. } if good => {
                prop_assert!(
                    matches!(
                        *code,
                        "quota_exceeded"
                            | "credits_exhausted"
                            | "key_rate_limited"
                            | "rate_limited"
                            | "verification_unavailable"
                    ),
                    "the good key denied {code}"
                );
                match *code {
                    "verification_unavailable" => prop_assert!(
                        self.cp_down,
                        "verification unavailable with the control plane up"
                    ),
                    "quota_exceeded" => {
                        prop_assert!(limits.quota.is_some(), "quota_exceeded without a quota");
                        prop_assert_eq!(*status, 401);
                    }
                    "credits_exhausted" => {
                        let cost = limits.cost(route);
                        prop_assert!(cost > 0, "a request of {cost} credits refused for credits");
                        prop_assert_eq!(*status, 401);
                        // The denial names the budget's period ("credits monthly").
                        let denial = self.workers[worker].outcome(ctx).and_then(|o| o.denial);
                        let period = limits.credits.map(|c| c.period);
                        prop_assert_eq!(denial, period.map(Denial::CreditsExhausted));
                    }
                    _ => {}
                }
            }
            Seen::Deny { code, .. } => match *code {
                "invalid_key" => self.model.failures.push(now),
                "ip_blocked" => {
                    // Blocked only after max_failures of its own within a window, for 5 min.
                    let recent = self
                        .model
                        .failures
                        .iter()
                        .filter(|&&t| t + 60_000 + 300_000 > now)
                        .count() as u64;
                    prop_assert!(
                        recent >= MAX_FAILURES,
                        "blocked after {recent} failures (max {MAX_FAILURES})"
                    );
                }
                other => prop_assert!(false, "a malformed key denied {other}"),
            },
        }
        self.host.current.set(ctx);
        self.workers[worker].finish(ctx, waited);
        self.host.ended.borrow_mut().insert(ctx);
        Ok(())
    }

    fn resumed(&mut self, worker: usize, resumed: Vec<(u32, Seen)>) -> Result<(), TestCaseError> {
        for (ctx, seen) in resumed {
            let Some((w, client, route)) = self.waiting.remove(&ctx) else {
                prop_assert!(false, "request {ctx} decided twice or never waited");
                continue;
            };
            prop_assert_eq!(w, worker, "a waiter is decided by its own worker");
            prop_assert_ne!(&seen, &Seen::Wait);
            self.decided(w, ctx, (client, route), &seen, true)?;
        }
        Ok(())
    }

    fn answer_all(&mut self) -> Result<(), TestCaseError> {
        loop {
            let pending = self.host.unanswered(&self.answered, |_| true);
            if pending.is_empty() {
                return Ok(());
            }
            for c in pending {
                self.answered.insert(c.token);
                self.cp.now_ms = self.now();
                let (status, body) = if self.cp_down {
                    ("503", "upstream connect error".to_string())
                } else if c.path == LEASES_PATH {
                    ("200", self.cp.answer(c.body.as_deref().unwrap_or_default()))
                } else {
                    let state = self.state();
                    ("200", self.cp.lookup_answer(&c.path, &state))
                };
                let worker = self.owner[&c.token];
                if self.host.ended.borrow().contains(&c.answer_to) {
                    // That context has ended: Envoy drops the answer. The control plane may
                    // have granted a lease the filter never learns of.
                    self.dropped += 1;
                    if status == "200" {
                        self.dropped_leases.extend(granted(&body));
                    }
                    continue;
                }
                // Envoy answers the context it had called when the callout was sent.
                let (_, resumed) = self.on(worker, c.answer_to, |w, host, resume| {
                    w.on_callout_answer(
                        host,
                        c.answer_to,
                        c.token,
                        Some(status),
                        Some(body.as_bytes()),
                        resume,
                    )
                });
                self.resumed(worker, resumed)?;
            }
        }
    }

    fn tick(&mut self, worker: usize) -> Result<(), TestCaseError> {
        let (_, resumed) = self.on(worker, root(worker), |w, host, resume| {
            w.rescue_orphans(host, resume);
            w.tick_leases(host, resume);
            w.flush_records(host, root(worker));
        });
        self.resumed(worker, resumed)
    }

    pub(super) fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Request {
                worker,
                client,
                route,
            } => self.request(worker, client, route)?,
            Op::Answer => self.answer_all()?,
            Op::Tick { worker } => self.tick(worker)?,
            Op::Advance { ms } => self.host.advance(ms),
            Op::ControlPlaneDown(down) => self.cp_down = down,
        }
        self.counted_by_the_control_plane()
    }

    /// The control plane never counts fewer units than were admitted: what was admitted (in
    /// the credit period) and the room it still has add up to the limit at most.
    fn counted_by_the_control_plane(&mut self) -> Result<(), TestCaseError> {
        self.cp.now_ms = self.now();
        if let Some(quota) = self.limits.quota {
            let room = self.cp.room(KEY_ID, "calls").unwrap_or(quota);
            let admitted = self.model.admitted;
            prop_assert!(
                admitted + room <= quota,
                "{admitted} admitted, yet room for {room} of the quota {quota}"
            );
        }
        if let Some(c) = self.limits.credits {
            let room = self.cp.room(KEY_ID, "credits").unwrap_or(c.limit);
            let admitted = self.model.credits.get(&self.period()).copied().unwrap_or(0);
            prop_assert!(
                admitted + room <= c.limit,
                "{admitted} credits admitted in the period, yet room for {room} of {}",
                c.limit
            );
        }
        Ok(())
    }

    /// Units of `meter` in leases (of the current credit period) granted in answers Envoy
    /// dropped: the control plane charges them at their expiry.
    fn lost(&self, meter: &str) -> u64 {
        let period = if meter == "credits" { self.period() } else { 0 };
        let held = self.cp.held(KEY_ID, meter).into_iter();
        held.filter(|(id, _, expires)| self.dropped_leases.contains(id) && *expires > period)
            .map(|(_, units, _)| units)
            .sum()
    }

    /// The control plane up, every callout answered, every worker idle long enough to give its
    /// units back: the control plane holds only leases granted in answers Envoy dropped. Then
    /// requests of 1 credit from every worker in turn, at most the per-second limit a second,
    /// until the quota or the credit budget is spent or refused. Every unit must be spent,
    /// except those of the dropped answers' leases.
    pub(super) fn spend_the_rest(&mut self) -> Result<(), TestCaseError> {
        self.cp_down = false;
        for _ in 0..3 {
            self.answer_all()?;
            self.host.advance(IDLE_SETTLE_MS);
            for w in 0..WORKERS {
                self.tick(w)?;
            }
        }
        self.answer_all()?;
        // Envoy settled every lease it learnt of.
        for meter in ["calls", "credits"] {
            for (id, units, _) in self.cp.held(KEY_ID, meter) {
                prop_assert!(
                    self.dropped_leases.contains(&id),
                    "{meter} lease {id} of {units} units still held once settled"
                );
            }
        }
        let limits = self.limits;
        let budget = limits.quota.unwrap_or(0) + 2 * limits.credits.map_or(0, |c| c.limit);
        let mut tries = 0;
        loop {
            let calls = limits
                .quota
                .map(|q| (self.model.admitted + self.lost("calls"), q));
            let spent = self.model.credits.get(&self.period()).copied();
            let credits = limits
                .credits
                .map(|c| (spent.unwrap_or(0) + self.lost("credits"), c.limit));
            if [calls, credits]
                .iter()
                .flatten()
                .any(|(spent, limit)| spent >= limit)
            {
                return Ok(());
            }
            tries += 1;
            prop_assert!(
                tries < 40 * budget + 400,
                "only {:?} of the quota and {:?} of the credit budget could be spent ({} waiting, \
                 {} and {} leased, {} answers dropped)",
                calls,
                credits,
                self.waiting.len(),
                self.cp.leased(KEY_ID, "calls"),
                self.cp.leased(KEY_ID, "credits"),
                self.dropped
            );
            if tries % limits.per_second.min(limits.plan_per_second) == 0 {
                self.host.advance(1_000);
                for w in 0..WORKERS {
                    self.tick(w)?;
                }
            }
            self.request((tries % WORKERS as u64) as usize, 0, Route::Get)?;
            self.answer_all()?;
            self.counted_by_the_control_plane()?;
        }
    }
}

/// The leases a control-plane answer `body` grants (a lease callout's `grants`, a lookup's
/// `leases`).
fn granted(body: &str) -> Vec<String> {
    let answer: Value = serde_json::from_str(body).unwrap_or_default();
    let grants = answer["grants"].as_array().or(answer["leases"].as_array());
    let grants = grants.into_iter().flatten();
    grants
        .filter(|g| g["units"].as_u64().unwrap_or(0) > 0)
        .filter_map(|g| g["lease"].as_str().map(str::to_string))
        .collect()
}

/// Longer than the idle time after which a key's leases are settled, and than their TTL.
const IDLE_SETTLE_MS: u64 = 40_000;
