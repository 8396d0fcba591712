//! One Envoy worker's core and the host it runs on in the native build.
//!
//! The core's `Worker` is single-threaded (`Rc`, `RefCell`), as a wasm VM is. Here it lives in a
//! `WorkerSlot`: a mutex that its worker thread takes for each hook of a stream, and that the
//! main thread takes four times a second for the worker's tick and when a main-thread callout
//! answers for it. Workers never share a slot, so the lock never makes one worker wait for
//! another; it only orders a worker with the main thread.
//!
//! Confinement: nothing the core hands out (`Rc<KeyState>` in an outcome or an action) may
//! leave the lock. `WorkerSlot::with` only returns `Send` values, so the compiler refuses any
//! `Rc` that tries.
//!
//! Callouts: a request's callout is the stream's own (answered on its worker, cancelled if the
//! stream ends first, like the wasm SDK's); a tick's is the configuration's (answered on the
//! main thread). A request that waits gets a scheduler; whichever thread decides it leaves the
//! decision (`Resumed`) in `waiting` and commits the scheduler, and the request carries it out
//! on its worker. A waiting entry (and its scheduler) is removed only under the lock, when its
//! stream is destroyed, so no commit ever touches a deleted scheduler.

use crate::envoy::{describe_callout_init, Config, Filter, Scheduler};
use crate::plugin::{MainCallout, Plugin};
use crate::resumed::Resumed;
use std::cell::{Cell, RefCell};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tollgate_core::action::Action;
use tollgate_core::client_ip::ip_of;
use tollgate_core::fast_hash::FastMap;
use tollgate_core::host::{Clock, Host, HostError, QueueError, SharedStore, StoreError};
use tollgate_core::worker::Worker;

/// The context id of a worker's own tick (never a stream's: those start at 1).
pub const TICK_CONTEXT: u32 = 0;
/// The scheduler event that carries a `Resumed` to its stream.
pub const RESUME_EVENT: u64 = 1;

/// A request of this worker that waits for a callout's answer.
pub struct Waiting {
    scheduler: Scheduler,
    /// What it was told, once decided.
    resumed: Option<Resumed>,
}

pub struct NativeWorker {
    pub core: Worker,
    /// Requests waiting for an answer (bounded by the worker's live requests).
    waiting: RefCell<FastMap<u32, Waiting>>,
    /// Callouts sent from this worker's streams: (stream context, Envoy's id) → core token.
    /// An entry leaves with its answer or its stream.
    stream_callouts: RefCell<FastMap<(u32, u64), u32>>,
    next_token: Cell<u32>,
}

/// Decisions for waiting requests gathered during one core call, delivered after it.
pub type Decided = Vec<(u32, Resumed)>;

/// The core's `resume` for one call: gathers each decision into `decided`.
pub fn gather(decided: &mut Decided) -> impl FnMut(u32, Action<'_>) + '_ {
    move |ctx, action| {
        if let Some(resumed) = Resumed::of(action) {
            decided.push((ctx, resumed));
        }
    }
}

impl NativeWorker {
    pub fn new(core: Worker) -> NativeWorker {
        NativeWorker {
            core,
            waiting: RefCell::default(),
            stream_callouts: RefCell::default(),
            next_token: Cell::new(0),
        }
    }

    fn token(&self) -> u32 {
        let token = self.next_token.get().wrapping_add(1).max(1);
        self.next_token.set(token);
        token
    }

    /// Request `ctx` waits; its decision will come through `scheduler`.
    pub fn wait(&self, ctx: u32, scheduler: Scheduler) {
        self.waiting.borrow_mut().insert(
            ctx,
            Waiting {
                scheduler,
                resumed: None,
            },
        );
    }

    /// Leaves each decision with its waiting request and wakes the request on its worker.
    /// A request no longer waiting (its stream ended) is skipped.
    pub fn deliver(&self, decided: Decided) {
        let mut waiting = self.waiting.borrow_mut();
        for (ctx, resumed) in decided {
            if let Some(entry) = waiting.get_mut(&ctx) {
                entry.resumed = Some(resumed);
                entry.scheduler.commit(RESUME_EVENT);
            }
        }
    }

    /// The decision left for request `ctx`, if one came.
    pub fn take_resumed(&self, ctx: u32) -> Option<Resumed> {
        self.waiting
            .borrow_mut()
            .get_mut(&ctx)
            .and_then(|entry| entry.resumed.take())
    }

    /// Stream `ctx` is gone: its waiting entry (the caller drops the scheduler outside the
    /// lock) and its callouts (Envoy cancelled them) are forgotten.
    pub fn forget(&self, ctx: u32) -> Option<Scheduler> {
        let entry = self.waiting.borrow_mut().remove(&ctx)?;
        self.stream_callouts
            .borrow_mut()
            .retain(|(owner, _), _| *owner != ctx);
        Some(entry.scheduler)
    }

    /// The core token of stream `ctx`'s callout `id` (Envoy numbers callouts per stream).
    pub fn stream_callout_answered(&self, ctx: u32, id: u64) -> Option<u32> {
        self.stream_callouts.borrow_mut().remove(&(ctx, id))
    }
}

/// A worker's core, confined to its mutex (see the header).
struct Confined(NativeWorker);

// SAFETY: the worker is only ever reached through `WorkerSlot::with`, which holds the mutex for
// the whole access and lets only `Send` values out, so no `Rc` or `RefCell` inside is touched by
// two threads at once, nor outlives the lock.
unsafe impl Send for Confined {}

pub struct WorkerSlot(Mutex<Confined>);

impl WorkerSlot {
    pub fn new(worker: NativeWorker) -> WorkerSlot {
        WorkerSlot(Mutex::new(Confined(worker)))
    }

    pub fn with<R: Send>(&self, body: impl FnOnce(&NativeWorker) -> R) -> R {
        // A panic caught by the barrier while the worker was locked poisons the mutex; the
        // core's state stays consistent per call (its `RefCell` borrows are released by the
        // unwinding), so carry on with it.
        let guard = match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        body(&guard.0)
    }
}

/// Who the core is running for: a stream's hook on its worker, or the main thread.
#[derive(Clone, Copy)]
pub enum Caller {
    Stream { filter: Filter, ctx: u32 },
    Main { config: Config, worker: usize },
}

/// The core's host for one call into a worker's core.
pub struct NativeHost<'a> {
    pub plugin: &'a Plugin,
    pub worker: &'a NativeWorker,
    pub caller: Caller,
    /// The context per-request calls act on now (`switch_to`).
    current: Cell<u32>,
}

