//! One filter configuration of the native build, shared by every stream and thread: the
//! parsed configuration, the Envoy-wide state in the module's memory (`SharedMemory`), one
//! core per Envoy worker (`WorkerSlot`), the usage delivery, the metrics, and the main thread's
//! work (a tick four times a second, driven by the `Ticker` thread through the
//! configuration's scheduler, and the answers to the configuration's callouts).

use crate::barrier;
use crate::envoy::{CalloutAnswer, Config, Scheduler};
use crate::shared_memory::SharedMemory;
use crate::worker_slot::{
    gather, now_ns, Caller, Decided, NativeHost, NativeWorker, WorkerSlot, TICK_CONTEXT,
};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;
use tollgate_core::config::FilterConfig;
use tollgate_core::fast_hash::FastMap;
use tollgate_core::metrics::{self, PendingCounts};
use tollgate_core::usage_delivery::UsageDelivery;
use tollgate_core::worker::{Worker, MAX_LOOKUP_ANSWER};

/// How often the main thread ticks every worker (the wasm build's filter tick).
const TICK: Duration = Duration::from_millis(250);
/// The configuration scheduler's event for a tick.
const TICK_EVENT: u64 = 1;
/// The largest answer read from a configuration's callout: a usage-ingest answer (it lists
/// rejected records at most) or a lookup or lease answer (at most `MAX_LOOKUP_ANSWER`).
pub const MAX_MAIN_ANSWER: usize = 1 << 20;
const _: () = assert!(MAX_LOOKUP_ANSWER <= MAX_MAIN_ANSWER);
/// Native-only counter: panics caught at the FFI boundary (`barrier.rs`).
pub const PANICS: &str = "tollgate.panics";
/// Record batches (64 records at most each) handed from the workers to the main thread and
/// not yet taken: ~1 s of records at 65k requests/s, taken four times a second. Past it a
/// worker drops its batch and counts it (`tollgate.usage.unqueued`), as the wasm build does
/// when its queue refuses one.
const BATCHES_IN_HAND: usize = 1_024;

/// What a callout of the configuration (main thread) was for.
#[derive(Debug, Clone, Copy)]
pub enum MainCallout {
    /// A worker's tick sent it (lease renewal or settlement, a lookup nobody else could send).
    Worker { worker: usize, token: u32 },
    /// A usage POST (its delivery token).
    Usage { token: u32 },
}

/// Metric ids Envoy gave the configuration.
struct Metrics {
    /// Indexed like `metrics::all()`.
    counters: Vec<usize>,
    panics: usize,
    buffered: usize,
    panics_reported: u64,
}

/// State only the main thread touches (a mutex for `Sync`; never contended).
struct MainState {
    callouts: FastMap<u64, MainCallout>,
    next_usage_token: u32,
    metrics: Metrics,
}

