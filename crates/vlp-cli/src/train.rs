//! `vlp train`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use vlp_core::backend::{TrainBackend, device};
use vlp_train::{RunOptions, TrainConfig, train};

/// Arguments of `vlp train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML configuration (see configs/README.md); without it, the built-in ShapesWorld run.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a field, e.g. `--set optim.lr=3e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue the run in this directory from its latest checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Write the run here instead of `<run.dir>/<run.name>`.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Devices of this machine to train on (data parallel).
    #[arg(long)]
    devices: Option<usize>,
    /// Number of machines in a multi-node run.
    #[arg(long)]
    world_size: Option<usize>,
    /// This machine's rank (rank 0 hosts the coordinator).
    #[arg(long)]
    rank: Option<usize>,
    /// `HOST:PORT` of the coordinator.
    #[arg(long)]
    coordinator: Option<String>,
    /// `HOST:PORT` where this machine serves tensors to the others.
    #[arg(long)]
    node_address: Option<String>,
}

/// Trains; the last stdout line is `{"final": {...}}`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut overrides = args.set.clone();
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            overrides.push(format!("distributed.{k}={v}"));
        }
    };
    add("devices", args.devices.map(|v| v.to_string()));
    add("world_size", args.world_size.map(|v| v.to_string()));
    add("rank", args.rank.map(|v| v.to_string()));
    add("coordinator", args.coordinator.map(|v| format!("\"{v}\"")));
    add(
        "node_address",
        args.node_address.map(|v| format!("\"{v}\"")),
    );
    let config_path = match (&args.config, &args.resume) {
        (Some(p), _) => Some(p.clone()),
        // A resumed run reads the configuration it was started with.
        (None, Some(dir)) => Some(dir.join("config.toml")),
        (None, None) => None,
    };
    let cfg = TrainConfig::load(config_path.as_deref(), &overrides)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Ctrl-C: finish the current step, checkpoint, stop. A second Ctrl-C kills.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: writing a checkpoint after this step (Ctrl-C again to abort)");
    });
    // Devices of the compiled backend: the library is generic, the binary picks.
    let devices = (0..cfg.distributed.devices).map(device).collect();
    let report = train::<TrainBackend>(
        &cfg,
        devices,
        RunOptions {
            run_dir: args.run_dir,
            resume: args.resume,
            stop,
        },
    )?;
    eprintln!("run directory: {}", report.run_dir.display());
    println!("{}", serde_json::json!({ "final": report }));
    Ok(())
}
