//! The few host services the core needs, as traits, so the core runs natively in unit tests
//! against `FakeHost`, which follows Envoy's rules (see docs/protocol.md and the CAS notes).
//! `SharedStore` and `Clock` serve every counter; `Host` adds what a worker's request path needs
//! (callouts, the usage queue, context switches, the peer address), and is what an adapter
//! implements.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The value changed since it was read (CAS mismatch).
    CasMismatch,
    /// Any other host status.
    Host(&'static str),
}

/// Envoy's shared data: per `vm_id`, shared by all workers, never freed.
pub trait SharedStore {
    /// The value and its CAS token, `None` when the key was never set.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// `cas: None` overwrites unconditionally (Envoy sends 0); a missing key is inserted whatever
    /// the CAS.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

pub trait Clock {
    fn now_ms(&self) -> u64;
}

/// A host call failed; the name of its status, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub &'static str);

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueError {
    /// No usage service registered the queue (its bootstrap extension is missing): which
    /// queue, for the log.
    NotFound(String),
    /// The queue exists but refused the batch.
    Refused(&'static str),
}

/// The host of one worker's request path.
pub trait Host: SharedStore + Clock {
    /// Sends a callout to `cluster` for the request context `ctx` (the worker's root context
    /// when no request asked); its answer comes back with the returned token.
    fn dispatch(
        &self,
        ctx: u32,
        cluster: &str,
        headers: Vec<(&str, &str)>,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, HostError>;
    /// Makes `ctx` the context the next per-request calls act on (fails when it has ended).
    fn switch_to(&self, ctx: u32) -> Result<(), HostError>;
    /// Hands a batch of usage records to the usage service.
    fn enqueue_records(&self, batch: &[u8]) -> Result<(), QueueError>;
    /// The downstream peer's IP of the current context's request; empty if unknown.
    fn downstream_ip(&self) -> String;
}

/// A callout the fake host was asked to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCallout {
    pub token: u32,
    /// The context it was dispatched for.
    pub ctx: u32,
    /// The context the host was called for when it was sent (`FakeHost::entered`): the SDK
    /// gives the answer to it, and drops the answer if it has ended by then.
    pub answer_to: u32,
    pub cluster: String,
    pub path: String,
    pub body: Option<Vec<u8>>,
}

/// In-memory host double with Envoy's rules: shared-data CAS semantics, unique callout tokens,
/// context switches that fail for contexts that have ended, a queue that exists only once
/// registered.
#[derive(Default)]
pub struct FakeHost {
    pub data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    pub now_ms: Cell<u64>,
    pub gets: Cell<u64>,
    /// Callouts sent, in order.
    pub callouts: RefCell<Vec<FakeCallout>>,
    /// Dispatch fails (as for an unknown cluster) while set.
    pub dispatch_fails: Cell<bool>,
    /// Contexts that have ended: switching to them fails.
    pub ended: RefCell<HashSet<u32>>,
    /// The context per-request calls act on now.
    pub current: Cell<u32>,
    /// `Some` once the usage service registered its queue: the batches it received.
    pub queue: RefCell<Option<Vec<Vec<u8>>>>,
    /// What `downstream_ip` answers.
    pub peer_ip: RefCell<String>,
    /// How many times the peer address was read.
    pub peer_reads: Cell<u64>,
    /// The context Envoy called the filter for (a test sets it with each call it makes).
    pub entered: Cell<u32>,
}

impl FakeHost {
    pub fn at(now_ms: u64) -> FakeHost {
        let host = FakeHost::default();
        host.now_ms.set(now_ms);
        host
    }

    pub fn advance(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get() + ms);
    }

    pub fn with_queue(self) -> FakeHost {
        *self.queue.borrow_mut() = Some(Vec::new());
        self
    }

    /// The callouts sent that `to` selects and `answered` does not hold, in order.
    pub fn unanswered(
        &self,
        answered: &HashSet<u32>,
        to: impl Fn(&FakeCallout) -> bool,
    ) -> Vec<FakeCallout> {
        self.callouts
            .borrow()
            .iter()
            .filter(|c| !answered.contains(&c.token) && to(c))
            .cloned()
            .collect()
    }

    /// The last callout sent.
    pub fn last_callout(&self) -> Option<FakeCallout> {
        self.callouts.borrow().last().cloned()
    }
}

impl Host for FakeHost {
    fn dispatch(
        &self,
        ctx: u32,
        cluster: &str,
        headers: Vec<(&str, &str)>,
        body: Option<&[u8]>,
        _timeout: Duration,
    ) -> Result<u32, HostError> {
        if self.dispatch_fails.get() {
            return Err(HostError("bad argument"));
        }
        let path = headers
            .iter()
            .find(|(name, _)| *name == ":path")
            .map(|(_, value)| value.to_string())
            .unwrap_or_default();
        let mut callouts = self.callouts.borrow_mut();
        let token = callouts.len() as u32 + 1;
        callouts.push(FakeCallout {
            token,
            ctx,
            answer_to: self.entered.get(),
            cluster: cluster.to_string(),
            path,
            body: body.map(<[u8]>::to_vec),
        });
        Ok(token)
    }

    fn switch_to(&self, ctx: u32) -> Result<(), HostError> {
        if self.ended.borrow().contains(&ctx) {
            return Err(HostError("not found"));
        }
        self.current.set(ctx);
        Ok(())
    }

    fn enqueue_records(&self, batch: &[u8]) -> Result<(), QueueError> {
        match self.queue.borrow_mut().as_mut() {
            Some(batches) => {
                batches.push(batch.to_vec());
                Ok(())
            }
            None => Err(QueueError::NotFound("queue 'tollgate.usage'".into())),
        }
    }

    fn downstream_ip(&self) -> String {
        self.peer_reads.set(self.peer_reads.get() + 1);
        self.peer_ip.borrow().clone()
    }
}

impl SharedStore for FakeHost {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.gets.set(self.gets.get() + 1);
        Ok(self.data.borrow().get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut data = self.data.borrow_mut();
        match data.get_mut(key) {
            Some((stored, version)) => {
                if let Some(expected) = cas.filter(|c| *c != 0) {
                    if expected != *version {
                        return Err(StoreError::CasMismatch);
                    }
                }
                *stored = value.to_vec();
                *version += 1;
            }
            None => {
                data.insert(key.to_string(), (value.to_vec(), 1));
            }
        }
        Ok(())
    }
}

impl Clock for FakeHost {
    fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_follows_envoy_cas_rules() {
        let host = FakeHost::default();
        // A missing key is inserted whatever the CAS.
        host.set("k", b"a", Some(42)).unwrap();
        let (_, cas) = host.get("k").unwrap().unwrap();
        host.set("k", b"b", Some(cas)).unwrap();
        assert_eq!(host.set("k", b"c", Some(cas)), Err(StoreError::CasMismatch));
        // No CAS overwrites unconditionally.
        host.set("k", b"d", None).unwrap();
        assert_eq!(host.get("k").unwrap().unwrap().0, b"d");
    }
}
