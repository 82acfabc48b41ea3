//! A whole run of any method: one rank per device (threads), each building its model and data,
//! training with logging, periodic evaluation and checkpoints, then exporting.
//!
//! [`train_method`] is generic over the [`Method`]; [`crate::train`] picks the method the config
//! names from the registry. The per-rank work is in `rank`.

mod rank;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use burn::collective::CollectiveConfig;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::comm::{Collective, Single};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::liveness::{Liveness, Watchdog, config_hash, liveness_address};
use crate::method::Method;

/// How to start a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run directory; default `<run.dir>/<run.name>`, with `-1`, `-2`, ... appended when taken.
    pub run_dir: Option<PathBuf>,
    /// Continue the run in this directory from its latest checkpoint.
    pub resume: Option<PathBuf>,
    /// Set (e.g. by a Ctrl-C handler) to checkpoint and stop after the current step.
    pub stop: Arc<AtomicBool>,
}

/// The summary printed (and written to `final.json`) at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalReport {
    /// The method trained.
    pub method: String,
    /// The method's held-out metrics (`zero_shot_top1`, `retrieval_i2t_r5`, ...).
    #[serde(flatten)]
    pub metrics: BTreeMap<String, f64>,
    /// Training throughput (samples per second of training steps, all ranks).
    pub train_samples_per_s: f64,
    /// Wall time of the run in seconds (this segment, when resumed).
    pub wall_s: f64,
    /// Optimiser steps.
    pub steps: usize,
    /// Mean loss over the last logging window.
    pub final_loss: f64,
    /// Steps skipped for non-finite losses.
    pub skipped_steps: usize,
    /// Training samples skipped by the loader (bad data).
    pub skipped_samples: usize,
    /// Where everything was written.
    pub run_dir: PathBuf,
}

impl FinalReport {
    /// A metric by name.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }
}

