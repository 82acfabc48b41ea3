//! The crate layering rule: lower layers never depend on higher ones.

use std::collections::{BTreeMap, BTreeSet};

/// For each workspace crate, the workspace crates it may depend on (normal, build or dev).
pub const ALLOWED: &[(&str, &[&str])] = &[
    ("vlp-kernels", &[]),
    ("vlp-core", &["vlp-kernels"]),
    ("vlp-vision", &["vlp-core"]),
    ("vlp-text", &["vlp-core"]),
    ("vlp-data", &["vlp-core", "vlp-text"]),
    ("vlp-align", &["vlp-core", "vlp-vision", "vlp-text"]),
    (
        "vlp-curate",
        &[
            "vlp-core",
            "vlp-vision",
            "vlp-text",
            "vlp-data",
            "vlp-align",
        ],
    ),
    (
        "vlp-tasks",
        &[
            "vlp-core",
            "vlp-vision",
            "vlp-text",
            "vlp-data",
            "vlp-align",
        ],
    ),
    (
        "vlp-train",
        &[
            "vlp-core",
            "vlp-vision",
            "vlp-text",
            "vlp-data",
            "vlp-align",
            "vlp-curate",
            "vlp-tasks",
        ],
    ),
    (
        "vlp-cli",
        &[
            "vlp-core",
            "vlp-vision",
            "vlp-text",
            "vlp-data",
            "vlp-align",
            "vlp-curate",
            "vlp-tasks",
            "vlp-train",
        ],
    ),
    // Benchmarks measure every layer; nothing depends on them.
    (
        "vlp-bench",
        &[
            "vlp-core",
            "vlp-vision",
            "vlp-text",
            "vlp-data",
            "vlp-align",
            "vlp-curate",
            "vlp-tasks",
            "vlp-train",
        ],
    ),
    ("xtask", &[]),
];

/// A dependency between two workspace crates that the layering forbids.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    /// The crate that declares the dependency.
    pub from: String,
    /// The crate it depends on.
    pub to: String,
    /// `normal`, `dev` or `build`.
    pub kind: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} has a {} dependency on {}, which the layering forbids (allowed: {})",
            self.from,
            self.kind,
            self.to,
            allowed_for(&self.from)
                .map(|a| a.join(", "))
                .unwrap_or_else(|| "none listed".into())
        )
    }
}

fn allowed_for(name: &str) -> Option<Vec<&'static str>> {
    ALLOWED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| a.to_vec())
}

/// Checks `cargo metadata --no-deps` output. Workspace crates missing from [`ALLOWED`] are
/// violations too, so a new crate has to be placed in the layering explicitly.
pub fn check(metadata: &serde_json::Value) -> Result<(), Vec<String>> {
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let members: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    for p in &packages {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let Some(allowed) = allowed_for(&name) else {
            problems.push(format!(
                "workspace crate {name} is not placed in the layering (xtask/src/layers.rs)"
            ));
            continue;
        };
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let to = d["name"].as_str().unwrap_or_default().to_string();
            if !members.contains(&to) || allowed.contains(&to.as_str()) {
                continue;
            }
            let kind = d["kind"].as_str().unwrap_or("normal").to_string();
            edges.insert((name.clone(), to), kind);
        }
    }
    for ((from, to), kind) in edges {
        problems.push(Violation { from, to, kind }.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pkg(name: &str, deps: &[(&str, Option<&str>)]) -> serde_json::Value {
        json!({
            "name": name,
            "dependencies": deps.iter().map(|(d, k)| json!({"name": d, "kind": k})).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn allowed_graph_passes() {
        let m = json!({"packages": [
            pkg("vlp-core", &[("burn", None)]),
            pkg("vlp-vision", &[("vlp-core", None)]),
            pkg("vlp-align", &[("vlp-core", None), ("vlp-vision", None), ("vlp-text", None)]),
            pkg("vlp-text", &[("vlp-core", None)]),
        ]});
        assert_eq!(check(&m), Ok(()));
    }

    #[test]
    fn upward_edges_fail_including_dev_dependencies() {
        let m = json!({"packages": [
            pkg("vlp-core", &[("vlp-vision", None)]),
            pkg("vlp-vision", &[("vlp-core", None), ("vlp-align", Some("dev"))]),
            pkg("vlp-align", &[]),
        ]});
        let err = check(&m).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(
            err[0].contains("vlp-core has a normal dependency on vlp-vision"),
            "{}",
            err[0]
        );
        assert!(
            err[1].contains("vlp-vision has a dev dependency on vlp-align"),
            "{}",
            err[1]
        );
    }

    #[test]
    fn unknown_workspace_crate_fails() {
        let m = json!({"packages": [pkg("vlp-new", &[])]});
        assert!(check(&m).unwrap_err()[0].contains("vlp-new is not placed"));
    }

    #[test]
    fn this_workspace_respects_the_layering() {
        let out =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "metadata",
                    "--format-version",
                    "1",
                    "--no-deps",
                    "--offline",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Err(problems) = check(&m) {
            panic!("layering violations:\n{}", problems.join("\n"));
        }
    }
}
