//! The few host services the core needs, as traits, so the core runs natively in unit tests
//! against `FakeHost`, which follows Envoy's rules (see docs/protocol.md and the CAS notes).

use std::cell::RefCell;
use std::collections::HashMap;

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

/// In-memory host double with Envoy's shared-data semantics.
#[derive(Default)]
pub struct FakeHost {
    pub data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    pub now_ms: std::cell::Cell<u64>,
    pub gets: std::cell::Cell<u64>,
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
