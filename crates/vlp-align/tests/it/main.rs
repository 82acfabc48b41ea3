//! Integration tests of vlp-align against the reference fixtures in `tests/reference/`.

mod checkpoints;
mod parity;

use std::path::PathBuf;

pub fn reference(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/reference").join(rel)
}
