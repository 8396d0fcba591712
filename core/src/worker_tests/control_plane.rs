//! A control plane that answers lease callouts as docs/protocol.md ("Budget leases") says,
//! reduced to what the worker tests need: each key's room per quota window and per credit
//! period (`limit − charged(period) − leased`, a period's leases ending with it at the latest),
//! leases that reserve it, asked again answered the same with the rest of their TTL,
//! settlements that give back what was not spent, and optionally the real size rule; and the
//! first leases a key lookup asks for ("The first leases, granted with the lookup"). Not
//! modelled: the sweep of a lease 10 s past its expiry (an unsettled lease stays reserved,
//! which for the room is what charging it in full is; only a settlement later than that is
//! honoured here and ignored there).

use crate::key_state::{CreditBudget, CreditPeriod, KeyStateWire};
use serde_json::{json, Value};
use std::collections::HashMap;

const DAY_MS: u64 = 86_400_000;

/// A lease the control plane holds.
struct Held {
    key_id: String,
    meter: String,
    instance: String,
    units: u64,
    expires_ms: u64,
}

#[derive(Default)]
pub struct FakeControlPlane {
    /// Key id → the room of each quota window when learnt (quota − usage), named as
    /// `exhausted` names it, longest first.
    windows: HashMap<String, Vec<(String, u64)>>,
    /// Key id → its credit budget, and the start of the period its `used` was counted in.
    credits: HashMap<String, (CreditBudget, u64)>,
    /// The leases not settled, by id (none is ever swept).
    leases: HashMap<String, Held>,
    pub ttl_ms: u64,
    /// Units charged by settlements, per key id and meter.
    pub charged: HashMap<(String, String), u64>,
    /// Credits charged by settlements, per key id and the period charged (its start).
    credits_charged: HashMap<(String, u64), u64>,
    /// The most units one grant gives (the protocol's size rule near the end of a budget).
    pub max_units: Option<u64>,
    /// Grants sized by the protocol's rule: at most half an even share of the room among the
    /// instances holding a lease of the budget (`⌊room / (2 × (holders + 1))⌋`, at least `min`).
    pub share: bool,
    /// The control plane's clock (tests that never set it run at 0, in January 1970).
    pub now_ms: u64,
}

/// The calendar period (UTC) of a credit budget holding `at_ms`: its start and the next one's
/// (`None` for `total`), as the control plane reckons them.
pub fn period_bounds(period: CreditPeriod, at_ms: u64) -> (u64, Option<u64>) {
    let day = at_ms / DAY_MS;
    match period {
        CreditPeriod::Total => (0, None),
        CreditPeriod::Day => (day * DAY_MS, Some((day + 1) * DAY_MS)),
        CreditPeriod::Month => {
            let (y, m) = year_month(day);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (first_day(y, m) * DAY_MS, Some(first_day(ny, nm) * DAY_MS))
        }
    }
}

/// The year and month of day `days` since 1970-01-01 (the civil calendar, from 1970 on).
fn year_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (era * 400 + yoe + u64::from(m <= 2), m)
}