fn fresh_dir(cfg: &TrainConfig) -> PathBuf {
    let base = Path::new(&cfg.run.dir).join(&cfg.run.name);
    if !base.exists() {
        return base;
    }
    (1..)
        .map(|i| Path::new(&cfg.run.dir).join(format!("{}-{i}", cfg.run.name)))
        .find(|p| !p.exists())
        .expect("an unused name exists")
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Trains `method` as `cfg` says, one rank per device of `devices` (data parallel on threads;
/// several machines add their ranks after these).
pub fn train_method<B, M>(
    cfg: &TrainConfig,
    method: M,
    devices: Vec<B::Device>,
    opts: RunOptions,
) -> Result<FinalReport>
where
    B: AutodiffBackend,
    M: Method,
    M::Model<B>: AutodiffModule<B, InnerModule = M::Model<B::InnerBackend>>,
{
    if (cfg.model.teacher.is_some() || cfg.model.teacher_from.is_some()) && !method.uses_teacher() {
        return Err(TrainError::Config(format!(
            "`model.teacher`: method {:?} does not learn from a teacher",
            cfg.method.kind
        )));
    }
    // First stages named by `model.init_from` / `teacher_from` train (or are found) before
    // anything else.
    let staged;
    let cfg = if cfg.model.init_from.is_some() || cfg.model.teacher_from.is_some() {
        staged = resolve_init_from::<B>(cfg, &devices)?;
        &staged
    } else {
        cfg
    };
    // Automatic devices (0): the caller chose them; the run records how many.
    let resolved;
    let cfg = if cfg.distributed.devices == 0 && !devices.is_empty() {
        let mut c = cfg.clone();
        c.distributed.devices = devices.len();
        c.validate()?;
        resolved = c;
        &resolved
    } else {
        cfg
    };
    if devices.is_empty() || devices.len() != cfg.distributed.devices {
        return Err(TrainError::Config(format!(
            "`distributed.devices` = {} but {} device(s) were given to train on",
            cfg.distributed.devices,
            devices.len()
        )));
    }
    let dir = match (&opts.resume, &opts.run_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => fresh_dir(cfg),
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    // Rank 0 writes the configuration (the others share the directory on one machine).
    if opts.resume.is_none() && cfg.distributed.rank == 0 {
        std::fs::write(
            dir.join("config.toml"),
            toml::to_string_pretty(cfg).expect("config serialises"),
        )
        .map_err(io(&dir))?;
    }
    let method = Arc::new(method);
    let local = devices.len();
    let world = local * cfg.distributed.world_size;
    if world == 1 {
        let device = devices.into_iter().next().expect("one device");
        return rank::train_rank::<B, M, _>(cfg, method, &dir, &opts, device, Single);
    }
    // One thread per local device; global rank = node rank × devices + device.
    let mut collective = CollectiveConfig::default().with_num_devices(local);
    let d = &cfg.distributed;
    let (liveness, watchdog) = if d.world_size > 1 {
        // Before any collective call: every process checks in with rank 0 (same configuration,
        // reachable), and a process that dies later stops the others instead of hanging them.
        let timeout = std::time::Duration::from_secs_f64(d.timeout_s);
        let address = liveness_address(&d.coordinator)?;
        let hash = config_hash(&shared_config(cfg));
        let live = if d.rank == 0 {
            Liveness::serve(&address, d.world_size, hash, timeout)?
        } else {
            Liveness::join(&address, d.rank, hash, timeout)?
        };
        collective = crate::distributed::multi_node(collective, d)?;
        (Some(live), Some(timeout))
    } else {
        (None, None)
    };
    let results: Vec<Result<FinalReport>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .into_iter()
            .enumerate()
            .map(|(d, device)| {
                let (collective, dir, opts, method) = (
                    collective.clone(),
                    dir.clone(),
                    opts.clone(),
                    method.clone(),
                );
                s.spawn(move || {
                    let rank = cfg.distributed.rank * local + d;
                    // One watchdog per rank thread: each watches its own collective calls.
                    let watchdog = watchdog.map(|t| Watchdog::start(rank, t));
                    let register =
                        || Collective::<B>::register(rank, world, device.clone(), collective);
                    let comm = match &watchdog {
                        Some(w) => w
                            .guard("registering with the coordinator", register)?
                            .with_watchdog(w.clone()),
                        None => register()?,
                    };
                    rank::train_rank::<B, M, _>(cfg, method, &dir, &opts, device, comm)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(TrainError::Distributed("a rank panicked".into())))
            })
            .collect()
    });
    let mut reports = Vec::new();
    for r in results {
        reports.push(r?);
    }
    // Only a process whose every rank succeeded says goodbye: an error above leaves the
    // connection to break, and the other processes stop naming this one.
    if let Some(l) = liveness {
        l.finish();
    }
    Ok(reports.into_iter().next().expect("at least one rank"))
}

/// The configuration every process must share: the TOML form without the fields that differ
/// by process (rank, node address).
pub fn shared_config(cfg: &TrainConfig) -> String {
    let mut c = cfg.clone();
    c.distributed.rank = 0;
    c.distributed.node_address = String::new();
    toml::to_string(&c).expect("config serialises")
}

/// Resolves `[model] init_from`: the run the named configuration describes is trained (or
/// resumed from its last checkpoint) unless its `final.json` exists, and `cfg` is returned
/// with `model.init` at that run's exported model and `init_from` cleared, so the run records
/// where it started. Chains (a first stage with its own `init_from`) resolve in turn, at most
/// four deep. Progress goes to stderr; nothing is printed to stdout.
///
/// A stage trains on `devices` like the run itself; multi-process runs must resolve it
/// beforehand (every process would train the stage at once), so they are refused.
pub fn resolve_init_from<B>(cfg: &TrainConfig, devices: &[B::Device]) -> Result<TrainConfig>
where
    B: AutodiffBackend,
{
    resolve_stage::<B>(cfg, devices, 0)
}

/// The exported model of the run configuration `path`, which `field` of `cfg` names (a model a
/// method needs before it trains, such as CoCu's curation CLIP): found, or trained first, as
/// `model.init_from`'s.
pub fn stage_model<B: AutodiffBackend>(
    cfg: &TrainConfig,
    field: &str,
    path: &str,
    devices: &[B::Device],
) -> Result<String> {
    stage_final::<B>(cfg, field, path, devices, 0)
}

fn resolve_stage<B: AutodiffBackend>(
    cfg: &TrainConfig,
    devices: &[B::Device],
    depth: usize,
) -> Result<TrainConfig> {
    let mut out = cfg.clone();
    if let Some(path) = &cfg.model.init_from {
        out.model.init = Some(stage_final::<B>(
            cfg,
            "model.init_from",
            path,
            devices,
            depth,
        )?);
        out.model.init_from = None;
    }
    if let Some(path) = &cfg.model.teacher_from {
        out.model.teacher = Some(stage_final::<B>(
            cfg,
            "model.teacher_from",
            path,
            devices,
            depth,
        )?);
        out.model.teacher_from = None;
    }
    out.validate()?;
    Ok(out)
}

/// The exported model of the run the configuration `path` (named by `field` of `cfg`)
/// describes: found, or trained (resumed from its last checkpoint) first.
fn stage_final<B: AutodiffBackend>(
    cfg: &TrainConfig,
    field: &str,
    path: &str,
    devices: &[B::Device],
    depth: usize,
) -> Result<String> {
    if depth >= 4 {
        return Err(TrainError::Config(format!(
            "`{field}` = {path:?}: more than four stages chained (a cycle?)"
        )));
    }
    if cfg.distributed.world_size > 1 {
        return Err(TrainError::Config(format!(
            "`{field}` = {path:?} in a multi-process run: train that configuration first and \
             set `{}` to its `final` directory",
            field.trim_end_matches("_from")
        )));
    }
    let mut stage = TrainConfig::load(Some(Path::new(path)), &[])
        .map_err(|e| TrainError::Config(format!("`{field}` = {path:?}: {e}")))?;
    stage.distributed.devices = devices.len();
    stage.validate()?;
    let stage = resolve_stage::<B>(&stage, devices, depth + 1)?;
    let dir = Path::new(&stage.run.dir).join(&stage.run.name);
    let resume = crate::checkpoint::list(&dir.join("checkpoints"))
        .map(|c| !c.is_empty())
        .unwrap_or(false);
    if resume || dir.join("final.json").is_file() {
        // A run of an edited stage configuration would otherwise be reused (or continued) as
        // if it were this one's.
        stage_matches(field, path, &dir, &stage)?;
    }
    if dir.join("final.json").is_file() {
        eprintln!(
            "starting from {} (the run of {path}, already trained)",
            dir.join("final").display()
        );
    } else {
        eprintln!(
            "training the first stage {path} into {} ({})",
            dir.display(),
            if resume { "resumed" } else { "fresh" }
        );
        let opts = RunOptions {
            run_dir: Some(dir.clone()),
            resume: resume.then(|| dir.clone()),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let report = crate::train::<B>(&stage, devices.to_vec(), opts)?;
        eprintln!(
            "first stage done: {}",
            serde_json::to_string(&report).expect("serialises")
        );
    }
    Ok(dir.join("final").display().to_string())
}

/// Checks that the run in `dir` (finished or checkpointed) was started from `stage`, the
/// configuration `path` describes now. Settings that do not change what is trained are left
/// out: the number of rank threads (the trajectory is the same for any number), rank and node
/// address, and logging.
fn stage_matches(field: &str, path: &str, dir: &Path, stage: &TrainConfig) -> Result<()> {
    let file = dir.join("config.toml");
    let recorded = TrainConfig::load(Some(&file), &[]).map_err(|e| {
        TrainError::Config(format!(
            "`{field}` = {path:?}: cannot tell whether the run in {} was trained from it: {e}",
            dir.display()
        ))
    })?;
    let (a, b) = (comparable(&recorded), comparable(stage));
    let differs = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, v)| (k, Some(v), b.get(k)))
        .chain(
            b.iter()
                .filter(|(k, _)| !a.contains_key(*k))
                .map(|(k, v)| (k, None, Some(v))),
        )
        .next();
    match differs {
        None => Ok(()),
        Some((key, then, now)) => {
            let show = |v: Option<&String>| v.map_or("unset".to_string(), String::clone);
            Err(TrainError::Config(format!(
                "`{field}` = {path:?}: the run in {} was trained from another \
                 configuration ({key} = {} there, {} now); remove that directory to train the \
                 stage again, or give the stage another `run.name`",
                dir.display(),
                show(then),
                show(now)
            )))
        }
    }
}

/// `cfg` as `key.path = value` pairs, without the settings [`stage_matches`] ignores.
fn comparable(cfg: &TrainConfig) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        "",
        &toml::Value::try_from(cfg).expect("config serialises"),
        &mut out,
    );
    out.retain(|k, _| {
        !(k.starts_with("log.")
            || k == "distributed.devices"
            || k == "distributed.rank"
            || k == "distributed.node_address")
    });
    out
}
