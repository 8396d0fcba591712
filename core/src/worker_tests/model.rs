//! Model-based property tests of the limiters: several workers of one Envoy on one `FakeHost`
//! (shared data with Envoy's CAS rules, callouts answered to the context that sent them) and
//! `FakeControlPlane`, driven by random interleavings of requests, callout answers, ticks, clock
//! jumps and control-plane outages, each checked against a reference model after every step:
//! - a key's daily quota (spent from leases) is never exceeded, and once everything is settled
//!   the whole of it can be spent (no units lost for good);
//! - a key's own per-second limit and its plan's are never exceeded in any second;
//! - an IP is blocked only after its own failures reached `max_failures`; other IPs never are.

use super::*;
use crate::worker::Resume;
use proptest::prelude::*;
use std::collections::HashMap;

const WORKERS: usize = 3;
const MAX_FAILURES: u64 = 3;
const KEY_ID: &str = "key_m";
/// The client IPs that send the good key; one more sends malformed keys.
const GOOD_IPS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
const BAD_IP: &str = "192.0.2.66";

#[derive(Debug, Clone)]
enum Op {
    /// A request on `worker`: from good client `client` with the key, or (client 3) a
    /// malformed key from the bad IP.
    Request {
        worker: usize,
        client: usize,
    },
    /// The control plane answers every callout sent so far (and those the answers lead to).
    Answer,
    Tick {
        worker: usize,
    },
    Advance {
        ms: u64,
    },
    ControlPlaneDown(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let advance = prop_oneof![
        4 => 1..400u64,
        2 => 900..1_100u64,
        1 => 5_000..7_000u64,
        1 => 29_000..40_000u64,
    ];
    prop_oneof![
        8 => (0..WORKERS, 0..4usize).prop_map(|(worker, client)| Op::Request { worker, client }),
        3 => Just(Op::Answer),
        2 => (0..WORKERS).prop_map(|worker| Op::Tick { worker }),
        2 => advance.prop_map(|ms| Op::Advance { ms }),
        1 => any::<bool>().prop_map(Op::ControlPlaneDown),
    ]
}

/// What the reference model knows: what was admitted, when, and each IP's failures.
#[derive(Default)]
struct Reference {
    admitted: u64,
    /// Admitted requests of the key per second (`now_ms / 1000`).
    per_second: HashMap<u64, u64>,
    /// Times (ms) of the bad IP's failed authentications.
    failures: Vec<u64>,
}

struct Envoy {
    host: FakeHost,
    workers: Vec<Worker>,
    cp: FakeControlPlane,
    cp_down: bool,
    /// Callout token → the worker that sent it.
    owner: HashMap<u32, usize>,
    answered: HashSet<u32>,
    /// Answers Envoy dropped (their context had ended).
    dropped: u64,
    /// Waiting request context → (worker, client).
    waiting: HashMap<u32, (usize, usize)>,
    next_ctx: u32,
    quota: u64,
    /// The key's own per-second limit.
    per_second: u64,
    /// Its plan's per-second limit (the workspace's, shared by its keys).
    plan_per_second: u64,
    key: String,
    model: Reference,
}

fn root(worker: usize) -> u32 {
    1 + worker as u32
}

impl Envoy {
    fn new(quota: u64, per_second: u64, plan_per_second: u64) -> Envoy {
        let config = format!(
            r#"{{"control_plane":{{"cluster":"cp"}},
                "ip_blocking":{{"max_failures":{MAX_FAILURES},"window":"60s","block_for":"5m"}}}}"#
        );
        let workers = (0..WORKERS)
            .map(|w| {
                let config = FilterConfig::parse(config.as_bytes(), |_| Some("t0k".into()));
                Worker::new(config.unwrap(), "i_test".into(), root(w), 7 + w as u64)
            })
            .collect();
        Envoy {
            host: FakeHost::at(T0).with_queue(),
            workers,
            cp: FakeControlPlane::new(),
            cp_down: false,
            owner: HashMap::new(),
            answered: HashSet::new(),
            dropped: 0,
            waiting: HashMap::new(),
            next_ctx: 100,
            quota,
            per_second,
            plan_per_second,
            key: key(1),
            model: Reference::default(),
        }
    }

    fn state(&self) -> String {
        state(
            KEY_ID,
            &format!(
                r#""quotas":{{"daily":{}}},"usage":{{"daily":0}},"rate_limits":{{"per_second":{}}},
                   "plan":{{"name":"p","rate_limit_per_second":{}}}"#,
                self.quota, self.per_second, self.plan_per_second
            ),
        )
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

    fn request(&mut self, worker: usize, client: usize) -> Result<(), TestCaseError> {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        let (key, ip) = match GOOD_IPS.get(client) {
            Some(ip) => (self.key.clone(), *ip),
            None => ("tg_not_a_key".to_string(), BAD_IP),
        };
        let all: Vec<(&str, &[u8])> = vec![
            (":method", b"GET"),
            (":path", b"/v1/things/1"),
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
        self.decided(worker, ctx, client, &seen, false)?;
        self.resumed(worker, resumed)
    }

    /// Checks the decision `seen` of request `ctx` against the model, and ends the request.
    fn decided(
        &mut self,
        worker: usize,
        ctx: u32,
        client: usize,
        seen: &Seen,
        waited: bool,
    ) -> Result<(), TestCaseError> {
        let now = self.now();
        let good = client < GOOD_IPS.len();
        match seen {
            Seen::Wait => {
                prop_assert!(good, "a malformed key never waits");
                self.waiting.insert(ctx, (worker, client));
                return Ok(());
            }
            Seen::Pass { .. } => {
                prop_assert!(good, "a malformed key passed");
                self.model.admitted += 1;
                *self.model.per_second.entry(now / 1000).or_default() += 1;
                prop_assert!(
                    self.model.admitted <= self.quota,
                    "{} admitted, daily quota {}",
                    self.model.admitted,
                    self.quota
                );
                let second = self.model.per_second[&(now / 1000)];
                let limit = self.per_second.min(self.plan_per_second);
                prop_assert!(
                    second <= limit,
                    "{second} admitted in one second, limits {} (key) and {} (plan)",
                    self.per_second,
                    self.plan_per_second
                );
            }
            Seen::Deny { code, .. } if good => {
                prop_assert!(
                    matches!(
                        *code,
                        "quota_exceeded"
                            | "key_rate_limited"
                            | "rate_limited"
                            | "verification_unavailable"
                    ),
                    "the good key denied {code}"
                );
                if *code == "verification_unavailable" {
                    prop_assert!(
                        self.cp_down,
                        "verification unavailable with the control plane up"
                    );
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
            let Some((w, client)) = self.waiting.remove(&ctx) else {
                prop_assert!(false, "request {ctx} decided twice or never waited");
                continue;
            };
            prop_assert_eq!(w, worker, "a waiter is decided by its own worker");
            prop_assert_ne!(&seen, &Seen::Wait);
            self.decided(w, ctx, client, &seen, true)?;
        }
        Ok(())
    }

    fn answer_all(&mut self) -> Result<(), TestCaseError> {
        loop {
            let pending: Vec<_> = self
                .host
                .callouts
                .borrow()
                .iter()
                .filter(|c| !self.answered.contains(&c.token))
                .cloned()
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            for c in pending {
                self.answered.insert(c.token);
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

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Request { worker, client } => self.request(worker, client),
            Op::Answer => self.answer_all(),
            Op::Tick { worker } => self.tick(worker),
            Op::Advance { ms } => {
                self.host.advance(ms);
                Ok(())
            }
            Op::ControlPlaneDown(down) => {
                self.cp_down = down;
                Ok(())
            }
        }
    }

    /// The control plane up, every callout answered, every worker idle long enough to give its
    /// units back; then requests from every worker in turn, at most the per-second limit a
    /// second, until the quota is spent or refused. Every unit must be spent, except those of
    /// leases granted in answers Envoy dropped (the control plane charges them at expiry).
    fn spend_the_rest(&mut self) -> Result<(), TestCaseError> {
        self.cp_down = false;
        for _ in 0..3 {
            self.answer_all()?;
            self.host.advance(IDLE_SETTLE_MS);
            for w in 0..WORKERS {
                self.tick(w)?;
            }
        }
        self.answer_all()?;
        let lost = |e: &Envoy| {
            if e.dropped > 0 {
                e.cp.leased(KEY_ID, "calls")
            } else {
                0
            }
        };
        let mut tries = 0;
        while self.model.admitted + lost(self) < self.quota {
            tries += 1;
            prop_assert!(
                tries < 40 * self.quota + 400,
                "only {} of the quota {} could be spent ({} waiting, {} leased, {} answers \
                 dropped)",
                self.model.admitted,
                self.quota,
                self.waiting.len(),
                self.cp.leased(KEY_ID, "calls"),
                self.dropped
            );
            if tries % self.per_second.min(self.plan_per_second) == 0 {
                self.host.advance(1_000);
                for w in 0..WORKERS {
                    self.tick(w)?;
                }
            }
            self.request((tries % WORKERS as u64) as usize, 0)?;
            self.answer_all()?;
        }
        Ok(())
    }
}

/// Longer than the idle time after which a key's leases are settled, and than their TTL.
const IDLE_SETTLE_MS: u64 = 40_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn limiters_hold_under_random_interleavings(
        quota in 1..60u64,
        per_second in 2..12u64,
        plan_per_second in 2..12u64,
        ops in proptest::collection::vec(op(), 1..250),
    ) {
        let mut envoy = Envoy::new(quota, per_second, plan_per_second);
        for op in &ops {
            envoy.apply(op)?;
        }
        envoy.spend_the_rest()?;
    }
}
