//! Where the binaries under test live (external programs, Envoy among them: `tools`). Each lookup
//! panics with the `make` target to run when the file is missing, and warns when it looks older
//! than its sources. Which of the two filter builds a test loads: `filter_build`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The repository root (the parent of this crate).
pub fn repo_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest
            .parent()
            .expect("tests/ has a parent directory")
            .to_path_buf()
    })
}

/// The proxy-wasm build of the filter: `target/tollgate.wasm` (`make wasm`).
pub fn wasm_file() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| {
        let path = require(
            repo_root().join("target/tollgate.wasm"),
            "the wasm filter (TOLLGATE_TEST_FILTER=wasm, the default)",
            "wasm",
        );
        warn_if_stale(
            &path,
            "wasm",
            &[
                repo_root().join("src"),
                repo_root().join("core"),
                repo_root().join("Cargo.toml"),
            ],
        );
        path
    })
}

/// The native build of the filter, an Envoy dynamic module: `target/libtollgate_native.so`
/// (`make native`).
pub fn native_module() -> &'static Path {
    static NATIVE: OnceLock<PathBuf> = OnceLock::new();
    NATIVE.get_or_init(|| {
        let path = require(
            repo_root().join("target/libtollgate_native.so"),
            "the native filter, an Envoy dynamic module (TOLLGATE_TEST_FILTER=native),",
            "native",
        );
        warn_if_stale(
            &path,
            "native",
            &[
                repo_root().join("native"),
                repo_root().join("core"),
                repo_root().join("Cargo.toml"),
            ],
        );
        path
    })
}

/// The control plane binary: `target/release/tollgate`.
pub fn tollgate_binary() -> &'static Path {
    static TOLLGATE: OnceLock<PathBuf> = OnceLock::new();
    TOLLGATE.get_or_init(|| {
        let path = require(
            repo_root().join("target/release/tollgate"),
            "the control plane binary",
            "control-plane",
        );
        warn_if_stale(&path, "control-plane", &[repo_root().join("control-plane")]);
        path
    })
}

/// `scripts/run.sh`, what `make run` starts.
pub fn run_script() -> PathBuf {
    repo_root().join("scripts/run.sh")
}

/// Where logs of failed tests are kept (git-ignored).
pub fn artifacts_dir() -> PathBuf {
    repo_root().join("tests/artifacts")
}

fn require(path: PathBuf, what: &str, make_target: &str) -> PathBuf {
    if !path.is_file() {
        // `make build` builds wasm, envoy and the control plane, not the native module.
        let or_build = if make_target == "native" {
            ""
        } else {
            " (or `make build`)"
        };
        panic!(
            "{what} not found at {}: run `make {make_target}`{or_build} first",
            path.display()
        );
    }
    path
}

fn warn_if_stale(artifact: &Path, make_target: &str, sources: &[PathBuf]) {
    let Ok(built) = std::fs::metadata(artifact).and_then(|m| m.modified()) else {
        return;
    };
    let newest = sources.iter().filter_map(|s| newest_mtime(s)).max();
    if let Some(newest) = newest {
        if newest > built {
            eprintln!(
                "warning: {} is older than its sources; rebuild it (make {make_target}) to test \
                 current code",
                artifact.display()
            );
        }
    }
}

fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    let mut newest = None;
    for entry in std::fs::read_dir(path).ok()?.flatten() {
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        newest = newest.max(newest_mtime(&entry.path()));
    }
    newest
}
