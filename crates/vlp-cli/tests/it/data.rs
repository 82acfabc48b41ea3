//! `vlp data shapes` and `vlp data inspect`.

use crate::{text, vlp};

#[test]
fn shapes_then_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("wds");
    let o = vlp(&[
        "data",
        "shapes",
        "--out",
        out.to_str().unwrap(),
        "--samples",
        "40",
        "--shard-size",
        "10",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let spec = format!("wds:{}/shapes-train-{{00000..00003}}.tar", out.display());
    let o = vlp(&["data", "inspect", &spec, "--size", "64"]);
    assert!(o.status.success(), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(v["samples_read"], 40);
    assert_eq!(v["samples_skipped"], 0);
    assert!(v["samples_per_s"].as_f64().unwrap() > 0.0);
    // A corrupt member is reported by key, and inspect still exits 0.
    std::fs::write(out.join("shapes-train-00004.tar"), b"not a tar at all, just some bytes that are long enough to look like a header block of some sort, more or less").unwrap();
    let o = vlp(&[
        "data",
        "inspect",
        &format!("wds:{}", out.display()),
        "--size",
        "64",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(v["samples_read"], 40);
    assert!(v["samples_skipped"].as_u64().unwrap() >= 1, "{v}");
    // A source that cannot be opened is an error.
    let o = vlp(&["data", "inspect", "imagefolder:/nonexistent/dir"]);
    assert!(!o.status.success() && text(&o).contains("/nonexistent/dir"));
}
