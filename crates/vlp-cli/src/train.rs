//! `vlp train`, including multi-process launches: explicit flags, the environment of cluster
//! launchers (torchrun, Slurm), and `--nodes N` for N processes on this machine.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::Args;
use vlp_core::backend::{TrainBackend, auto_ranks, device};
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
    /// Devices of this machine to train on (data parallel; 0 = automatic, see configs/README.md).
    #[arg(long)]
    devices: Option<usize>,
    /// Number of processes (machines) in a multi-node run [env: WORLD_SIZE, SLURM_NTASKS].
    #[arg(long)]
    world_size: Option<usize>,
    /// This process's rank; rank 0 hosts the coordinator [env: RANK, SLURM_PROCID].
    #[arg(long)]
    rank: Option<usize>,
    /// `HOST:PORT` of the coordinator; PORT + 1 is used too [env: MASTER_ADDR, MASTER_PORT].
    #[arg(long)]
    coordinator: Option<String>,
    /// `HOST:PORT` where this process serves tensors to the others [env: VLP_NODE_ADDRESS;
    /// default: this host's name, port MASTER_PORT + 2 + rank].
    #[arg(long)]
    node_address: Option<String>,
    /// Start N processes on this machine, one rank each, over localhost (for trying multi-node
    /// training; every process gets the same configuration).
    #[arg(long)]
    nodes: Option<usize>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_number(names: &[&str]) -> anyhow::Result<Option<usize>> {
    for n in names {
        if let Some(v) = env(n) {
            return Ok(Some(v.trim().parse().with_context(|| {
                format!("environment variable {n} = \"{v}\" is not a number")
            })?));
        }
    }
    Ok(None)
}

/// The host other machines reach this one at.
fn host_name() -> Option<String> {
    env("SLURMD_NODENAME")
        .or_else(|| env("HOSTNAME"))
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
}

/// `distributed.*` overrides from flags, falling back to cluster launchers' variables.
fn distributed_overrides(args: &TrainArgs) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let world = match args.world_size {
        Some(w) => Some(w),
        None => env_number(&["WORLD_SIZE", "SLURM_NTASKS"])?,
    };
    let rank = match args.rank {
        Some(r) => Some(r),
        None => env_number(&["RANK", "SLURM_PROCID"])?,
    };
    let master_port = env_number(&["MASTER_PORT"])?;
    let coordinator = match &args.coordinator {
        Some(c) => Some(c.clone()),
        None => match (env("MASTER_ADDR"), master_port) {
            (Some(a), Some(p)) => Some(format!("{a}:{p}")),
            _ => None,
        },
    };
    if let Some(d) = args.devices {
        out.push(format!("distributed.devices={d}"));
    }
    if let Some(w) = world {
        out.push(format!("distributed.world_size={w}"));
    }
    if let Some(r) = rank {
        out.push(format!("distributed.rank={r}"));
    }
    if let Some(c) = &coordinator {
        out.push(format!("distributed.coordinator=\"{c}\""));
    }
    let node = match args
        .node_address
        .clone()
        .or_else(|| env("VLP_NODE_ADDRESS"))
    {
        Some(a) => Some(a),
        None if world.is_some_and(|w| w > 1) => {
            let port = coordinator
                .as_ref()
                .and_then(|c| c.rsplit_once(':'))
                .and_then(|(_, p)| p.parse::<usize>().ok());
            match (host_name(), port) {
                (Some(h), Some(p)) => Some(format!("{h}:{}", p + 2 + rank.unwrap_or(0))),
                _ => None,
            }
        }
        None => None,
    };
    if let Some(n) = node {
        out.push(format!("distributed.node_address=\"{n}\""));
    }
    Ok(out)
}

