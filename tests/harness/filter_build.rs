//! Which build of the filter the suite runs against: the proxy-wasm filter
//! (`target/tollgate.wasm`, `make wasm`) or the Envoy dynamic module
//! (`target/libtollgate_native.so`, `make native`), both built from one core (`core/`).
//!
//! `TOLLGATE_TEST_FILTER=wasm` (the default when unset) or `TOLLGATE_TEST_FILTER=native` picks it
//! for the whole test process; any other value stops the test with a message naming the variable
//! and the allowed values. Everything that differs between the builds is answered here, and
//! nowhere else: how Envoy loads the filter (`envoy.rs`), where its counters appear in `/stats`,
//! under which key it publishes its summary in filter state.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::OnceLock;

use crate::paths::{native_module, wasm_file};

/// The environment variable that picks the build under test.
pub const VARIABLE: &str = "TOLLGATE_TEST_FILTER";

/// The two builds of the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterBuild {
    /// The proxy-wasm filter `target/tollgate.wasm` in Envoy's V8 (`envoy.filters.http.wasm`),
    /// with the usage service as an `envoy.bootstrap.wasm` singleton.
    Wasm,
    /// The dynamic module `target/libtollgate_native.so` (`envoy.filters.http.dynamic_modules`),
    /// which delivers usage records itself from Envoy's main thread.
    Native,
}

impl FilterBuild {
    /// Both builds, the default first.
    pub const ALL: [FilterBuild; 2] = [FilterBuild::Wasm, FilterBuild::Native];

    /// The build this test process runs against: `$TOLLGATE_TEST_FILTER`, read once. Panics
    /// when the variable holds anything but `wasm` or `native`.
    pub fn under_test() -> FilterBuild {
        static UNDER_TEST: OnceLock<FilterBuild> = OnceLock::new();
        *UNDER_TEST
            .get_or_init(|| FilterBuild::from_variable(std::env::var_os(VARIABLE).as_deref()))
    }

    /// The build a value of `TOLLGATE_TEST_FILTER` names (`None`: unset, so wasm). Panics with
    /// the variable's name and the allowed values for anything else (an empty value included).
    pub fn from_variable(value: Option<&OsStr>) -> FilterBuild {
        FilterBuild::parse(value).unwrap_or_else(|message| panic!("{message}"))
    }

    /// Like [`from_variable`](Self::from_variable), returning the message instead of panicking.
    pub fn parse(value: Option<&OsStr>) -> Result<FilterBuild, String> {
        let Some(value) = value else {
            return Ok(FilterBuild::Wasm);
        };
        match value.to_str() {
            Some("wasm") => Ok(FilterBuild::Wasm),
            Some("native") => Ok(FilterBuild::Native),
            _ => Err(format!(
                "{VARIABLE}={value:?} is not a filter build: set {VARIABLE}=wasm \
                 (target/tollgate.wasm, the default when {VARIABLE} is unset) or \
                 {VARIABLE}=native (target/libtollgate_native.so)"
            )),
        }
    }

    /// `wasm` or `native`, the value of `TOLLGATE_TEST_FILTER` that selects it.
    pub fn name(self) -> &'static str {
        match self {
            FilterBuild::Wasm => "wasm",
            FilterBuild::Native => "native",
        }
    }

    /// The built filter Envoy loads; panics with the make target that builds it when missing.
    pub fn artifact(self) -> &'static Path {
        match self {
            FilterBuild::Wasm => wasm_file(),
            FilterBuild::Native => native_module(),
        }
    }

    /// What prefixes the filter's own counters and gauges in Envoy's `/stats`: Envoy puts wasm
    /// metrics under `wasmcustom.`, dynamic modules' under their `metrics_namespace`
    /// (`dynamicmodulescustom` by default); the filter names each `tollgate.<name>`.
    pub fn stats_prefix(self) -> &'static str {
        match self {
            FilterBuild::Wasm => "wasmcustom.tollgate.",
            FilterBuild::Native => "dynamicmodulescustom.tollgate.",
        }
    }

    /// The full `/stats` name of the filter's metric `name` (`usage.dropped` →
    /// `wasmcustom.tollgate.usage.dropped` or `dynamicmodulescustom.tollgate.usage.dropped`).
    /// Panics when `name` already carries a prefix: tests name the metric as the filter does
    /// after `tollgate.`, whatever the build.
    pub fn stat_name(self, name: &str) -> String {
        if let Some(prefix) = full_stat_prefix(name) {
            panic!(
                "filter stat {name:?}: name it without {prefix:?} (e.g. \"usage.dropped\"); the \
                 harness adds the prefix of the build under test"
            );
        }
        format!("{}{name}", self.stats_prefix())
    }

    /// The filter-state key of the filter's per-request summary (`%FILTER_STATE(<key>:PLAIN)%`):
    /// proxy-wasm's `set_property(["tollgate"])` lands under `wasm.tollgate`; the dynamic module
    /// sets `tollgate` itself.
    pub fn filter_state_key(self) -> &'static str {
        match self {
            FilterBuild::Wasm => "wasm.tollgate",
            FilterBuild::Native => "tollgate",
        }
    }
}

impl std::fmt::Display for FilterBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The build-specific part at the start of `name`, if any: `wasmcustom.`,
/// `dynamicmodulescustom.` or `tollgate.`.
pub(crate) fn full_stat_prefix(name: &str) -> Option<&'static str> {
    ["wasmcustom.", "dynamicmodulescustom.", "tollgate."]
        .into_iter()
        .find(|prefix| name.starts_with(prefix))
}
