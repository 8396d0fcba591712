//! Budget leases (`docs/protocol.md`), written once for both backends. A request's work is done
//! key by key, in key order, each key in one write transaction that locks it first (PostgreSQL:
//! its `api_keys` row, so control planes sharing the database lease one at a time per key;
//! SQLite: the write transaction), then sweeps its expired leases, applies the settlements of
//! its leases, reads its charges and live leases, and inserts the new ones. So the units leased
//! out never exceed what is left of a budget, whoever asks and wherever. A transaction holds one
//! key's lock only, so two of them never wait for each other in a circle.

use std::collections::{BTreeMap, HashMap};

use crate::domain::lease::LEASE_GRACE_MS;
use crate::domain::{
    CreditBudget, Grant, GrantRequest, LeaseAnswer, LeaseRequest, Meter, Quotas, Room, Settlement,
    Usage,
};
use crate::store::rows::{count, credits_from_row, quotas_from_row};
use crate::store::sql::charges::{charged_args, charged_columns, usage_from_row, Charges};
use crate::store::sql::{args, in_read, in_write, Database, QueryBuilder, Sql};
use crate::store::{StoreError, StoreResult};

/// A key's quotas, credit budget and what is charged to them (`$1` the key, then
/// [`charged_args`]).
const ROOM_SQL: &str = concat!(
    "SELECT k.quota_total, k.quota_daily, k.quota_weekly, k.quota_monthly, \
       k.credits_limit, k.credits_period, ",
    charged_columns!(),
    " FROM api_keys k WHERE k.id = $1"
);

/// A new lease; nothing when its id is taken (by a lease of another key: an id of this key's
/// was answered before).
const INSERT_LEASE: &str = "INSERT INTO key_leases \
     (id, key_id, meter, instance, units, granted_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";

/// What [`lease`] did: the answer, and the keys whose charges changed (what a cache of lookups
/// must forget).
#[derive(Debug, Default)]
pub(crate) struct LeaseOutcome {
    pub answer: LeaseAnswer,
    pub charged: Vec<String>,
}

/// What a request asks of one key.
#[derive(Debug, Default)]
struct KeyWork<'r> {
    settle: Vec<&'r Settlement>,
    /// With their positions in the request.
    grants: Vec<(usize, &'r GrantRequest)>,
}

/// What one key's transaction did.
#[derive(Debug, Default)]
struct KeyDone {
    settled: u64,
    swept: u64,
    charged: bool,
    grants: Vec<(usize, Grant)>,
}

/// A live lease as stored.
#[derive(Debug, Clone)]
struct Held {
    meter: Meter,
    instance: String,
    units: u64,
    expires_at: i64,
}

/// Settles, then grants, `request` of an Envoy at `now_ms`; a lease lasts `lease_ttl_ms` at most.
pub(crate) async fn lease<D: Database>(
    db: &D,
    request: &LeaseRequest,
    now_ms: i64,
    lease_ttl_ms: i64,
) -> StoreResult<LeaseOutcome> {
    // A settlement may be of any key of this instance's leases: its key decides the lock.
    let owners = owners(db, &request.settle).await?;
    let mut work: BTreeMap<String, KeyWork<'_>> = BTreeMap::new();
    for s in &request.settle {
        if let Some(key_id) = owners.get(&s.lease) {
            work.entry(key_id.clone()).or_default().settle.push(s);
        }
    }
    for (i, g) in request.grant.iter().enumerate() {
        work.entry(g.key_id.clone())
            .or_default()
            .grants
            .push((i, g));
    }
    let mut outcome = LeaseOutcome::default();
    let mut grants: Vec<Option<Grant>> = vec![None; request.grant.len()];
    for (key_id, w) in &work {
        let done = in_write!(db, |tx| {
            for_key(tx, key_id, &request.instance, w, now_ms, lease_ttl_ms).await
        })?;
        outcome.answer.settled += done.settled;
        if done.charged {
            outcome.charged.push(key_id.clone());
        }
        for (i, grant) in done.grants {
            if let Some(slot) = grants.get_mut(i) {
                *slot = Some(grant);
            }
        }
    }
    outcome.answer.grants = grants
        .into_iter()
        .zip(&request.grant)
        .map(|(grant, asked)| grant.unwrap_or_else(|| Grant::refused(asked, None)))
        .collect();
    Ok(outcome)
}

