//! The native build's ABI against the Envoy we run: every `envoy_dynamic_module_callback_*`
//! that `native/src/abi.rs` declares in its `extern "C"` block (the callbacks the module calls,
//! resolved from the envoy executable when Envoy `dlopen`s the module) is exported by that
//! binary. A callback Envoy lacks makes `dlopen` fail for every configuration that loads the
//! module, so this names the missing ones before any test starts Envoy. It reads the source and
//! the binary only, so it runs for either `TOLLGATE_TEST_FILTER` and needs no built module.

use std::collections::BTreeSet;
use std::process::Command;

use tollgate_integration_tests::paths::repo_root;
use tollgate_integration_tests::tools::program;

const PREFIX: &str = "envoy_dynamic_module_callback_";

/// The text of `line` before a `//` comment.
fn code(line: &str) -> &str {
    line.find("//").map_or(line, |at| &line[..at])
}

/// Every `pub fn envoy_dynamic_module_callback_*` declared inside an `extern "C" { … }` block
/// (`unsafe extern "C"` too) of `source`, comments ignored.
fn declared_callbacks(source: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    // Depth of braces inside the current extern block; None outside one.
    let mut depth: Option<usize> = None;
    for line in source.lines() {
        let code = code(line);
        let mut rest = code;
        if depth.is_none() {
            // `extern "C" {` opens a block; `extern "C" fn(…)` (a pointer type) does not.
            let Some(at) = code.find("extern \"C\"") else {
                continue;
            };
            let after = code[at + "extern \"C\"".len()..].trim_start();
            if !after.starts_with('{') {
                continue;
            }
            depth = Some(0);
            rest = after;
        }
        let words: Vec<&str> = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            if pair[0] == "fn" && pair[1].starts_with(PREFIX) && rest.contains("pub ") {
                names.insert(pair[1].to_string());
            }
        }
        for c in rest.chars() {
            match (c, depth) {
                ('{', Some(d)) => depth = Some(d + 1),
                ('}', Some(1)) => depth = None,
                ('}', Some(d)) => depth = Some(d.saturating_sub(1)),
                _ => {}
            }
        }
    }
    names
}

#[test]
fn the_parser_reads_only_extern_blocks() {
    let source = r#"
pub type Hook = unsafe extern "C" fn(envoy_dynamic_module_callback_not_a_decl: u32);
// pub fn envoy_dynamic_module_callback_commented_out();
extern "C" {
    /// Doc: envoy_dynamic_module_callback_in_a_doc_comment.
    pub fn envoy_dynamic_module_callback_one(level: u32);
    pub fn envoy_dynamic_module_callback_two(
        buffer: Buffer,
    ) -> bool;
    // pub fn envoy_dynamic_module_callback_old();
}
pub fn envoy_dynamic_module_callback_outside() {}
unsafe extern "C" {
    pub fn envoy_dynamic_module_callback_three();
}
"#;
    let names: Vec<String> = declared_callbacks(source).into_iter().collect();
    assert_eq!(
        names,
        [
            "envoy_dynamic_module_callback_one",
            "envoy_dynamic_module_callback_three",
            "envoy_dynamic_module_callback_two"
        ]
    );
}

#[test]
fn envoy_exports_every_callback_the_native_module_declares() {
    let abi = repo_root().join("native/src/abi.rs");
    let source = std::fs::read_to_string(&abi)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", abi.display()));
    let declared = declared_callbacks(&source);
    assert!(
        !declared.is_empty(),
        "found no `pub fn {PREFIX}*` in an extern \"C\" block of {}: has its layout changed?",
        abi.display()
    );

    let envoy = program("envoy");
    let output = Command::new(program("nm"))
        .args(["-D", "--defined-only"])
        .arg(&envoy)
        .output()
        .expect("run nm");
    assert!(
        output.status.success(),
        "nm -D --defined-only {} failed ({}): {}",
        envoy.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // `<address> <type> <name>[@<version>]`, one symbol a line.
    let exported: BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .filter(|name| name.starts_with(PREFIX))
        .collect();
    assert!(
        !exported.is_empty(),
        "{} exports no {PREFIX}* at all: not an Envoy with dynamic modules?",
        envoy.display()
    );
    let missing: Vec<&String> = declared.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "{} of the {} callbacks native/src/abi.rs declares are not exported by {} \
         (nm -D --defined-only): {missing:?}",
        missing.len(),
        declared.len(),
        envoy.display()
    );
    println!(
        "{} declared callbacks, all among the {} {PREFIX}* that {} exports",
        declared.len(),
        exported.len(),
        envoy.display()
    );
}
