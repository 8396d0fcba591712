//! Load from the test process: many concurrent keep-alive connections, as fast as possible or
//! paced to a rate, with the wall-clock time each request was sent and answered. (For millions
//! of requests use `wrk`, see [`crate::wrk`].)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::{Client, Response};

/// One request of a load run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Position in the run (0-based), the order requests were scheduled in.
    pub index: usize,
    /// Which connection (thread) sent it.
    pub connection: usize,
    /// Wall-clock microseconds since the epoch just before sending and just after the answer.
    pub sent_us: u64,
    pub answered_us: u64,
    /// The answer, or the transport error.
    pub response: Result<Response, String>,
}

impl Outcome {
    /// The status, 0 for a transport error.
    pub fn status(&self) -> u16 {
        self.response.as_ref().map_or(0, |r| r.status)
    }

    pub fn response(&self) -> &Response {
        self.response
            .as_ref()
            .unwrap_or_else(|e| panic!("request {} failed: {e}", self.index))
    }
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Sends `count` requests from `connections` threads, each with its own keep-alive
/// [`Client`], as fast as the server answers. `send(client, index)` makes request `index`.
/// Returns the outcomes in index order.
pub fn burst<F>(connections: usize, count: usize, send: F) -> Vec<Outcome>
where
    F: Fn(&Client, usize) -> Result<Response, String> + Sync,
{
    run(connections, count, None, send)
}

/// Like [`burst`], but request `i` is sent no earlier than `start + i / rate` (wall clock):
/// `rate` requests a second spread over `connections` threads.
pub fn paced<F>(
    connections: usize,
    count: usize,
    rate: f64,
    start: SystemTime,
    send: F,
) -> Vec<Outcome>
where
    F: Fn(&Client, usize) -> Result<Response, String> + Sync,
{
    run(connections, count, Some((rate, start)), send)
}

fn run<F>(
    connections: usize,
    count: usize,
    pace: Option<(f64, SystemTime)>,
    send: F,
) -> Vec<Outcome>
where
    F: Fn(&Client, usize) -> Result<Response, String> + Sync,
{
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(count));
    std::thread::scope(|scope| {
        for connection in 0..connections.max(1) {
            let (next, results, send) = (&next, &results, &send);
            scope.spawn(move || {
                let client = Client::new();
                let mut mine = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= count {
                        break;
                    }
                    if let Some((rate, start)) = pace {
                        let at = start + Duration::from_secs_f64(index as f64 / rate);
                        if let Ok(wait) = at.duration_since(SystemTime::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let sent_us = now_us();
                    let response = send(&client, index);
                    let answered_us = now_us();
                    mine.push(Outcome {
                        index,
                        connection,
                        sent_us,
                        answered_us,
                        response,
                    });
                }
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(mine);
            });
        }
    });
    let mut all = results.into_inner().unwrap_or_else(|e| e.into_inner());
    all.sort_by_key(|o| o.index);
    all
}

/// Status → how many, sorted by status.
pub fn status_counts(outcomes: &[Outcome]) -> Vec<(u16, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for o in outcomes {
        *counts.entry(o.status()).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// Sleeps until `offset` after the next whole wall-clock second and returns that second
/// (seconds since the epoch).
pub fn sleep_until_next_second(offset: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let next = now.as_secs() + 1;
    let at = Duration::from_secs(next) + offset;
    std::thread::sleep(at.saturating_sub(now));
    next
}

/// Held by a test while it measures timing or throughput, so that the other such tests of the
/// same test binary (libtest runs a binary's tests in parallel) wait instead of competing for
/// the CPU. Test binaries themselves run one after the other.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