pub struct Plugin {
    pub config: FilterConfig,
    pub envoy: Config,
    pub shared: SharedMemory,
    workers: Vec<WorkerSlot>,
    /// Only the main thread locks it: workers hand batches over through `batches`, never
    /// waiting (a worker that blocked here behind the main thread lost its core for a whole
    /// scheduler tick, 4 ms, measured ~13 times a second at 30k requests/s).
    usage: Mutex<UsageDelivery>,
    batches: SyncSender<Vec<u8>>,
    handed: Mutex<Receiver<Vec<u8>>>,
    main: Mutex<MainState>,
    ticker: Mutex<Option<Ticker>>,
    next_context: AtomicU32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A random number of this process (std's `RandomState` is seeded from the OS).
fn random_u64(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_ns() ^ salt);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl Plugin {
    /// Parses the configuration and defines the metrics (Envoy allows that only now).
    /// `workers`: Envoy's worker count.
    pub fn new(envoy: Config, bytes: &[u8], workers: u32) -> Result<Plugin, String> {
        let config = FilterConfig::parse(bytes, |name| std::env::var(name).ok())
            .map_err(|e| format!("bad filter configuration: {e}"))?;
        let define = |name: &str| {
            envoy
                .define_counter(name)
                .map_err(|e| format!("cannot define counter {name}: {}", e.0))
        };
        let counters = metrics::all()
            .iter()
            .map(|(_, name)| define(name))
            .collect::<Result<Vec<_>, _>>()?;
        let panics = define(PANICS)?;
        let buffered = envoy
            .define_gauge(metrics::USAGE_BUFFERED)
            .map_err(|e| format!("cannot define gauge {}: {}", metrics::USAGE_BUFFERED, e.0))?;
        // One instance id per configuration: its workers share every lease record.
        let instance = format!("i_{:016x}", random_u64(0));
        let slots = (0..workers.max(1))
            .map(|i| {
                let core = Worker::new(
                    config.clone(),
                    instance.clone(),
                    TICK_CONTEXT,
                    random_u64(u64::from(i) + 1),
                );
                WorkerSlot::new(NativeWorker::new(core))
            })
            .collect();
        let (batches, handed) = sync_channel(BATCHES_IN_HAND);
        Ok(Plugin {
            usage: Mutex::new(UsageDelivery::new(&config)),
            batches,
            handed: Mutex::new(handed),
            config,
            envoy,
            shared: SharedMemory::default(),
            workers: slots,
            main: Mutex::new(MainState {
                callouts: FastMap::default(),
                next_usage_token: 0,
                metrics: Metrics {
                    counters,
                    panics,
                    buffered,
                    panics_reported: 0,
                },
            }),
            ticker: Mutex::new(None),
            next_context: AtomicU32::new(0),
        })
    }

    /// Starts the main thread's tick (not in `envoy --mode validate`).
    pub fn start_ticker(self: &Arc<Plugin>) -> Result<(), String> {
        let scheduler = self
            .envoy
            .new_scheduler()
            .ok_or("Envoy gave the configuration no scheduler")?;
        *lock(&self.ticker) = Some(Ticker::start(scheduler)?);
        Ok(())
    }

    /// Stops the tick thread (the configuration is being destroyed).
    pub fn stop_ticker(&self) {
        if let Some(ticker) = lock(&self.ticker).take() {
            ticker.stop();
        }
    }

    /// A context id for a new stream (unique among live streams; never `TICK_CONTEXT`).
    pub fn new_context(&self) -> u32 {
        loop {
            let id = self
                .next_context
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
            if id != TICK_CONTEXT {
                return id;
            }
        }
    }

    /// The slot of Envoy's worker `index` (an unexpected index shares a slot: still correct,
    /// the slot's lock orders them).
    pub fn worker(&self, index: u32) -> (usize, &WorkerSlot) {
        let i = index as usize % self.workers.len();
        (i, &self.workers[i])
    }

    /// A worker's batch of records, for the main thread's usage delivery; never waits.
    pub fn enqueue_records(&self, batch: Vec<u8>) -> Result<(), &'static str> {
        match self.batches.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                Err("the main thread has not taken the last 1,024 batches")
            }
            Err(TrySendError::Disconnected(_)) => Err("the usage delivery has stopped"),
        }
    }

    /// Main thread: the batches the workers handed over, into the usage buffer.
    fn take_batches(&self, usage: &mut UsageDelivery, now_ms: u64) {
        let handed = lock(&self.handed);
        while let Ok(batch) = handed.try_recv() {
            usage.push(batch, now_ms);
        }
    }

    pub fn main_callout_sent(&self, id: u64, callout: MainCallout) {
        lock(&self.main).callouts.insert(id, callout);
    }

    /// Main thread, every `TICK`: each worker's tick (lost lookups sent again, lease
    /// renewals and settlements, its records queued, other workers' blocks picked up), then
    /// usage delivery and the metrics.
    pub fn on_tick(&self) {
        let mut counts = PendingCounts::default();
        for (index, slot) in self.workers.iter().enumerate() {
            let moved = slot.with(|worker| {
                let host = NativeHost::new(self, worker, self.main_caller(index));
                let mut decided = Decided::new();
                let mut resume = gather(&mut decided);
                worker.core.rescue_orphans(&host, &mut resume);
                worker.core.tick_leases(&host, &mut resume);
                worker.core.flush_records(&host, TICK_CONTEXT);
                worker.core.refresh_blocked(&host, now_ns() / 1_000_000);
                drop(resume);
                worker.deliver(decided);
                worker.core.counts.borrow_mut().drain()
            });
            counts.merge(&moved);
        }
        self.send_usage();
        let buffered = lock(&self.usage).report(&mut counts);
        self.flush_metrics(counts, buffered);
    }

    fn main_caller(&self, worker: usize) -> Caller {
        Caller::Main {
            config: self.envoy,
            worker,
        }
    }

    /// Sends the usage POST that is due, if any.
    fn send_usage(&self) {
        let now = now_ns() / 1_000_000;
        let mut usage = lock(&self.usage);
        self.take_batches(&mut usage, now);
        let Some(post) = usage.due(now) else {
            return;
        };
        let cluster = usage.upstream().cluster.clone();
        let sent = self
            .envoy
            .callout(&cluster, &usage.headers(), Some(&post.body), post.timeout);
        match sent {
            Ok(id) => {
                let mut main = lock(&self.main);
                main.next_usage_token = main.next_usage_token.wrapping_add(1);
                let token = main.next_usage_token;
                main.callouts.insert(id, MainCallout::Usage { token });
                drop(main);
                usage.sent(token, post.count);
            }
            Err(e) => {
                log::debug!("usage callout: {}", crate::envoy::describe_callout_init(e));
                usage.dispatch_failed(now);
            }
        }
    }

    /// Main thread: the answer to the configuration's callout `id`.
    pub fn on_callout_answer(&self, id: u64, answer: CalloutAnswer) {
        let callout = lock(&self.main).callouts.remove(&id);
        let now = now_ns() / 1_000_000;
        match callout {
            Some(MainCallout::Usage { token }) => {
                lock(&self.usage).answered(token, answer.status.as_deref(), &answer.body, now);
                // More may be waiting: keep the pipe full.
                self.send_usage();
            }
            Some(MainCallout::Worker { worker, token }) => {
                let Some(slot) = self.workers.get(worker) else {
                    return;
                };
                slot.with(|native| {
                    let host = NativeHost::new(self, native, self.main_caller(worker));
                    let mut decided = Decided::new();
                    native.core.on_callout_answer(
                        &host,
                        TICK_CONTEXT,
                        token,
                        answer.status.as_deref(),
                        Some(&answer.body),
                        &mut gather(&mut decided),
                    );
                    native.deliver(decided);
                });
            }
            None => log::debug!("answer for a callout nobody waits for (id {id})"),
        }
    }

    fn flush_metrics(&self, mut counts: PendingCounts, buffered: u64) {
        let mut main = lock(&self.main);
        let metrics = &mut main.metrics;
        for (index, delta) in counts.drain() {
            if let Some(id) = metrics.counters.get(index) {
                self.envoy.increment_counter(*id, delta);
            }
        }
        let panics = barrier::panics();
        if panics > metrics.panics_reported {
            self.envoy
                .increment_counter(metrics.panics, panics - metrics.panics_reported);
            metrics.panics_reported = panics;
        }
        self.envoy.set_gauge(metrics.buffered, buffered);
    }
}

/// A thread that wakes the main thread every `TICK` through the configuration's scheduler.
/// It owns the scheduler and deletes it (by dropping it) only after the thread has stopped,
/// so no commit can reach a deleted scheduler.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    scheduler: Arc<Scheduler>,
}

impl Ticker {
    fn start(scheduler: Scheduler) -> Result<Ticker, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let scheduler = Arc::new(scheduler);
        let thread = {
            let stop = stop.clone();
            let scheduler = scheduler.clone();
            std::thread::Builder::new()
                .name("tollgate-tick".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(TICK);
                        if !stop.load(Ordering::Acquire) {
                            scheduler.commit(TICK_EVENT);
                        }
                    }
                })
                .map_err(|e| format!("cannot start the tick thread: {e}"))?
        };
        Ok(Ticker {
            stop,
            thread,
            scheduler,
        })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        if self.thread.join().is_err() {
            log::error!("tollgate: the tick thread panicked");
        }
        // The thread is gone: the scheduler can be deleted now.
        drop(self.scheduler);
    }
}
