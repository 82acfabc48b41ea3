//! End-to-end tests of the `vlp` binary.

mod adapt;
mod caption;
mod curate;
mod data;
mod datasets;
mod eval;
mod inputs;
mod nodes;
mod parity;
mod pixel;
mod vqa;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of a fixture file.
pub fn reference(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/reference")
        .join(rel)
}

/// Runs `vlp ARGS`.
pub fn vlp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vlp"))
        .args(args)
        .output()
        .expect("vlp runs")
}

/// Stdout and stderr together, for assertions.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn info_reports_the_backend() {
    let o = vlp(&["info", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["backend"], vlp_core::backend::backend_name());
    assert!(
        v["compiled_backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b == "cpu")
    );
}