/// Charges in full and deletes every lease more than [`LEASE_GRACE_MS`] past its `expires_at`
/// at `now_ms`, key by key; how many, and the keys charged.
pub(crate) async fn sweep<D: Database>(db: &D, now_ms: i64) -> StoreResult<(u64, Vec<String>)> {
    let rows = in_read!(db, |tx| {
        tx.rows(
            "SELECT DISTINCT key_id FROM key_leases WHERE expires_at < $1 ORDER BY key_id",
            args![now_ms - LEASE_GRACE_MS],
        )
        .await
    })?;
    let (mut swept, mut charged) = (0, Vec::new());
    for row in rows {
        let key_id: String = row.get("key_id")?;
        let idle = KeyWork::default();
        let done = in_write!(db, |tx| for_key(tx, &key_id, "", &idle, now_ms, 0).await)?;
        swept += done.swept;
        if done.charged {
            charged.push(key_id);
        }
    }
    Ok((swept, charged))
}

/// The keys of the stored leases among `settle`'s (`lease id -> key id`).
async fn owners<D: Database>(
    db: &D,
    settle: &[Settlement],
) -> StoreResult<HashMap<String, String>> {
    if settle.is_empty() {
        return Ok(HashMap::new());
    }
    let mut q = QueryBuilder::new("SELECT id, key_id FROM key_leases WHERE id IN (");
    q.push_list(settle.iter().map(|s| s.lease.as_str()))
        .push(")");
    let (sql, values) = q.build();
    let rows = in_read!(db, |tx| tx.rows(&sql, values.clone()).await)?;
    rows.iter()
        .map(|r| Ok((r.get("id")?, r.get("key_id")?)))
        .collect()
}

/// One key's work in the caller's write transaction: lock, sweep, settle, grant.
async fn for_key(
    tx: &mut dyn Sql,
    key_id: &str,
    instance: &str,
    work: &KeyWork<'_>,
    now_ms: i64,
    lease_ttl_ms: i64,
) -> StoreResult<KeyDone> {
    let mut done = KeyDone::default();
    let sql = format!(
        "SELECT id FROM api_keys WHERE id = $1{}",
        tx.for_no_key_update()
    );
    if tx.row(&sql, args![key_id]).await?.is_none() {
        // Deleted (its leases went with it): no units, and nothing says when there may be.
        done.grants = work
            .grants
            .iter()
            .map(|(i, g)| (*i, Grant::refused(g, None)))
            .collect();
        return Ok(done);
    }
    let mut held = held_leases(tx, key_id).await?;
    let mut charges = Charges::default();
    let mut gone: Vec<String> = Vec::new();
    // A lease is spent before its `expires_at` (the filter's deadline is never later), and
    // until then: a worker may still spend units it took after its Envoy settled. So its
    // charge goes to the millisecond before `expires_at`: never out of a rolling window before
    // a request it counts, and for a credits lease ending at its period's end, still in the
    // period that reserved it.
    let due = now_ms - LEASE_GRACE_MS;
    let expired: Vec<String> = held
        .iter()
        .filter(|(_, l)| l.expires_at < due)
        .map(|(id, _)| id.clone())
        .collect();
    for id in expired {
        if let Some(l) = held.remove(&id) {
            charges.add(l.meter, l.units, l.expires_at - 1);
            gone.push(id);
            done.swept += 1;
        }
    }
    for s in &work.settle {
        if let Some(l) = held.remove(&s.lease) {
            charges.add(l.meter, s.spent.min(l.units), l.expires_at - 1);
            gone.push(s.lease.clone());
            done.settled += 1;
        }
    }
    if !gone.is_empty() {
        let mut q = QueryBuilder::new("DELETE FROM key_leases WHERE id IN (");
        q.push_list(gone.iter().map(String::as_str)).push(")");
        let (sql, values) = q.build();
        tx.execute(&sql, values).await?;
    }
    done.charged = !charges.is_empty();
    charges.write(tx, key_id).await?;
    if work.grants.is_empty() {
        return Ok(done);
    }

    let mut values = args![key_id];
    values.extend(charged_args(now_ms));
    let row = tx
        .row(ROOM_SQL, values)
        .await?
        .ok_or(StoreError::KeyNotFound)?;
    let budgets = Budgets {
        quotas: quotas_from_row(&row)?,
        credits: credits_from_row(&row)?,
        calls_charged: usage_from_row(&row)?,
        credits_charged: count(row.get("credits_used")?),
    };
    let granting = Granting {
        key_id,
        instance,
        budgets,
        now_ms,
        lease_ttl_ms,
    };
    for (i, g) in &work.grants {
        done.grants
            .push((*i, granting.grant(tx, g, &mut held).await?));
    }
    Ok(done)
}

