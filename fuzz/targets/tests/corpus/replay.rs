//! Replays every committed seed (fuzz/corpus/<target>/) and crash file
//! (fuzz/artifacts/<target>/) through its target body on stable Rust, so a decoder
//! that starts panicking on a known input fails the normal test run, naming the file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use plexus_fuzz_targets::TARGETS;

use super::fuzz_dir;

/// The regular files in `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("read a corpus directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_target_has_a_seed_corpus() {
    let empty: Vec<&str> = TARGETS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| files(&fuzz_dir().join("corpus").join(name)).is_empty())
        .collect();
    assert!(
        empty.is_empty(),
        "no committed seeds in fuzz/corpus/ for: {empty:?}"
    );
}

#[test]
fn every_target_has_a_cargo_fuzz_binary() {
    let missing: Vec<&str> = TARGETS
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !fuzz_dir().join(format!("fuzz_targets/{name}.rs")).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "no fuzz/fuzz_targets/<name>.rs for: {missing:?}"
    );
}

#[test]
fn committed_corpora_and_crashes_do_not_panic() {
    // Keep the default hook's message for the log, but collect the failures by file.
    let mut failed = Vec::new();
    let mut replayed = 0;
    for (name, body) in TARGETS {
        for kind in ["corpus", "artifacts"] {
            for file in files(&fuzz_dir().join(kind).join(name)) {
                let data =
                    std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
                replayed += 1;
                if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
                    failed.push(format!(
                        "{name}: fuzz/{kind}/{name}/{}",
                        file.file_name().unwrap().to_string_lossy()
                    ));
                }
            }
        }
    }
    assert!(replayed > 0, "nothing replayed");
    assert!(
        failed.is_empty(),
        "{} input(s) panicked (see the panic messages above):\n  {}",
        failed.len(),
        failed.join("\n  ")
    );
}
