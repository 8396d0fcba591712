//! The panic barrier: no panic crosses `extern "C"` into Envoy (it would abort the whole
//! process). Every hook runs its body through `guard`; a panic is caught, logged with the
//! hook's name, counted (`tollgate.panics`), and the hook answers its fallback (for a request
//! hook: a 500 for that request). The module is built with `panic = "unwind"` for this (the
//! `native` cargo profile); the core denies `unwrap`, `expect` and `panic!` besides.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

/// Panics caught since the module loaded.
static PANICS: AtomicU64 = AtomicU64::new(0);

/// Runs `body`; if it panics, logs and counts the panic and answers `fallback()` (or, should
/// that panic too, `T::default()`).
pub fn guard<T: Default>(hook: &str, body: impl FnOnce() -> T, fallback: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            PANICS.fetch_add(1, Ordering::Relaxed);
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_string());
            log::error!("tollgate: panic in {hook} caught: {message}");
            // A fallback that panics too must not unwind into Envoy either.
            catch_unwind(AssertUnwindSafe(fallback)).unwrap_or_else(|_| {
                log::error!("tollgate: the fallback of {hook} panicked as well");
                T::default()
            })
        }
    }
}

/// Panics caught so far (for the `tollgate.panics` counter).
pub fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_the_fallback_and_is_counted() {
        let before = panics();
        let answer = guard("test hook", || -> u32 { panic!("boom") }, || 500);
        assert_eq!(answer, 500);
        assert!(panics() > before);
    }

    #[test]
    fn no_panic_passes_the_value_through() {
        assert_eq!(guard("test hook", || 200, || 500), 200);
    }
}
