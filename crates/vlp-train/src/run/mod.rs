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
    if opts.resume.is_none() {
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
    if cfg.distributed.world_size > 1 {
        collective = crate::distributed::multi_node(collective, &cfg.distributed)?;
    }
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
                    let comm = Collective::<B>::register(rank, world, device.clone(), collective)?;
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
    Ok(reports.into_iter().next().expect("at least one rank"))
}
