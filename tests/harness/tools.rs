//! The external programs the tests start, as the Makefile lists them: `TEST_TOOLS` names each
//! program with its installer, and `make test` installs whatever of it is missing. The harness
//! starts no program that the list lacks, so a new dependency fails on the machine that adds it,
//! saying what to add, instead of on the next fresh machine.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::paths::repo_root;

/// The Makefile as it was when the tests were built: the list lives there and nowhere else.
const MAKEFILE: &str = include_str!("../../Makefile");

/// The list `make test` installs.
pub const TEST_TOOLS: &str = "TEST_TOOLS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installer {
    /// `apt-get install` of this package, unless the program is on `PATH`.
    Debian(String),
    /// This make target installs the program and writes its path to `target/<program>-path`.
    Make(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub program: String,
    pub installer: Installer,
}

/// The entries of the Makefile variable `list` (`PROGRAM=deb:PACKAGE` or `PROGRAM=make:TARGET`,
/// continued over lines ending in `\`). Panics when the variable is missing or an entry is
/// malformed: the Makefile is then wrong, not the machine.
pub fn listed(list: &str) -> Vec<Tool> {
    let start = format!("{list} :=");
    let mut lines = MAKEFILE.lines().skip_while(|l| !l.starts_with(&start));
    let Some(first) = lines.next() else {
        panic!("the Makefile defines no `{list}`");
    };
    let mut text = first[start.len()..].to_string();
    while text.ends_with('\\') {
        text.pop();
        text.push(' ');
        text.push_str(lines.next().unwrap_or_default());
    }
    text.split_whitespace()
        .map(|entry| {
            let parsed = entry.split_once('=').and_then(|(program, installer)| {
                let installer = match installer.split_once(':')? {
                    ("deb", package) => Installer::Debian(package.to_string()),
                    ("make", target) => Installer::Make(target.to_string()),
                    _ => return None,
                };
                Some(Tool {
                    program: program.to_string(),
                    installer,
                })
            });
            parsed.unwrap_or_else(|| {
                panic!(
                    "Makefile {list}: `{entry}` is not PROGRAM=deb:PACKAGE or PROGRAM=make:TARGET"
                )
            })
        })
        .collect()
}

/// The path of `program`, a program `TEST_TOOLS` lists: `$TOLLGATE_<PROGRAM>` when set, else the
/// path its make target recorded, else the first match on `PATH`. Panics with what to do when
/// the program is not listed or not installed.
pub fn program(program: &str) -> PathBuf {
    static TOOLS: OnceLock<Vec<Tool>> = OnceLock::new();
    let tools = TOOLS.get_or_init(|| listed(TEST_TOOLS));
    let Some(tool) = tools.iter().find(|t| t.program == program) else {
        panic!(
            "the tests start `{program}`, which the Makefile's {TEST_TOOLS} does not list, so \
             `make test` would not install it on a fresh machine: add `{program}=deb:<Debian \
             package>` (or `{program}=make:<target>`) there"
        );
    };
    let variable = format!(
        "TOLLGATE_{}",
        program.to_ascii_uppercase().replace(['-', '.'], "_")
    );
    if let Some(path) = std::env::var_os(&variable) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "${variable} is {}, which is not a file",
            path.display()
        );
        return path;
    }
    match &tool.installer {
        Installer::Make(target) => {
            let pointer = repo_root().join(format!("target/{program}-path"));
            let recorded = std::fs::read_to_string(&pointer).unwrap_or_else(|_| {
                panic!(
                    "{} is missing: run `make {target}` (installs {program} and records its path)",
                    pointer.display()
                )
            });
            let path = PathBuf::from(recorded.trim());
            assert!(
                path.is_file(),
                "{program} is not at {} any more: run `make {target}`",
                path.display()
            );
            path
        }
        Installer::Debian(package) => on_path(program).unwrap_or_else(|| {
            panic!(
                "`{program}` is not on PATH: `make test` installs it (or `make tools-test`; \
                 Debian package `{package}`), or set ${variable}"
            )
        }),
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tools_parse_and_name_envoy_through_its_make_target() {
        let tools = listed(TEST_TOOLS);
        assert!(tools.contains(&Tool {
            program: "envoy".into(),
            installer: Installer::Make("envoy".into()),
        }));
        assert!(tools.contains(&Tool {
            program: "wrk".into(),
            installer: Installer::Debian("wrk".into()),
        }));
    }

    #[test]
    #[should_panic(expected = "does not list, so `make test` would not install it")]
    fn a_program_the_list_lacks_is_refused() {
        program("definitely-not-a-listed-tool");
    }
}
