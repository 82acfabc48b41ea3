//! Integration tests of vlp-data.

mod hostile;
mod loader;
mod preprocess;
mod shapes;

use std::path::PathBuf;

/// Path of a fixture file.
pub fn reference(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/reference")
        .join(rel)
}
