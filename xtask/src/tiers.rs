//! One build of every test binary, then test tiers that reuse it.
//!
//! The build enables every backend (`vlp-core/wgpu-runtime`, `vlp-core/cuda-runtime`) while the
//! CPU stays the default backend, so the GPU tiers need no second build of the workspace, and it
//! runs clippy on the workspace crates *as* it compiles them (`clippy-driver` as the workspace
//! rustc wrapper, warnings denied): the dependencies are built once, never also "checked".
//! Every `cargo test` here uses the same features and environment, so none of them rebuilds.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::{cargo, preflight, run};

/// Features of the test build: every backend compiled in, the CPU the default, with its linear
/// layers on OpenBLAS (`vlp-core/openblas`) so that the BLAS kernels, which the default build
/// leaves out, run under every CPU test; without the feature the CPU's linear is Burn's own,
/// which the wgpu tier and the kernels' comparison tests run. The CUDA copies of the backend
/// tests are left out (`vlp-core/cuda-tests`): CI has no NVIDIA GPU to run them, and they cost a
/// third of the heaviest test crates' build.
pub const TEST_FEATURES: &str = "vlp-core/wgpu-runtime,vlp-core/cuda-runtime,vlp-core/openblas";

/// The build of the CUDA tier: [`TEST_FEATURES`] with the CUDA test copies.
pub const CUDA_TEST_FEATURES: &str =
    "vlp-core/wgpu-runtime,vlp-core/cuda-runtime,vlp-core/openblas,vlp-core/cuda-tests";

/// The build a tier runs on: the CUDA tier has its own, every other tier shares one.
fn features(backend: &str) -> &'static str {
    match backend {
        "cuda" => CUDA_TEST_FEATURES,
        _ => TEST_FEATURES,
    }
}

/// Where a tier's tests live: the modules `backend_tests!` generates.
fn module(backend: &str) -> String {
    format!("on_{backend}::")
}

fn cargo_test(backend: &str) -> Result<Command> {
    let mut c = cargo();
    c.args(["test", "--workspace", "--features", features(backend)]);
    // Errors' backtraces off (panics keep theirs): with RUST_BACKTRACE set, wgpu-core's lock
    // tracing in a debug-assertions build captures a backtrace on every lock, which made the
    // wgpu tier about five times slower (perf: a third of its time unwinding).
    c.env("RUST_LIB_BACKTRACE", "0");
    c.env("RUSTC_WORKSPACE_WRAPPER", preflight::clippy_driver()?);
    // What `cargo clippy -- -D warnings` passes to clippy-driver.
    c.env(
        "CLIPPY_ARGS",
        "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
    );
    // lavapipe warns on every start when no session bus exists.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    Ok(c)
}

/// Builds every target's test binary, linting the workspace crates on the way.
pub fn build(backend: &str) -> Result<()> {
    let mut c = cargo_test(backend)?;
    c.args(["--all-targets", "--no-run"]);
    // `VLP_TIMINGS=1`: cargo's per-crate timing report (target/cargo-timings/), to see what a
    // cold build spends its time on.
    if std::env::var_os("VLP_TIMINGS").is_some() {
        c.arg("--timings");
    }
    run(
        c,
        "build of every test binary, with clippy (warnings denied)",
    )
}

/// Counts of one `cargo test` run, from libtest's `test result:` lines.
#[derive(Debug, Default, PartialEq)]
pub struct Counts {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed.
    pub failed: usize,
    /// Tests ignored (slow checks).
    pub ignored: usize,
    /// Test binaries that ran.
    pub binaries: usize,
}

impl Counts {
    /// Adds one `test result:` line; other lines are ignored.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        let num = |key: &str| -> usize {
            rest.split(';')
                .find_map(|part| part.trim().strip_suffix(key).map(str::trim))
                .and_then(|n| n.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        self.passed += num("passed");
        self.failed += num("failed");
        self.ignored += num("ignored");
        self.binaries += 1;
    }
}

/// Runs `c`, echoing its standard output and counting libtest's results.
fn counted(mut c: Command, what: &str) -> Result<Counts> {
    eprintln!("xtask: {what}");
    let start = Instant::now();
    let mut child = c
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start: {what}"))?;
    let mut counts = Counts::default();
    let out = child.stdout.take().expect("piped");
    for line in BufReader::new(out).lines() {
        let line = line?;
        println!("{line}");
        counts.add_line(&line);
    }
    let status = child.wait()?;
    eprintln!(
        "xtask: {what}: {} passed, {} failed, {} ignored in {} test binaries, {:.0} s",
        counts.passed,
        counts.failed,
        counts.ignored,
        counts.binaries,
        start.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("failed: {what} ({status})");
    }
    Ok(counts)
}