/// `--nodes N`: N copies of this command, ranks 0..N, over localhost. Rank 0's output is this
/// command's; when a process fails, the others are stopped (they would stop on their own within
/// `distributed.timeout_s`).
fn spawn_local_nodes(n: usize) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--nodes must be at least 1");
    }
    let base = vlp_train::distributed::free_port_block(2 + n as u16)?;
    let exe = std::env::current_exe().context("locating the vlp binary")?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Drop `--nodes N` / `--nodes=N`.
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--nodes" {
            args.drain(i..(i + 2).min(args.len()));
        } else if args[i].starts_with("--nodes=") {
            args.remove(i);
        } else {
            i += 1;
        }
    }
    let mut children: Vec<(usize, Child)> = Vec::new();
    for r in 0..n {
        let mut c = Command::new(&exe);
        c.args(&args)
            .args(["--world-size", &n.to_string(), "--rank", &r.to_string()])
            .args(["--coordinator", &format!("127.0.0.1:{base}")])
            .args([
                "--node-address",
                &format!("127.0.0.1:{}", base as usize + 2 + r),
            ]);
        // Launcher variables of an outer launch would contradict these flags.
        for v in [
            "WORLD_SIZE",
            "RANK",
            "SLURM_NTASKS",
            "SLURM_PROCID",
            "MASTER_ADDR",
            "MASTER_PORT",
        ] {
            c.env_remove(v);
        }
        if r > 0 {
            c.stdout(Stdio::null());
        }
        children.push((r, c.spawn().context("starting a rank")?));
    }
    let mut failed: Option<(usize, std::process::ExitStatus)> = None;
    loop {
        let mut running = 0;
        for (r, ch) in children.iter_mut() {
            match ch.try_wait()? {
                Some(st) if !st.success() && failed.is_none() => failed = Some((*r, st)),
                Some(_) => {}
                None => running += 1,
            }
        }
        if running == 0 {
            break;
        }
        if failed.is_some() {
            for (_, ch) in children.iter_mut() {
                let _ = ch.kill();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    match failed {
        Some((r, st)) => bail!("rank {r} of {n} failed ({st})"),
        None => Ok(()),
    }
}

/// Trains; the last stdout line (of rank 0) is `{"final": {...}}`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if let Some(n) = args.nodes {
        if args.world_size.is_some() || args.rank.is_some() || args.coordinator.is_some() {
            bail!(
                "--nodes starts every rank itself: leave out --world-size, --rank and --coordinator"
            );
        }
        return spawn_local_nodes(n);
    }
    let mut overrides = args.set.clone();
    overrides.extend(distributed_overrides(&args)?);
    let config_path = match (&args.config, &args.resume) {
        (Some(p), _) => Some(p.clone()),
        // A resumed run reads the configuration it was started with.
        (None, Some(dir)) => Some(dir.join("config.toml")),
        (None, None) => None,
    };
    let mut cfg = TrainConfig::load(config_path.as_deref(), &overrides)?;
    if cfg.distributed.devices == 0 {
        cfg.distributed.devices = cfg.auto_devices(auto_ranks());
        eprintln!(
            "training on {} rank thread(s) (distributed.devices = 0: automatic; the trajectory is the same for any number)",
            cfg.distributed.devices
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Ctrl-C: finish the current step, checkpoint, stop. A second Ctrl-C kills.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: writing a checkpoint after this step (Ctrl-C again to abort)");
    });
    // Devices of the compiled backend: the library is generic, the binary picks. A launcher
    // that starts one process per GPU says which one with LOCAL_RANK.
    let first = match env_number(&["LOCAL_RANK"])? {
        Some(l) if cfg.distributed.devices == 1 => l,
        _ => 0,
    };
    let devices = (0..cfg.distributed.devices)
        .map(|d| device(first + d))
        .collect();
    let report = train::<TrainBackend>(
        &cfg,
        devices,
        RunOptions {
            run_dir: args.run_dir,
            resume: args.resume,
            stop,
        },
    )?;
    if cfg.distributed.rank == 0 {
        eprintln!("run directory: {}", report.run_dir.display());
        println!("{}", serde_json::json!({ "final": report }));
    } else {
        eprintln!("rank {} finished", cfg.distributed.rank);
    }
    Ok(())
}
