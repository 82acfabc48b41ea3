//! Integration tests of vlp-align against the reference fixtures in `tests/reference/`.

/// Checkpoint import, export and layouts.
mod checkpoints;
/// Output parity with the reference libraries.
mod parity;

use std::path::PathBuf;

/// Path of a fixture file.
pub fn reference(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/reference")
        .join(rel)
}
