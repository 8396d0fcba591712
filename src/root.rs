//! Root contexts. The same `.wasm` plays two roles, chosen by the plugin's root id:
//! the HTTP filter (one root per worker, plus one on the main thread) and, with root id
//! `tollgate-usage` in an `envoy.bootstrap.wasm` singleton, the usage service.

use crate::request::TollgateRequest;
use crate::usage_service::{UsageService, USAGE_ROOT_ID};
use crate::wasm_host::{describe, now_ns, WasmHost};
use crate::worker::WasmWorker;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MetricType};
use std::rc::Rc;
use std::time::Duration;
use tollgate_core::config::FilterConfig;
use tollgate_core::counters::CREATE_ONLY;
use tollgate_core::host::{SharedStore, StoreError};
use tollgate_core::metrics::{self, PendingCounts};
use tollgate_core::worker::Worker;

const FILTER_TICK: Duration = Duration::from_millis(250);
const SERVICE_TICK: Duration = Duration::from_millis(100);

enum Role {
    Unconfigured,
    Filter(Rc<WasmWorker>),
    Usage {
        service: Box<UsageService>,
        counts: PendingCounts,
        buffered_gauge: u32,
    },
}

pub struct TollgateRoot {
    context_id: u32,
    role: Role,
    metric_ids: Vec<u32>,
}

fn property_text(path: &[&str]) -> Option<String> {
    let bytes = hostcalls::get_property(path.to_vec()).ok().flatten()?;
    String::from_utf8(bytes).ok()
}

const INSTANCE_KEY: &str = "tollgate.instance";

/// A random number: `RandomState` is seeded from WASI `random_get`, fresh per process and VM.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_ns());
    hasher.finish()
}

/// This Envoy process's instance id: the first worker to start picks it, the others read it.
fn instance_id() -> Result<String, String> {
    for _ in 0..4 {
        if let Ok(Some((bytes, _))) = WasmHost.get(INSTANCE_KEY) {
            if let Ok(id) = String::from_utf8(bytes) {
                return Ok(id);
            }
        }
        let id = format!("i_{:016x}", random_u64());
        match WasmHost.set(INSTANCE_KEY, id.as_bytes(), Some(CREATE_ONLY)) {
            Ok(()) => return Ok(id),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Host(e)) => return Err(format!("cannot store the instance id: {e}")),
        }
    }
    Err("cannot agree on an instance id".into())
}

impl TollgateRoot {
    pub fn new(context_id: u32) -> TollgateRoot {
        TollgateRoot {
            context_id,
            role: Role::Unconfigured,
            metric_ids: Vec::new(),
        }
    }

    fn flush_metrics(&self, counts: &mut PendingCounts) {
        for (index, delta) in counts.drain() {
            if let Some(id) = self.metric_ids.get(index) {
                if let Err(status) = hostcalls::increment_metric(*id, delta as i64) {
                    log::warn!(
                        "[ctx {}] metric update failed: {}",
                        self.context_id,
                        describe(status)
                    );
                }
            }
        }
    }

    fn configure(&mut self) -> Result<(), String> {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .map_err(|s| format!("cannot read the plugin configuration: {}", describe(s)))?
            .unwrap_or_default();
        let config = FilterConfig::parse(&bytes, |name| std::env::var(name).ok())
            .map_err(|e| format!("bad plugin configuration: {e}"))?;
        let mut ids = Vec::new();
        for (_, name) in metrics::all() {
            let id = hostcalls::define_metric(MetricType::Counter, &name)
                .map_err(|s| format!("cannot define metric {name}: {}", describe(s)))?;
            ids.push(id);
        }
        self.metric_ids = ids;
        let root_id = property_text(&["plugin_root_id"]).unwrap_or_default();
        let (role, tick) = if root_id == USAGE_ROOT_ID {
            let buffered_gauge =
                hostcalls::define_metric(MetricType::Gauge, metrics::USAGE_BUFFERED)
                    .map_err(|s| format!("cannot define a gauge: {}", describe(s)))?;
            let service = Box::new(UsageService::start(self.context_id, config)?);
            log::info!("[ctx {}] tollgate: usage service started", self.context_id);
            let role = Role::Usage {
                service,
                counts: PendingCounts::default(),
                buffered_gauge,
            };
            (role, SERVICE_TICK)
        } else {
            let vm_id = property_text(&["plugin_vm_id"]).unwrap_or_default();
            log::info!(
                "[ctx {}] tollgate: filter configured; control plane {}, cache ttl {:?}, failure mode {:?}, usage records {}",
                self.context_id,
                config.control_plane,
                config.cache.ttl,
                config.failure_mode,
                if config.usage.enabled { "on" } else { "off" }
            );
            let instance = instance_id()?;
            let core = Worker::new(config, instance, self.context_id, random_u64());
            let worker = WasmWorker::new(core, vm_id, self.context_id);
            (Role::Filter(Rc::new(worker)), FILTER_TICK)
        };
        hostcalls::set_tick_period(tick)
            .map_err(|s| format!("cannot set the tick period: {}", describe(s)))?;
        self.role = role;
        Ok(())
    }
}

impl Context for TollgateRoot {
    fn on_http_call_response(&mut self, token: u32, _: usize, _: usize, _: usize) {
        match &mut self.role {
            Role::Filter(worker) => worker.on_callout_answer(self.context_id, token),
            Role::Usage { service, .. } => service.on_answer(token),
            Role::Unconfigured => {}
        }
    }
}

impl RootContext for TollgateRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        match self.configure() {
            Ok(()) => true,
            Err(e) => {
                log::error!("[ctx {}] tollgate: {e}", self.context_id);
                false
            }
        }
    }

    fn on_tick(&mut self) {
        match &mut self.role {
            Role::Filter(worker) => {
                let worker = worker.clone();
                worker.on_tick();
                let mut counts = std::mem::take(&mut *worker.core.counts.borrow_mut());
                self.flush_metrics(&mut counts);
            }
            Role::Usage {
                service,
                counts,
                buffered_gauge,
            } => {
                service.on_tick();
                let buffered = service.report(counts);
                let gauge = *buffered_gauge;
                let mut counts = std::mem::take(counts);
                self.flush_metrics(&mut counts);
                if let Err(status) = hostcalls::record_metric(gauge, buffered) {
                    log::debug!(
                        "[ctx {}] gauge update failed: {}",
                        self.context_id,
                        describe(status)
                    );
                }
            }
            Role::Unconfigured => {}
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Role::Usage { service, .. } = &mut self.role {
            service.on_queue_ready(queue_id);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = match &self.role {
            Role::Filter(worker) => Some(worker.clone()),
            _ => None,
        };
        Some(Box::new(TollgateRequest::new(context_id, worker)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
