//! Rate limits on fixed windows of a second, a minute and an hour, counted in shared data so
//! all workers of one Envoy see one count. Two tables use this one mechanism: the plan's limits,
//! shared by every key of a workspace (`Scope::Plan`, owner = the workspace), and a key's own
//! limits (`Scope::Key`, owner = the key). A request must pass both.
//!
//! Memory: each table is `slots` records of 7 words, reused forever (an owner takes over a slot
//! whose windows have passed); no shared-data key is ever created per window or per owner. An
//! owner finds its record within `PROBES` slots; if all are held by other active owners, its
//! request is not rate limited by that table (counted in a metric) rather than refused.

use crate::chunk::{chunk, ChunkBook};
use crate::counters::{fnv1a, update, CounterError, Update};
use crate::host::SharedStore;

const PROBES: usize = 4;
/// owner, then (window index, count in it) for the second, the minute and the hour.
const WORDS: usize = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateWindow {
    Second,
    Minute,
    Hour,
}

impl RateWindow {
    pub const ALL: [RateWindow; 3] = [RateWindow::Second, RateWindow::Minute, RateWindow::Hour];

    pub fn name(self) -> &'static str {
        match self {
            RateWindow::Second => "per-second",
            RateWindow::Minute => "per-minute",
            RateWindow::Hour => "per-hour",
        }
    }

    pub fn seconds(self) -> u64 {
        match self {
            RateWindow::Second => 1,
            RateWindow::Minute => 60,
            RateWindow::Hour => 3600,
        }
    }

    fn index(self) -> usize {
        match self {
            RateWindow::Second => 0,
            RateWindow::Minute => 1,
            RateWindow::Hour => 2,
        }
    }
}

/// Whose limit: the workspace's plan, or the key's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Plan,
    Key,
}

impl Scope {
    /// The policy name in the rate-limit headers: the plan's windows keep their plain names.
    pub fn policy(self, window: RateWindow) -> &'static str {
        match (self, window) {
            (Scope::Plan, w) => w.name(),
            (Scope::Key, RateWindow::Second) => "key-per-second",
            (Scope::Key, RateWindow::Minute) => "key-per-minute",
            (Scope::Key, RateWindow::Hour) => "key-per-hour",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Scope::Plan => "tollgate.rate.",
            Scope::Key => "tollgate.keyrate.",
        }
    }
}

/// Limits per window; `None` = no limit in that window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Rates {
    #[serde(default)]
    pub per_second: Option<u64>,
    #[serde(default)]
    pub per_minute: Option<u64>,
    #[serde(default)]
    pub per_hour: Option<u64>,
}

impl Rates {
    pub fn get(self, window: RateWindow) -> Option<u64> {
        match window {
            RateWindow::Second => self.per_second,
            RateWindow::Minute => self.per_minute,
            RateWindow::Hour => self.per_hour,
        }
    }

    pub fn is_empty(self) -> bool {
        self.per_second.is_none() && self.per_minute.is_none() && self.per_hour.is_none()
    }

    /// This Envoy's share when `instances` Envoys enforce the same limits.
    pub fn share(self, instances: u64) -> Rates {
        let part = |limit: Option<u64>| limit.map(|l| l.div_ceil(instances.max(1)));
        Rates {
            per_second: part(self.per_second),
            per_minute: part(self.per_minute),
            per_hour: part(self.per_hour),
        }
    }
}

/// The most constraining window after this request, for response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub scope: Scope,
    pub window: RateWindow,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset_s: u64,
}

impl RateStatus {
    /// The tighter of two statuses (fewer requests left; the plan's on a tie).
    pub fn tighter(a: Option<RateStatus>, b: Option<RateStatus>) -> Option<RateStatus> {
        match (a, b) {
            (Some(a), Some(b)) if b.remaining < a.remaining => Some(b),
            (Some(a), _) => Some(a),
            (None, b) => b,
        }
    }
}

/// The rate limits a request met (this Envoy's share of each) and where it left the tightest
/// one, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateView {
    pub plan: Rates,
    pub key: Rates,
    pub status: RateStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOutcome {
    Unlimited,
    Admitted(RateStatus),
    Limited(RateStatus),
    /// No slot free for this owner (or the host failed): not limited, but counted.
    Untracked,
}

fn reset_s(window: RateWindow, now_ms: u64) -> u64 {
    let period = window.seconds() * 1000;
    (period - now_ms % period).div_ceil(1000)
}

fn window_index(window: RateWindow, now_ms: u64) -> u64 {
    now_ms / (window.seconds() * 1000)
}

/// Units this worker holds in one window: granted for window `index`, `left` unspent, and the
/// shared count right after the grant (for the `remaining` estimate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct WindowChunk {
    index: u64,
    left: u64,
    shared: u64,
}

/// Units this worker holds for an owner's current windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateChunk {
    windows: [WindowChunk; 3],
}

pub type RateChunks = ChunkBook<u64, RateChunk>;

/// A table's chunks: one per owner, at most `max` owners per worker.
pub fn new_chunks(max: usize) -> RateChunks {
    ChunkBook::new(max)
}

