//! What the machine must have before anything is built, checked in seconds: a C compiler (for
//! the `-sys` crates: oniguruma, zstd, mimalloc), clippy and rustfmt, a Vulkan driver for
//! the wgpu tier, and OpenBLAS for the `openblas` backend (which the test build uses). Missing
//! pieces are installed with `apt-get` when that is possible (root, or passwordless sudo, on a
//! Debian-like system, as in CI); otherwise the command stops with the exact command to run.

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether `program --version` runs.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `Some(prefix)` when packages can be installed without asking: `[]` as root, `["sudo", "-n"]`
/// with passwordless sudo; `None` otherwise or without apt-get.
fn installer() -> Option<Vec<&'static str>> {
    if !runs("apt-get", &["--version"]) {
        return None;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        Some(vec![])
    } else if runs("sudo", &["-n", "true"]) {
        Some(vec!["sudo", "-n"])
    } else {
        None
    }
}

/// Installs Debian `packages`, or fails with the command the user should run.
fn apt_install(packages: &[&str], why: &str) -> Result<()> {
    let command = format!(
        "sudo apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    let Some(prefix) = installer() else {
        bail!(
            "{why}; install it with:\n    {command}\n(or your system's equivalent) and run again"
        );
    };
    eprintln!("xtask: {why}; installing {}", packages.join(" "));
    let apt = |args: &[&str]| -> Result<()> {
        let mut argv: Vec<&str> = prefix.clone();
        argv.push("apt-get");
        argv.extend_from_slice(args);
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if !status.success() {
            bail!(
                "`{}` failed ({status}); run:\n    {command}",
                argv.join(" ")
            );
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend_from_slice(packages);
    apt(&args)
}

/// A C compiler and pkg-config for the `-sys` crates.
pub fn build_tools() -> Result<()> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if runs(&cc, &["--version"]) {
        return Ok(());
    }
    apt_install(
        &["build-essential", "pkg-config"],
        &format!(
            "no C compiler (`{cc}`) found: the -sys crates (oniguruma, zstd, mimalloc) need one"
        ),
    )?;
    if !runs(&cc, &["--version"]) {
        bail!("`{cc}` still does not run after installing build-essential");
    }
    Ok(())
}

/// The directory of the toolchain that runs this build (where `cargo` lives).
fn toolchain_bin() -> Option<PathBuf> {
    let cargo = std::env::var("CARGO").ok()?;
    Path::new(&cargo).parent().map(Path::to_path_buf)
}

/// The `clippy-driver` of the active toolchain.
pub fn clippy_driver() -> Result<PathBuf> {
    let name = format!("clippy-driver{}", std::env::consts::EXE_SUFFIX);
    if let Some(p) = toolchain_bin().map(|d| d.join(&name))
        && p.is_file()
    {
        return Ok(p);
    }
    if let Ok(o) = Command::new("rustup")
        .args(["which", "clippy-driver"])
        .output()
        && o.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("clippy is not installed for this toolchain; run:\n    rustup component add clippy")
}

/// clippy and rustfmt, added with rustup when missing.
pub fn lint_tools() -> Result<()> {
    let have_fmt = || runs("cargo", &["fmt", "--version"]);
    if clippy_driver().is_err() || !have_fmt() {
        eprintln!("xtask: adding the clippy and rustfmt components");
        let _ = Command::new("rustup")
            .args(["component", "add", "clippy", "rustfmt"])
            .status();
    }
    clippy_driver()?;
    if !have_fmt() {
        bail!(
            "rustfmt is not installed for this toolchain; run:\n    rustup component add rustfmt"
        );
    }
    Ok(())
}

/// Where the Vulkan loader looks for driver manifests (ICDs), in its own order.
fn icd_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(home) = std::env::var("XDG_DATA_HOME") {
        dirs.push(Path::new(&home).join("vulkan/icd.d"));
    }
    let data =
        std::env::var("XDG_DATA_DIRS").unwrap_or_else(|_| "/usr/local/share:/usr/share".into());
    dirs.extend(data.split(':').map(|d| Path::new(d).join("vulkan/icd.d")));
    dirs.push("/etc/vulkan/icd.d".into());
    dirs
}

fn has_icd() -> bool {
    if std::env::var_os("VK_ICD_FILENAMES").is_some()
        || std::env::var_os("VK_DRIVER_FILES").is_some()
    {
        return true;
    }
    icd_dirs().iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|mut it| {
            it.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
        })
    })
}

fn has_loader() -> bool {
    let listed = Command::new("ldconfig")
        .arg("-p")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains("libvulkan.so.1"));
    listed
        || [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/aarch64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
            "/usr/local/lib",
        ]
        .iter()
        .any(|d| Path::new(d).join("libvulkan.so.1").exists())
}

/// OpenBLAS for the `openblas` backend and the test build (which links it): installed with
/// `libopenblas-dev` when the linker cannot find `libopenblas.so`.
pub fn openblas() -> Result<()> {
    if !cfg!(target_os = "linux") || has_library("libopenblas.so") {
        return Ok(());
    }
    apt_install(
        &["libopenblas-dev"],
        "the `openblas` backend and the test build link OpenBLAS and libopenblas.so was not found",
    )?;
    if !has_library("libopenblas.so") {
        bail!("still no libopenblas.so after installing libopenblas-dev");
    }
    Ok(())
}

/// Whether the dynamic linker's cache lists `name` (`ldconfig -p`).
fn has_library(name: &str) -> bool {
    Command::new("ldconfig")
        .arg("-p")
        .output()
        .ok()
        .is_some_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} ")))
        })
}

/// A Vulkan loader and driver for the wgpu tier on Linux (macOS uses Metal, Windows DX12).
pub fn vulkan() -> Result<()> {
    if !cfg!(target_os = "linux") || (has_loader() && has_icd()) {
        return Ok(());
    }
    apt_install(
        &["mesa-vulkan-drivers", "libvulkan1"],
        "the wgpu tests need a Vulkan loader and driver (Mesa's software lavapipe is enough) and none was found",
    )?;
    if !(has_loader() && has_icd()) {
        bail!(
            "still no Vulkan driver after installing mesa-vulkan-drivers and libvulkan1 (looked for libvulkan.so.1 and *.json in {})",
            icd_dirs()
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}