/// Runs one tier on the build made by [`build`]; returns the number of tests that ran.
///
/// `cpu`: every test except the GPU copies of the backend tests, then the criterion benches in
/// test mode (each benchmark once). `wgpu` / `cuda`: the backend tests on that backend. Filters
/// narrow a tier (on a GPU tier, they are prefixes of test-function names). A tier that runs no
/// test fails: a filter that matches nothing is a mistake, not a pass.
pub fn run_tier(backend: &str, filters: &[String]) -> Result<usize> {
    let mut c = cargo_test(backend)?;
    c.args(["--lib", "--bins", "--tests", "--no-fail-fast", "--"]);
    // The tests check numbers, not speed: CubeCL's least autotuning (each new kernel shape is
    // otherwise benchmarked, which dominates a cold run on software Vulkan).
    if backend != "cpu" && std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_none() {
        c.env("CUBECL_AUTOTUNE_LEVEL", "minimal");
    }
    if backend == "cpu" {
        c.args(filters);
        for other in ["wgpu", "cuda"] {
            c.args(["--skip", &module(other)]);
        }
    } else if filters.is_empty() {
        c.arg(module(backend));
    } else {
        c.args(filters.iter().map(|f| format!("{}{f}", module(backend))));
    }
    let what = format!("tests on {backend}");
    let counts = if backend == "cpu" {
        counted(c, &what)?
    } else {
        gpu_parallel(backend, filters, &what)?
    };
    let ran = counts.passed + counts.failed;
    if ran == 0 {
        bail!(
            "{what} ran no test: the filter ({}) matches nothing",
            if filters.is_empty() {
                module(backend)
            } else {
                filters.join(" ")
            }
        );
    }
    if backend == "cpu" && filters.is_empty() {
        let mut c = cargo_test(backend)?;
        // `--benches` would also take every library (they have `bench = true`): name the
        // bench targets instead (those without required features).
        // (Selecting packages instead of `--workspace` would change feature unification and
        // rebuild dependencies.)
        for (_, bench) in bench_targets()? {
            c.args(["--bench", &bench]);
        }
        run(c, "benches in test mode (each benchmark once)")?;
    }
    Ok(ran)
}

/// A GPU tier with its test binaries run side by side rather than one after another: CubeCL
/// compiles a process's kernels on one device thread, so on a software driver (lavapipe, cold
/// shader cache in CI) one binary keeps one core busy, and the two binaries with backend tests
/// (layers, parity) can use two. Each binary's output is printed whole when it ends.
fn gpu_parallel(backend: &str, filters: &[String], what: &str) -> Result<Counts> {
    eprintln!("xtask: {what}");
    let start = Instant::now();
    let filter_args: Vec<String> = if filters.is_empty() {
        vec![module(backend)]
    } else {
        filters
            .iter()
            .map(|f| format!("{}{f}", module(backend)))
            .collect()
    };
    // The executables of the build made by [`build`] (nothing is rebuilt: same features/env).
    let mut c = cargo_test(backend)?;
    c.args([
        "--lib",
        "--bins",
        "--tests",
        "--no-run",
        "--message-format=json",
    ]);
    let out = c
        .stderr(Stdio::inherit())
        .output()
        .context("could not list the test binaries")?;
    if !out.status.success() {
        bail!("failed: listing the test binaries for {what}");
    }
    let mut exes = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["profile"]["test"] == true {
            // `cargo test` runs each binary in its package's directory.
            let dir = v["manifest_path"]
                .as_str()
                .and_then(|m| std::path::Path::new(m).parent())
                .map(|d| d.to_path_buf());
            if let (Some(exe), Some(dir)) = (v["executable"].as_str(), dir) {
                exes.push((exe.to_string(), dir));
            }
        }
    }
    // Only binaries that hold a test of this tier (`--list` is instant).
    let mut chosen = Vec::new();
    for (exe, dir) in exes {
        let list = Command::new(&exe)
            .current_dir(&dir)
            .args(&filter_args)
            .args(["--list", "--format", "terse"])
            .output()
            .with_context(|| format!("could not list the tests of {exe}"))?;
        if String::from_utf8_lossy(&list.stdout)
            .lines()
            .any(|l| l.ends_with(": test"))
        {
            chosen.push((exe, dir));
        }
    }
    let width = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut counts = Counts::default();
    let mut failed = Vec::new();
    for group in chosen.chunks(width.max(1)) {
        let children: Vec<(String, std::process::Child)> = group
            .iter()
            .map(|(exe, dir)| {
                let mut c = Command::new(exe);
                c.current_dir(dir)
                    .env("CARGO_MANIFEST_DIR", dir)
                    .args(&filter_args)
                    .env("RUST_LIB_BACKTRACE", "0")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                if backend != "cpu" && std::env::var_os("CUBECL_AUTOTUNE_LEVEL").is_none() {
                    c.env("CUBECL_AUTOTUNE_LEVEL", "minimal");
                }
                if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
                    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
                }
                c.spawn()
                    .with_context(|| format!("could not start {exe}"))
                    .map(|ch| (exe.clone(), ch))
            })
            .collect::<Result<_>>()?;
        for (exe, child) in children {
            let o = child.wait_with_output()?;
            println!("     Running {exe}");
            let text = String::from_utf8_lossy(&o.stdout);
            for line in text.lines() {
                println!("{line}");
                counts.add_line(line);
            }
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
            if !o.status.success() {
                failed.push(exe);
            }
        }
    }
    eprintln!(
        "xtask: {what}: {} passed, {} failed, {} ignored in {} test binaries, {:.0} s",
        counts.passed,
        counts.failed,
        counts.ignored,
        counts.binaries,
        start.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("failed: {what} ({})", failed.join(", "));
    }
    Ok(counts)
}

/// (package, bench target) of every criterion bench that builds without extra features.
fn bench_targets() -> Result<Vec<(String, String)>> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("could not run cargo metadata")?;
    let m: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut v = Vec::new();
    for p in m["packages"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let bench = t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bench"));
            let needs = t["required-features"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
            if bench && !needs {
                v.push((
                    p["name"].as_str().unwrap_or_default().to_string(),
                    t["name"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_result_lines() {
        let mut c = Counts::default();
        for l in [
            "running 3 tests",
            "test a ... ok",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 5 filtered out; finished in 0.01s",
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.2s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 7 filtered out; finished in 0.00s",
        ] {
            c.add_line(l);
        }
        assert_eq!(
            c,
            Counts {
                passed: 4,
                failed: 2,
                ignored: 1,
                binaries: 3
            }
        );
    }

    #[test]
    fn gpu_tiers_select_their_module() {
        assert_eq!(module("wgpu"), "on_wgpu::");
        assert_eq!(module("cuda"), "on_cuda::");
    }
}
