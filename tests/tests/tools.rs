//! The suite runs only programs that `make test` installs: every process a test starts is either
//! built by this workspace or listed in the Makefile's `TEST_TOOLS`, and every listed program is
//! there. A machine where someone once installed a tool by hand cannot hide a missing entry.

use std::path::{Path, PathBuf};

use tollgate_integration_tests::paths::repo_root;
use tollgate_integration_tests::tools::{listed, program, TEST_TOOLS};

/// What a test may start besides a listed tool: programs this workspace builds or ships.
const PROJECT_PROGRAMS: [&str; 3] = [
    "tollgate_binary()", // target/release/tollgate (tests/harness)
    "BIN",               // env!("CARGO_BIN_EXE_tollgate") (control-plane/tests)
    "run_script()",      // scripts/run.sh (tests/tests/make_run.rs)
];

/// Split so that this file's own text holds no spawn for the scan to find.
const SPAWN: &str = concat!("Command", "::new(");

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text between the parenthesis that ends `SPAWN` and the one that closes it.
fn argument(rest: &str) -> &str {
    let mut depth = 1;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return rest[..i].trim();
                }
            }
            _ => {}
        }
    }
    rest
}

/// `program("name")` or `tools::program("name")` → `name`.
fn listed_program(argument: &str) -> Option<&str> {
    let call = argument.strip_prefix("tools::").unwrap_or(argument);
    call.strip_prefix("program(\"")?.strip_suffix("\")")
}

#[test]
fn every_program_a_test_starts_is_built_here_or_installed_by_make_test() {
    let listed: Vec<String> = listed(TEST_TOOLS).into_iter().map(|t| t.program).collect();
    let mut files = Vec::new();
    for dir in ["tests", "control-plane/tests", "control-plane/src", "src"] {
        rust_files(&repo_root().join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {files:?}");
    let mut spawns = 0;
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (offset, _) in text.match_indices(SPAWN) {
            spawns += 1;
            let line = text[..offset].lines().count().max(1);
            let arg = argument(&text[offset + SPAWN.len()..]);
            let ok = match listed_program(arg) {
                Some(name) => listed.iter().any(|l| l == name),
                None => PROJECT_PROGRAMS.contains(&arg),
            };
            if !ok {
                let file = file.strip_prefix(repo_root()).unwrap_or(file);
                problems.push(format!(
                    "{}:{line}: starts `{arg}`, which the Makefile's {TEST_TOOLS} does not list",
                    file.display()
                ));
            }
        }
    }
    assert!(spawns >= 5, "the scan found only {spawns} process starts");
    assert!(
        problems.is_empty(),
        "a fresh machine would not have these programs:\n  {}\nstart external programs as \
         `tools::program(\"name\")` and add `name=deb:<Debian package>` to {TEST_TOOLS} in the \
         Makefile, so that `make test` installs them",
        problems.join("\n  ")
    );
}

#[test]
fn every_program_make_test_installs_is_installed() {
    let missing: Vec<String> = listed(TEST_TOOLS)
        .into_iter()
        .filter_map(|tool| {
            std::panic::catch_unwind(|| program(&tool.program))
                .err()
                .map(|_| tool.program)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "not installed: {missing:?}: `make test` (or `make tools-test`) installs them"
    );
}
