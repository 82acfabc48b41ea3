//! `cargo xtask`: the project's commands, so that users and CI type the same thing.
//!
//! - `cargo xtask train|eval|bench [--backend cpu|openblas|wgpu|cuda] [ARGS...]` builds the `vlp`
//!   binary in release mode with the backend's feature and runs `vlp train|eval|bench ARGS...`
//!   (`openblas`: the CPU backend with its linear layers on the system's OpenBLAS).
//! - `cargo xtask test [--backend cpu|wgpu|cuda] [-- FILTER...]` builds every test binary of the
//!   workspace once (with clippy's lints, warnings denied) and runs one tier: every test on the
//!   CPU, or the backend tests (`backend_tests!`, modules `on_wgpu::` / `on_cuda::`) on a GPU
//!   backend. The build carries every backend, so switching tiers never rebuilds.
//! - `cargo xtask ci` is what `.ci/run` calls: it checks the machine first (C compiler, clippy,
//!   rustfmt, a Vulkan driver, OpenBLAS: installed with apt-get when run as root, otherwise it
//!   stops at once with the command to run), then the layering, `cargo fmt --check`, the one
//!   build, the CPU tier and the wgpu tier (Mesa's software Vulkan driver in CI).
//! - `cargo xtask check-layers` checks only the crate layering.

mod layers;
mod preflight;
mod tiers;

use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::Instant;

/// `openblas` is the CPU backend with its linear layers on the system's OpenBLAS (for
/// `train`, `eval` and `bench`; the test build always has it, see `tiers::TEST_FEATURES`).
const BACKENDS: &[&str] = &["cpu", "openblas", "wgpu", "cuda"];

fn usage() -> &'static str {
    "usage: cargo xtask <train|eval|bench|test|ci|check-layers> [--backend cpu|openblas|wgpu|cuda] [ARGS...]"
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
                bail!("--backend needs a value: cpu, openblas, wgpu or cuda");
            }
            backend = args.remove(i);
        } else {
            i += 1;
        }
    }
    if !BACKENDS.contains(&backend.as_str()) {
        bail!("unknown backend `{backend}`: expected cpu, openblas, wgpu or cuda");
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
    preflight::build_tools()?;
    if backend == "openblas" {
        preflight::openblas()?;
    }
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
    let filters: Vec<String> = args.iter().skip_while(|a| *a == "--").cloned().collect();
    // The test build links OpenBLAS whatever the tier: the CPU tier is the `openblas` backend.
    let backend = if backend == "openblas" {
        "cpu"
    } else {
        backend
    };
    preflight::build_tools()?;
    preflight::lint_tools()?;
    preflight::openblas()?;
    if backend == "wgpu" {
        preflight::vulkan()?;
    }
    tiers::build(backend)?;
    tiers::run_tier(backend, &filters)?;
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
    // Everything the machine lacks is found before the first compiler runs.
    preflight::build_tools()?;
    preflight::lint_tools()?;
    preflight::vulkan()?;
    preflight::openblas()?;
    check_layers()?;
    let mut c = cargo();
    c.args(["fmt", "--all", "--", "--check"]);
    run(c, "cargo fmt --check")?;
    tiers::build("cpu")?;
    let cpu = tiers::run_tier("cpu", &[])?;
    let wgpu = tiers::run_tier("wgpu", &[])?;
    eprintln!(
        "xtask: ci passed in {:.0} s ({} tests on cpu, {} on wgpu)",
        start.elapsed().as_secs_f64(),
        cpu,
        wgpu
    );
    Ok(())
}
