//! A control plane that answers lease callouts as docs/protocol.md ("Budget leases") says,
//! reduced to what the worker tests need: each key's room per window (or credit period),
//! leases that reserve it, settlements that give back what was not spent; and the first leases
//! a key lookup asks for ("The first leases, granted with the lookup").

use crate::key_state::KeyStateWire;
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Default)]
pub struct FakeControlPlane {
    /// (key id, meter) → the room of each limit, named as `exhausted` names it, longest first.
    rooms: HashMap<(String, String), Vec<(String, u64)>>,
    /// Live leases: id → (key id, meter, units).
    leases: HashMap<String, (String, String, u64)>,
    pub ttl_ms: u64,
    /// Units charged by settlements, per key id and meter.
    pub charged: HashMap<(String, String), u64>,
    /// The most units one grant gives (the protocol's size rule near the end of a budget).
    pub max_units: Option<u64>,
}

impl FakeControlPlane {
    pub fn new() -> FakeControlPlane {
        FakeControlPlane {
            ttl_ms: 30_000,
            ..Default::default()
        }
    }

    /// The budgets of a key as its lookup answer `body` states them (limit − used).
    pub fn learn(&mut self, body: &str) {
        let Ok(wire) = serde_json::from_str::<KeyStateWire>(body) else {
            return;
        };
        let (q, u) = (&wire.quotas, &wire.usage);
        let windows: Vec<(String, u64)> = [
            ("total", q.total, u.total),
            ("monthly", q.monthly, u.monthly),
            ("weekly", q.weekly, u.weekly),
            ("daily", q.daily, u.daily),
        ]
        .into_iter()
        .filter_map(|(name, quota, used)| {
            quota.map(|q| (name.to_string(), q.saturating_sub(used.unwrap_or(0))))
        })
        .collect();
        // A key's budget is learnt once: later answers do not undo its leases.
        if !windows.is_empty() {
            self.rooms
                .entry((wire.key_id.clone(), "calls".into()))
                .or_insert(windows);
        }
        if let Some(c) = wire.credits {
            self.rooms
                .entry((wire.key_id.clone(), "credits".into()))
                .or_insert_with(|| {
                    vec![(c.period.name().to_string(), c.limit.saturating_sub(c.used))]
                });
        }
    }

    /// Units of `key_id`'s `meter` leased out and not settled.
    pub fn leased(&self, key_id: &str, meter: &str) -> u64 {
        self.leases
            .values()
            .filter(|(k, m, _)| k == key_id && m == meter)
            .map(|(_, _, units)| units)
            .sum()
    }

    /// The lookup answer `body` for lookup `path`, with the first leases it asks for
    /// (`?lease={base}&want={units}`), granted as `POST /v1/filter/leases` grants them.
    pub fn lookup_answer(&mut self, path: &str, body: &str) -> String {
        self.learn(body);
        let mut answer: Value = serde_json::from_str(body).unwrap();
        let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        let Some(base) = param("lease") else {
            return body.to_string();
        };
        let want: u64 = param("want").map_or(10, |w| w.parse().unwrap());
        let key_id = answer["key_id"].as_str().unwrap().to_string();
        let grant: Vec<Value> = [("calls", 'c'), ("credits", 'k')]
            .into_iter()
            .filter(|(meter, _)| {
                self.rooms
                    .contains_key(&(key_id.clone(), meter.to_string()))
            })
            .map(|(meter, tag)| {
                json!({"lease": format!("{base}{tag}"), "key_id": key_id, "meter": meter,
                       "want": want, "min": 1})
            })
            .collect();
        if grant.is_empty() {
            return body.to_string();
        }
        let instance = base.rsplit_once('.').unwrap().0;
        let request = json!({"instance": instance, "settle": [], "grant": grant});
        let granted: Value =
            serde_json::from_str(&self.answer(request.to_string().as_bytes())).unwrap();
        answer["leases"] = granted["grants"].clone();
        answer.to_string()
    }

    /// The answer to a `POST /v1/filter/leases` body.
    pub fn answer(&mut self, body: &[u8]) -> String {
        let request: Value = serde_json::from_slice(body).unwrap();
        let mut settled = 0;
        for s in request["settle"].as_array().unwrap() {
            let id = s["lease"].as_str().unwrap();
            if let Some((key, meter, units)) = self.leases.remove(id) {
                settled += 1;
                let spent = s["spent"].as_u64().unwrap().min(units);
                *self
                    .charged
                    .entry((key.clone(), meter.clone()))
                    .or_default() += spent;
                if let Some(rooms) = self.rooms.get_mut(&(key, meter)) {
                    for (_, room) in rooms.iter_mut() {
                        *room += units - spent;
                    }
                }
            }
        }
        let mut grants = Vec::new();
        for g in request["grant"].as_array().unwrap() {
            let id = g["lease"].as_str().unwrap().to_string();
            let key = g["key_id"].as_str().unwrap().to_string();
            let meter = g["meter"].as_str().unwrap().to_string();
            let (want, min) = (g["want"].as_u64().unwrap(), g["min"].as_u64().unwrap());
            if let Some((_, _, units)) = self.leases.get(&id) {
                grants.push(json!({"lease": id, "units": units, "ttl_ms": self.ttl_ms}));
                continue;
            }
            let Some(rooms) = self.rooms.get_mut(&(key.clone(), meter.clone())) else {
                grants.push(json!({"lease": id, "units": want, "ttl_ms": self.ttl_ms}));
                continue;
            };
            if let Some((full, _)) = rooms.iter().find(|(_, room)| *room < min) {
                grants.push(json!({"lease": id, "units": 0, "ttl_ms": 0,
                                   "exhausted": full, "retry_ms": 1000}));
                continue;
            }
            let room = rooms.iter().map(|(_, r)| *r).min().unwrap_or(0);
            let units = want.min(room).min(self.max_units.unwrap_or(u64::MAX));
            for (_, r) in rooms.iter_mut() {
                *r -= units;
            }
            self.leases.insert(id.clone(), (key, meter, units));
            grants.push(json!({"lease": id, "units": units, "ttl_ms": self.ttl_ms}));
        }
        json!({"now_ms": 0, "settled": settled, "grants": grants}).to_string()
    }
}
