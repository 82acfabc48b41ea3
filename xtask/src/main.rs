//! `cargo xtask`: the project's commands, so that users and CI type the same thing.
//!
//! - `cargo xtask train|eval|bench [--backend cpu|wgpu|cuda] [ARGS...]` builds the `vlp` binary in
//!   release mode with the backend's feature and runs `vlp train|eval|bench ARGS...`.
//! - `cargo xtask test [--backend cpu|wgpu|cuda] [-- ARGS...]` runs the test suite (the whole
//!   workspace on the CPU; the backend-parity subset on a GPU backend).
//! - `cargo xtask ci` is what `.ci/run` calls: layering check, `cargo fmt --check`, clippy with
//!   warnings denied, `cargo check` of the `wgpu` and `cuda` builds, then the tests on the CPU
//!   and the parity subset on `wgpu` (Mesa's software Vulkan driver in CI).
//! - `cargo xtask check-layers` checks only the crate layering.

mod layers;

use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::Instant;

/// Tests that CI also runs on the `wgpu` backend: (package, test-name filter). They are the
/// checks that say "the same model on every backend": layers against naive loops and the
/// checkpoint parity tests.
const GPU_SUBSET: &[(&str, &str)] = &[("vlp-core", "nn::"), ("vlp-align", "parity::")];

const BACKENDS: &[&str] = &["cpu", "wgpu", "cuda"];

fn usage() -> &'static str {
    "usage: cargo xtask <train|eval|bench|test|ci|check-layers> [--backend cpu|wgpu|cuda] [ARGS...]"
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args[0] == "-h" || args[0] == "--help" {
        println!("{}", usage());
        return Ok(());
    }
    let cmd = args.remove(0);
    let backend = take_backend(&mut args)?;
    match cmd.as_str() {
        "train" | "eval" | "bench" => run_vlp(&cmd, &backend, &args),
        "test" => test(&backend, &args),
        "ci" => ci(),
        "check-layers" => check_layers(),
        other => bail!("unknown command `{other}`\n{}", usage()),
    }
}

/// Removes `--backend X` / `--backend=X` from `args` (default `cpu`).
fn take_backend(args: &mut Vec<String>) -> Result<String> {
    let mut backend = "cpu".to_string();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--" {
            break;
        }
        if let Some(v) = args[i].strip_prefix("--backend=") {
            backend = v.to_string();
            args.remove(i);
        } else if args[i] == "--backend" {
            args.remove(i);
            if i >= args.len() {
                bail!("--backend needs a value: cpu, wgpu or cuda");
            }
            backend = args.remove(i);
        } else {
            i += 1;
        }
    }
    if !BACKENDS.contains(&backend.as_str()) {
        bail!("unknown backend `{backend}`: expected cpu, wgpu or cuda");
    }
    Ok(backend)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("could not start: {what}"))?;
    eprintln!("xtask: {what}: {:.0} s", start.elapsed().as_secs_f64());
    if !status.success() {
        bail!("failed: {what} ({status})");
    }
    Ok(())
}

fn run_vlp(sub: &str, backend: &str, args: &[String]) -> Result<()> {
    let mut c = cargo();
    c.args([
        "run",
        "--release",
        "--package",
        "vlp-cli",
        "--bin",
        "vlp",
        "--no-default-features",
    ]);
    c.args(["--features", backend, "--", sub]);
    c.args(args);
    run(c, &format!("vlp {sub} on {backend}"))
}

fn test(backend: &str, args: &[String]) -> Result<()> {
    let extra: Vec<String> = args.iter().skip_while(|a| *a == "--").cloned().collect();
    if backend == "cpu" {
        let mut c = cargo();
        c.args(["test", "--workspace", "--all-targets"])
            .args(&extra);
        return run(c, "tests on cpu");
    }
    for (package, filter) in GPU_SUBSET {
        let mut c = cargo();
        c.args([
            "test",
            "--package",
            package,
            "--no-default-features",
            "--features",
            backend,
            "--",
        ]);
        c.arg(filter).args(&extra);
        run(c, &format!("{package} `{filter}` tests on {backend}"))?;
    }
    Ok(())
}

fn check_layers() -> Result<()> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("could not run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    match layers::check(&metadata) {
        Ok(()) => {
            eprintln!("xtask: crate layering ok");
            Ok(())
        }
        Err(problems) => bail!("crate layering violated:\n  {}", problems.join("\n  ")),
    }
}

fn ci() -> Result<()> {
    let start = Instant::now();
    check_layers()?;
    let mut c = cargo();
    c.args(["fmt", "--all", "--", "--check"]);
    run(c, "cargo fmt --check")?;
    let mut c = cargo();
    c.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(c, "clippy")?;
    for backend in ["wgpu", "cuda"] {
        let mut c = cargo();
        c.args([
            "check",
            "--package",
            "vlp-cli",
            "--no-default-features",
            "--features",
            backend,
        ]);
        run(c, &format!("cargo check --features {backend}"))?;
    }
    test("cpu", &[])?;
    test("wgpu", &[])?;
    eprintln!("xtask: ci passed in {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}