/// Days since 1970-01-01 of the first of month `m` of year `y` (from 1970 on).
fn first_day(y: u64, m: u64) -> u64 {
    let y = y - u64::from(m <= 2);
    let (era, yoe) = (y / 400, y % 400);
    let doy = (153 * if m > 2 { m - 3 } else { m + 9 } + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
            self.windows.entry(wire.key_id.clone()).or_insert(windows);
        }
        if let Some(c) = wire.credits {
            let start = period_bounds(c.period, self.now_ms).0;
            self.credits
                .entry(wire.key_id.clone())
                .or_insert((c, start));
        }
    }

    /// The room of `key_id`'s `meter` now, each limit named as `exhausted` names it (`None`: no
    /// budget on it).
    fn limits(&self, key_id: &str, meter: &str) -> Option<Vec<(String, u64)>> {
        // Units of the leases held, of those expiring after `since` if given.
        let leased = |since: Option<u64>| -> u64 {
            let held = self.leases.values();
            held.filter(|l| l.key_id == key_id && l.meter == meter)
                .filter(|l| since.is_none_or(|since| l.expires_ms > since))
                .map(|l| l.units)
                .sum()
        };
        if meter == "calls" {
            let charged = self.charged.get(&(key_id.into(), meter.into()));
            let taken = charged.copied().unwrap_or(0) + leased(None);
            let windows = self.windows.get(key_id)?.iter();
            return Some(
                windows
                    .map(|(name, room)| (name.clone(), room.saturating_sub(taken)))
                    .collect(),
            );
        }
        let (budget, learnt) = self.credits.get(key_id)?;
        let start = period_bounds(budget.period, self.now_ms).0;
        // `used` is what its lookup said of the period it was learnt in; a new one starts at 0.
        let used = if start == *learnt { budget.used } else { 0 };
        let charged = self.credits_charged.get(&(key_id.into(), start));
        // A lease of an earlier period ended with it: it does not count against this one.
        let taken = used + charged.copied().unwrap_or(0) + leased(Some(start));
        let room = budget.limit.saturating_sub(taken);
        Some(vec![(budget.period.name().to_string(), room)])
    }

    /// The room of `key_id`'s `meter` now (the fullest limit), if it has a budget on it.
    pub fn room(&self, key_id: &str, meter: &str) -> Option<u64> {
        let limits = self.limits(key_id, meter)?;
        limits.iter().map(|(_, room)| *room).min()
    }

    /// The leases of `key_id`'s `meter` held now (not settled), by id: their units and expiry.
    pub fn held(&self, key_id: &str, meter: &str) -> Vec<(String, u64, u64)> {
        let held = self.leases.iter();
        held.filter(|(_, l)| l.key_id == key_id && l.meter == meter)
            .map(|(id, l)| (id.clone(), l.units, l.expires_ms))
            .collect()
    }

    /// Units of `key_id`'s `meter` leased out and not settled.
    pub fn leased(&self, key_id: &str, meter: &str) -> u64 {
        self.leases
            .values()
            .filter(|l| l.key_id == key_id && l.meter == meter)
            .map(|l| l.units)
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
            .filter(|(meter, _)| self.limits(&key_id, meter).is_some())
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

    /// The answer to a `POST /v1/filter/leases` body, at `now_ms`.
    pub fn answer(&mut self, body: &[u8]) -> String {
        let request: Value = serde_json::from_slice(body).unwrap();
        let instance = request["instance"].as_str().unwrap().to_string();
        let mut settled = 0;
        for s in request["settle"].as_array().unwrap() {
            let id = s["lease"].as_str().unwrap();
            if let Some(l) = self.leases.remove(id) {
                settled += 1;
                let spent = s["spent"].as_u64().unwrap().min(l.units);
                *self
                    .charged
                    .entry((l.key_id.clone(), l.meter.clone()))
                    .or_default() += spent;
                if let Some((budget, _)) =
                    self.credits.get(&l.key_id).filter(|_| l.meter == "credits")
                {
                    // Charged at the millisecond before its expiry: to the period it was spent in.
                    let period = period_bounds(budget.period, l.expires_ms.saturating_sub(1)).0;
                    *self.credits_charged.entry((l.key_id, period)).or_default() += spent;
                }
            }
        }
        let grants: Vec<Value> = request["grant"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| self.grant(&instance, g))
            .collect();
        json!({"now_ms": self.now_ms, "settled": settled, "grants": grants}).to_string()
    }

    /// The answer to grant request `g` of `instance`, its lease reserved.
    fn grant(&mut self, instance: &str, g: &Value) -> Value {
        let id = g["lease"].as_str().unwrap().to_string();
        let key = g["key_id"].as_str().unwrap().to_string();
        let meter = g["meter"].as_str().unwrap().to_string();
        let (want, min) = (g["want"].as_u64().unwrap(), g["min"].as_u64().unwrap());
        if let Some(l) = self.leases.get(&id) {
            // Asked again (its answer was lost): the same lease, for the rest of its TTL.
            let ttl = l.expires_ms.saturating_sub(self.now_ms);
            return json!({"lease": id, "units": l.units, "ttl_ms": ttl});
        }
        let Some(limits) = self.limits(&key, &meter) else {
            return json!({"lease": id, "units": want, "ttl_ms": self.ttl_ms});
        };
        if let Some((full, _)) = limits.iter().find(|(_, room)| *room < min) {
            return json!({"lease": id, "units": 0, "ttl_ms": 0,
                          "exhausted": full, "retry_ms": 1000});
        }
        let room = limits.iter().map(|(_, r)| *r).min().unwrap_or(0);
        let units = if self.share {
            let mut holders: Vec<&str> = self
                .leases
                .values()
                .filter(|l| l.key_id == key && l.meter == meter && l.instance != instance)
                .map(|l| l.instance.as_str())
                .collect();
            holders.sort_unstable();
            holders.dedup();
            want.min(min.max(room / (2 * (holders.len() as u64 + 1))))
        } else {
            want.min(room)
        };
        let units = units.min(self.max_units.unwrap_or(u64::MAX));
        // A credits lease ends with its period at the latest: its units are spent in it.
        let resets_at = match self.credits.get(&key) {
            Some((budget, _)) if meter == "credits" => period_bounds(budget.period, self.now_ms).1,
            _ => None,
        };
        let ttl = resets_at.map_or(self.ttl_ms, |r| self.ttl_ms.min(r - self.now_ms));
        let held = Held {
            key_id: key,
            meter,
            instance: instance.to_string(),
            units,
            expires_ms: self.now_ms + ttl,
        };
        self.leases.insert(id.clone(), held);
        json!({"lease": id, "units": units, "ttl_ms": ttl})
    }
}

#[test]
fn credit_periods_are_utc_days_and_calendar_months() {
    // docs/protocol.md's example: November 2026.
    let t0 = 1_795_000_000_000;
    let november = (1_793_491_200_000, Some(1_796_083_200_000));
    assert_eq!(period_bounds(CreditPeriod::Month, t0), november);
    let december = period_bounds(CreditPeriod::Month, 1_796_083_200_000);
    assert_eq!(december, (1_796_083_200_000, Some(1_798_761_600_000)));
    let day = period_bounds(CreditPeriod::Day, t0);
    assert_eq!(day, (1_794_960_000_000, Some(1_795_046_400_000)));
    // February of a leap year; January 1970, where the tests that never set a clock run.
    let february = period_bounds(CreditPeriod::Month, 1_835_481_599_999);
    assert_eq!(february, (1_832_976_000_000, Some(1_835_481_600_000)));
    assert_eq!(
        period_bounds(CreditPeriod::Month, 0),
        (0, Some(2_678_400_000))
    );
    assert_eq!(period_bounds(CreditPeriod::Total, t0), (0, None));
}
