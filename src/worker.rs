//! One worker's core (`tollgate_core::worker::Worker`) with its proxy-wasm host: the host calls
//! behind `Host` (callouts on the root context's behalf, the usage queue, context switches, the
//! peer address) and the carrying out of the core's `Action`s. No decision is made here.

use crate::wasm_host::{describe, WasmHost};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action as WasmAction, BufferType, MapType};
use std::cell::Cell;
use std::time::Duration;
use tollgate_core::action::{Action, HeaderChange};
use tollgate_core::client_ip::ip_of;
use tollgate_core::host::{Clock, Host, HostError, QueueError, SharedStore, StoreError};
use tollgate_core::worker::{RequestHead, Worker, MAX_LOOKUP_ANSWER};

/// The name of the shared queue the usage service registers (`usage_service`).
pub const USAGE_QUEUE: &str = "tollgate.usage";

/// The host calls of one worker's request path.
pub struct WorkerHost {
    /// Every lookup callout is made on the root context's behalf (see `dispatch`).
    root_context: u32,
    vm_id: String,
    queue_id: Cell<Option<u32>>,
}

impl SharedStore for WorkerHost {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        WasmHost.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        WasmHost.set(key, value, cas)
    }
}

impl Clock for WorkerHost {
    fn now_ms(&self) -> u64 {
        WasmHost.now_ms()
    }
}

impl Host for WorkerHost {
    fn dispatch(
        &self,
        ctx: u32,
        cluster: &str,
        headers: Vec<(&str, &str)>,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError> {
        // Made on behalf of the root context, so Envoy does not cancel the callout when the
        // request ends: a cancelled callout never answers, and the SDK then keeps its token for
        // the VM's lifetime (one entry per client that left during a lookup). The SDK still
        // hands the answer to the request that asked, if it is there; else it drops it and
        // forgets the token, and the root dispatches again for anyone still waiting.
        let on_behalf = ctx != self.root_context;
        if on_behalf {
            hostcalls::set_effective_context(self.root_context)
                .map_err(|status| HostError(describe(status)))?;
        }
        let dispatched = hostcalls::dispatch_http_call(cluster, headers, body, vec![], timeout);
        if on_behalf {
            restore_effective_context(ctx);
        }
        dispatched.map_err(|status| HostError(describe(status)))
    }

    fn switch_to(&self, ctx: u32) -> Result<(), HostError> {
        hostcalls::set_effective_context(ctx).map_err(|status| HostError(describe(status)))
    }

    fn enqueue_records(&self, batch: &[u8]) -> Result<(), QueueError> {
        let queue = match self.queue_id.get() {
            Some(id) => id,
            None => match hostcalls::resolve_shared_queue(&self.vm_id, USAGE_QUEUE) {
                Ok(Some(id)) => {
                    self.queue_id.set(Some(id));
                    id
                }
                Ok(None) | Err(_) => {
                    return Err(QueueError::NotFound(format!(
                        "queue '{USAGE_QUEUE}' in vm '{}'",
                        self.vm_id
                    )))
                }
            },
        };
        hostcalls::enqueue_shared_queue(queue, Some(batch)).map_err(|status| {
            // Resolved again next time: the service may have been restarted.
            self.queue_id.set(None);
            QueueError::Refused(describe(status))
        })
    }

    fn downstream_ip(&self) -> String {
        downstream_ip()
    }
}

/// The core of one worker and the host it runs on, shared by the worker's root context and
/// every request on that worker.
pub struct WasmWorker {
    pub core: Worker,
    pub host: WorkerHost,
}

impl WasmWorker {
    pub fn new(core: Worker, vm_id: String, root_context: u32) -> WasmWorker {
        WasmWorker {
            core,
            host: WorkerHost {
                root_context,
                vm_id,
                queue_id: Cell::new(None),
            },
        }
    }

    pub fn on_request_headers(&self, ctx: u32, head: &RequestHead) -> WasmAction {
        let action = self
            .core
            .on_request_headers(&self.host, ctx, head, &mut resume);
        carry_out(ctx, action, false)
    }

    /// A callout's answer arrived at context `ctx` (a request context or the root).
    pub fn on_callout_answer(&self, ctx: u32, token: u32) {
        // The answer is held by the root context, which made the callout, while the SDK made
        // `ctx` effective: read it as the root, then carry on as `ctx`.
        let root = self.host.root_context;
        let as_root = ctx != root && hostcalls::set_effective_context(root).is_ok();
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, MAX_LOOKUP_ANSWER)
            .ok()
            .flatten();
        if as_root {
            restore_effective_context(ctx);
        }
        self.core.on_callout_answer(
            &self.host,
            ctx,
            token,
            status.as_deref(),
            body.as_deref(),
            &mut resume,
        );
    }

    /// Root tick: lost lookups sent again, lease callouts sent (renewals, settlements, lost
    /// ones), records queued, other workers' blocks picked up.
    pub fn on_tick(&self) {
        let root = self.host.root_context;
        self.core.rescue_orphans(&self.host, &mut resume);
        self.core.tick_leases(&self.host, &mut resume);
        self.core.flush_records(&self.host, root);
        self.core.refresh_blocked(&self.host, self.host.now_ms());
    }
}

/// Carries out the action for a request that waited (its context is the current one).
fn resume(ctx: u32, action: Action) {
    carry_out(ctx, action, true);
}

/// Carries out `action` on the current context's request.
fn carry_out(ctx: u32, action: Action, waited: bool) -> WasmAction {
    match action {
        Action::Wait => WasmAction::Pause,
        Action::Deny(reply) => {
            let body = reply.body();
            if let Err(status) =
                hostcalls::send_http_response(reply.status, reply.headers(), Some(body.as_bytes()))
            {
                log::error!(
                    "[ctx {ctx}] cannot send the {} denial: {}",
                    reply.denial.code(),
                    describe(status)
                );
            }
            WasmAction::Pause
        }
        Action::Pass(pass) => {
            for change in pass.header_changes() {
                let (name, result) = match change {
                    HeaderChange::Add(name, value) => (
                        name,
                        hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value),
                    ),
                    HeaderChange::Remove(name) => (
                        name,
                        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None),
                    ),
                    HeaderChange::Set(name, value) => (
                        name,
                        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)),
                    ),
                };
                if let Err(status) = result {
                    log::error!(
                        "[ctx {ctx}] cannot change request header {name}: {}",
                        describe(status)
                    );
                }
            }
            if waited {
                if let Err(status) = hostcalls::resume_http_request() {
                    log::error!(
                        "[ctx {ctx}] cannot resume the request: {}",
                        describe(status)
                    );
                }
            }
            WasmAction::Continue
        }
    }
}

/// Makes `ctx` the effective context again after acting for another one.
fn restore_effective_context(ctx: u32) {
    if let Err(status) = hostcalls::set_effective_context(ctx) {
        log::error!(
            "[ctx {ctx}] cannot restore the effective context: {}",
            describe(status)
        );
    }
}

/// The downstream peer's IP (Envoy's `source.address` without the port); empty if unknown.
pub fn downstream_ip() -> String {
    hostcalls::get_property(vec!["source", "address"])
        .ok()
        .flatten()
        .map(|b| ip_of(&String::from_utf8_lossy(&b)).to_string())
        .unwrap_or_default()
}