/// A key's budgets and their charges, as the grants of one transaction see them.
struct Budgets {
    quotas: Quotas,
    credits: Option<CreditBudget>,
    calls_charged: Usage,
    credits_charged: u64,
}

/// Key `key_id`'s stored leases, by id.
async fn held_leases(tx: &mut dyn Sql, key_id: &str) -> StoreResult<BTreeMap<String, Held>> {
    let rows = tx
        .rows(
            "SELECT id, meter, instance, units, expires_at FROM key_leases WHERE key_id = $1",
            args![key_id],
        )
        .await?;
    let mut held = BTreeMap::new();
    for r in rows {
        let meter: String = r.get("meter")?;
        let meter = Meter::parse(&meter)
            .ok_or_else(|| StoreError::Backend(format!("unknown lease meter {meter:?}").into()))?;
        held.insert(
            r.get("id")?,
            Held {
                meter,
                instance: r.get("instance")?,
                units: count(r.get("units")?),
                expires_at: r.get("expires_at")?,
            },
        );
    }
    Ok(held)
}

/// The grants of one key's transaction: to `instance`, at `now_ms`.
struct Granting<'a> {
    key_id: &'a str,
    instance: &'a str,
    budgets: Budgets,
    now_ms: i64,
    lease_ttl_ms: i64,
}

impl Granting<'_> {
    /// The answer to grant request `g`, and its lease inserted (into `held` too, so the next grant
    /// counts it).
    async fn grant(
        &self,
        tx: &mut dyn Sql,
        g: &GrantRequest,
        held: &mut BTreeMap<String, Held>,
    ) -> StoreResult<Grant> {
        let (budgets, now_ms, lease_ttl_ms) = (&self.budgets, self.now_ms, self.lease_ttl_ms);
        if let Some(l) = held.get(&g.lease) {
            // Asked again (a retry after a lost answer): the same lease, nothing more reserved.
            // The same id for another meter is a filter's mistake: nothing for it.
            return Ok(if l.meter == g.meter {
                Grant::granted(g, l.units, ttl(l.expires_at - now_ms))
            } else {
                Grant::refused(g, None)
            });
        }
        let leased = |since: i64| -> u64 {
            held.values()
                .filter(|l| l.meter == g.meter && l.expires_at > since)
                .map(|l| l.units)
                .sum()
        };
        let mut resets_at = None;
        let room = match g.meter {
            Meter::Calls => Room::calls(&budgets.quotas, &budgets.calls_charged, leased(i64::MIN)),
            Meter::Credits => budgets.credits.map(|b| {
                let period = b.period.bounds(now_ms);
                resets_at = period.resets_at_ms;
                // A lease of the previous period (expired, not swept yet) is charged to that one.
                Room::credits(&b, budgets.credits_charged, leased(period.start_ms))
            }),
        };
        let Some(room) = room else {
            // No budget on this meter: everything asked, nothing reserved.
            return Ok(Grant::granted(g, g.want, ttl(lease_ttl_ms)));
        };
        let mut holders: Vec<&str> = held
            .values()
            .filter(|l| l.meter == g.meter && l.instance != self.instance)
            .map(|l| l.instance.as_str())
            .collect();
        holders.sort_unstable();
        holders.dedup();
        let units = match room.size(g.want, g.min, holders.len() as u64) {
            Ok(units) => units,
            Err(full) => return Ok(Grant::refused(g, Some(full))),
        };
        // A credits lease ends with its period at the latest: its units are spent in it.
        let ttl_ms = resets_at.map_or(lease_ttl_ms, |r| lease_ttl_ms.min(r - now_ms));
        let expires_at = now_ms + ttl_ms;
        let values = args![
            g.lease.as_str(),
            self.key_id,
            g.meter.as_str(),
            self.instance,
            i64::try_from(units).unwrap_or(i64::MAX),
            now_ms,
            expires_at
        ];
        let inserted = tx.execute(INSERT_LEASE, values).await?;
        if inserted == 0 {
            // The id is a lease of another key: nothing for this one.
            return Ok(Grant::refused(g, None));
        }
        held.insert(
            g.lease.clone(),
            Held {
                meter: g.meter,
                instance: self.instance.to_owned(),
                units,
                expires_at,
            },
        );
        Ok(Grant::granted(g, units, ttl(ttl_ms)))
    }
}

/// A remaining time in ms as `ttl_ms` (0 once past).
fn ttl(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}
