//! Every file of fuzz/corpus/<target>/ and fuzz/regressions/<target>/ through its target, as an
//! ordinary test: a crash the fuzzer found and that was fixed stays fixed without the fuzzer.

use std::panic;
use std::path::Path;

fn replay(kind: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(kind);
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, target) in tollgate_fuzz::TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths.into_iter().filter(|p| p.is_file()) {
            let Ok(data) = std::fs::read(&path) else {
                failures.push(format!("{}: unreadable", path.display()));
                continue;
            };
            count += 1;
            if panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "{kind}: inputs failing: {failures:#?}");
    println!("{kind}: {count} inputs replayed");
}

#[test]
fn regressions_stay_fixed() {
    replay("regressions");
}

#[test]
fn corpus_seeds_pass() {
    replay("corpus");
}