impl<'a> NativeHost<'a> {
    pub fn new(plugin: &'a Plugin, worker: &'a NativeWorker, caller: Caller) -> NativeHost<'a> {
        let current = match caller {
            Caller::Stream { ctx, .. } => ctx,
            Caller::Main { .. } => TICK_CONTEXT,
        };
        NativeHost {
            plugin,
            worker,
            caller,
            current: Cell::new(current),
        }
    }
}

impl SharedStore for NativeHost<'_> {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.plugin.shared.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.plugin.shared.set(key, value, cas)
    }
}

impl Clock for NativeHost<'_> {
    fn now_ms(&self) -> u64 {
        now_ns() / 1_000_000
    }
}

impl Host for NativeHost<'_> {
    fn dispatch(
        &self,
        _ctx: u32,
        cluster: &str,
        headers: Vec<(&str, &str)>,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let token = self.worker.token();
        match self.caller {
            Caller::Stream { filter, ctx } => {
                let id = filter
                    .callout(cluster, &headers, body, timeout)
                    .map_err(|e| HostError(describe_callout_init(e)))?;
                self.worker
                    .stream_callouts
                    .borrow_mut()
                    .insert((ctx, id), token);
            }
            Caller::Main { config, worker } => {
                let id = config
                    .callout(cluster, &headers, body, timeout)
                    .map_err(|e| HostError(describe_callout_init(e)))?;
                self.plugin
                    .main_callout_sent(id, MainCallout::Worker { worker, token });
            }
        }
        Ok(token)
    }

    fn switch_to(&self, ctx: u32) -> Result<(), HostError> {
        let live = ctx == TICK_CONTEXT
            || matches!(self.caller, Caller::Stream { ctx: own, .. } if own == ctx)
            || self.worker.waiting.borrow().contains_key(&ctx);
        if !live {
            return Err(HostError("request ended"));
        }
        self.current.set(ctx);
        Ok(())
    }

    fn enqueue_records(&self, batch: &[u8]) -> Result<(), QueueError> {
        self.plugin
            .enqueue_records(batch.to_vec())
            .map_err(QueueError::Refused)
    }

    /// Only a stream's own hook can read its peer: a request decided for another context (or
    /// on the main thread) has its address already (the adapter reads it up front whenever IP
    /// blocking needs it), so this answers empty there.
    fn downstream_ip(&self) -> String {
        match self.caller {
            Caller::Stream { filter, ctx } if ctx == self.current.get() => filter
                .attribute_string(crate::abi::AttributeId::SOURCE_ADDRESS)
                .map(|address| ip_of(&address).to_string())
                .unwrap_or_default(),
            _ => String::new(),
        }
    }
}

/// The wall clock in nanoseconds (Envoy's time source is the system clock).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