/// The owner of a plan's record: its workspace.
pub fn workspace_owner(workspace: &str) -> u64 {
    fnv1a(workspace.as_bytes()) | 1
}

fn slot_keys(scope: Scope, owner: u64, slots: usize) -> impl Iterator<Item = String> {
    let slots = slots.max(1);
    let first = (owner % slots as u64) as usize;
    let table = scope.table();
    (0..PROBES.min(slots)).map(move |probe| format!("{table}{}", (first + probe) % slots))
}

/// Another owner's record still counts requests in a current window: the slot is taken. An
/// owner holds its slot for the minute it was last counted in and the next (its hour only if it
/// counts hours).
fn held_by_other(record: &[u64], owner: u64, now_ms: u64) -> bool {
    let minute = window_index(RateWindow::Minute, now_ms);
    let hour = window_index(RateWindow::Hour, now_ms);
    record[0] != owner && (record[3] + 1 >= minute || (record[6] > 0 && record[5] == hour))
}

enum Refill {
    /// This slot belongs to another active owner.
    Taken,
    Limited(RateWindow),
    Granted(RateChunk),
}

/// Admits one request of `owner` if every limited window has room, spending a unit of its chunk and
/// taking a new chunk from shared data when the chunk is used up or its window has passed.
pub fn admit(
    store: &dyn SharedStore,
    scope: Scope,
    slots: usize,
    owner: u64,
    rates: Rates,
    now_ms: u64,
    chunks: &mut RateChunks,
) -> RateOutcome {
    if rates.is_empty() {
        return RateOutcome::Unlimited;
    }
    let mut ours = chunks.get_mut(&owner).copied().unwrap_or_default();
    let needs = RateWindow::ALL.map(|w| {
        let held = ours.windows[w.index()];
        rates.get(w).is_some() && (held.index != window_index(w, now_ms) || held.left == 0)
    });
    if needs.contains(&true) {
        let mut refill = None;
        for key in slot_keys(scope, owner, slots) {
            let result = update(store, &key, WORDS, |record| {
                if let Some(r) = record {
                    if held_by_other(r, owner, now_ms) {
                        return Update::Keep(Refill::Taken);
                    }
                }
                let mine = record.filter(|r| r[0] == owner);
                let mut written = vec![owner; WORDS];
                let mut granted = ours;
                for w in RateWindow::ALL {
                    let (at, index) = (1 + 2 * w.index(), window_index(w, now_ms));
                    let mut count = mine.filter(|r| r[at] == index).map_or(0, |r| r[at + 1]);
                    if needs[w.index()] {
                        let limit = rates.get(w).unwrap_or(0);
                        let grant = chunk(limit, limit.saturating_sub(count));
                        if grant == 0 {
                            return Update::Keep(Refill::Limited(w));
                        }
                        count += grant;
                        granted.windows[w.index()] = WindowChunk {
                            index,
                            left: grant,
                            shared: count,
                        };
                    }
                    (written[at], written[at + 1]) = (index, count);
                }
                Update::Write(written, Refill::Granted(granted))
            });
            match result {
                Ok(Refill::Taken) => continue,
                Ok(other) => {
                    refill = Some(other);
                    break;
                }
                // Contention this heavy means the limit is being hammered: refuse, never
                // overshoot.
                Err(CounterError::Contended) => {
                    let first = RateWindow::ALL.into_iter().find(|w| needs[w.index()]);
                    refill = Some(Refill::Limited(first.unwrap_or(RateWindow::Second)));
                    break;
                }
                Err(CounterError::Host(_)) => return RateOutcome::Untracked,
            }
        }
        match refill {
            None | Some(Refill::Taken) => return RateOutcome::Untracked,
            Some(Refill::Limited(window)) => {
                return RateOutcome::Limited(RateStatus {
                    scope,
                    window,
                    limit: rates.get(window).unwrap_or(0),
                    remaining: 0,
                    reset_s: reset_s(window, now_ms),
                });
            }
            Some(Refill::Granted(granted)) => ours = granted,
        }
    }
    let mut status: Option<RateStatus> = None;
    for w in RateWindow::ALL {
        let Some(limit) = rates.get(w) else { continue };
        let held = &mut ours.windows[w.index()];
        held.left -= 1;
        let view = RateStatus {
            scope,
            window: w,
            limit,
            remaining: limit.saturating_sub(held.shared) + held.left,
            reset_s: reset_s(w, now_ms),
        };
        if status.is_none_or(|s| view.remaining < s.remaining) {
            status = Some(view);
        }
    }
    chunks.insert(owner, ours);
    match status {
        Some(status) => RateOutcome::Admitted(status),
        None => RateOutcome::Unlimited,
    }
}

/// Gives back one request admitted by `admit` (it was refused for another reason): the unit
/// returns to this worker's chunk, no host call.
pub fn refund(owner: u64, now_ms: u64, chunks: &mut RateChunks) {
    if let Some(mine) = chunks.get_mut(&owner) {
        for w in RateWindow::ALL {
            let held = &mut mine.windows[w.index()];
            if held.index == window_index(w, now_ms) && held.shared > 0 {
                held.left += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
