//! Per-test log directory: every process of a stack writes `<name>.log` here. When a test fails
//! the logs are printed (the tail of each) and copied to `tests/artifacts/<test name>/`.

use std::path::{Path, PathBuf};

use crate::paths::artifacts_dir;

/// Lines of each log printed when a test fails (the full logs are kept under tests/artifacts).
const TAIL_LINES: usize = 150;

pub struct LogDir {
    dir: tempfile::TempDir,
}

impl LogDir {
    pub fn new() -> LogDir {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-it-logs-")
            .tempdir()
            .expect("create a temporary log directory");
        LogDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the log file of the process `name`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Prints every log and copies them to `tests/artifacts/<test name>/`. Called when a test
    /// fails; never panics.
    pub fn dump(&self) {
        let test = current_test_name();
        let keep = artifacts_dir().join(&test);
        let _ = std::fs::remove_dir_all(&keep);
        let kept = std::fs::create_dir_all(&keep).is_ok();
        let mut entries: Vec<_> = match std::fs::read_dir(self.dir.path()) {
            Ok(read) => read.flatten().map(|e| e.path()).collect(),
            Err(_) => return,
        };
        entries.sort();
        for path in entries {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(TAIL_LINES);
            eprintln!(
                "\n===== {name} (last {} of {} lines) =====",
                lines.len() - start,
                lines.len()
            );
            for line in &lines[start..] {
                eprintln!("{line}");
            }
            if kept {
                let _ = std::fs::copy(&path, keep.join(&*name));
            }
        }
        if kept {
            eprintln!("\n===== full logs kept in {} =====", keep.display());
        }
    }
}

impl Default for LogDir {
    fn default() -> Self {
        LogDir::new()
    }
}

/// The libtest thread name is the test's path (`module::test_name`).
pub fn current_test_name() -> String {
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .replace("::", "__");
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
