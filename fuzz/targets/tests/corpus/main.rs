//! The fuzz corpora as a normal test: every committed seed and crash file replayed
//! through its target body (`replay`), the sealed-message seeds checked to mean what
//! their names say (`envelope_seeds`), and the generator of the seeds (`seeds`,
//! ignored; run by hand).

use std::path::{Path, PathBuf};

mod envelope_seeds;
mod replay;
mod seeds;

/// The `fuzz/` directory (corpus/, artifacts/, fuzz_targets/).
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
