//! A whole run: build, train with logging, periodic evaluation and checkpoints, export.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::collective::CollectiveConfig;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use vlp_core::checkpoint::StoredDType;
use vlp_data::loader::{Loader, LoaderConfig};
use vlp_data::source::open_source;

use crate::checkpoint;
use crate::comm::{Collective, Comm, Single};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::eval::{EvalMetrics, EvalSet, run_eval};
use crate::metrics::{MetricsLog, plot};
use crate::model::{BuiltTokenizer, build_model, build_tokenizer, model_config, pipeline};
use crate::optim::materialize;
use crate::trainer::Trainer;

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
    /// Zero-shot top-1 on held-out images (classes: the main object's shape × colour).
    pub zero_shot_top1: Option<f64>,
    /// Zero-shot top-1 on attribute combinations never seen in training.
    pub zero_shot_top1_unseen: Option<f64>,
    /// Image→text recall@1 on held-out images.
    pub retrieval_i2t_r1: Option<f64>,
    /// Text→image recall@1 on held-out images.
    pub retrieval_t2i_r1: Option<f64>,
    /// Image→text recall@5.
    pub retrieval_i2t_r5: Option<f64>,
    /// Text→image recall@5.
    pub retrieval_t2i_r5: Option<f64>,
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

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

/// Trains as `cfg` says on backend `B` and its default device (several devices: one thread each).
pub fn train<B: AutodiffBackend>(cfg: &TrainConfig, opts: RunOptions) -> Result<FinalReport> {
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
    let devices = cfg.distributed.devices;
    let world = devices * cfg.distributed.world_size;
    if world == 1 {
        return train_rank::<B, _>(cfg, &dir, &opts, B::Device::default(), Single);
    }
    // One thread per local device; global rank = node rank × devices + device.
    let mut collective = CollectiveConfig::default().with_num_devices(devices);
    if cfg.distributed.world_size > 1 {
        collective = crate::distributed::multi_node(collective, &cfg.distributed)?;
    }
    let results: Vec<Result<FinalReport>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..devices)
            .map(|d| {
                let (collective, dir, opts) = (collective.clone(), dir.clone(), opts.clone());
                s.spawn(move || {
                    let rank = cfg.distributed.rank * devices + d;
                    let device = vlp_core::backend::device(d);
                    let device: B::Device = crate::distributed::same_device::<B>(device);
                    let comm = Collective::<B>::register(rank, world, device.clone(), collective)?;
                    train_rank::<B, _>(cfg, &dir, &opts, device, comm)
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

/// The loop of one rank. Rank 0 logs, evaluates, checkpoints and exports.
fn train_rank<B: AutodiffBackend, C: Comm<B>>(
    cfg: &TrainConfig,
    dir: &Path,
    opts: &RunOptions,
    device: B::Device,
    comm: C,
) -> Result<FinalReport> {
    let start = Instant::now();
    let lead = comm.rank() == 0;
    let world = comm.world();
    let tok: BuiltTokenizer = build_tokenizer(cfg)?;
    let arch = model_config(cfg, &tok)?;
    <B as Backend>::seed(&device, cfg.run.seed);
    let (model, arch) = build_model::<B>(cfg, &arch, &device)?;
    let model = comm.sync_model(model)?;
    materialize(&model);
    let pipe = pipeline(&arch);
    let per_rank = cfg.data.batch_size / world;
    let loader_cfg = LoaderConfig {
        batch_size: per_rank,
        workers: cfg.data.workers,
        seed: cfg.run.seed,
        shuffle: true,
        drop_last: true,
        augment: Some(cfg.data.augment.clone()),
        max_skip_fraction: cfg.data.max_skip_fraction,
        rank: comm.rank(),
        world_size: world,
        ..Default::default()
    };
    let loader = Loader::new(
        open_source(&cfg.data.train, &cfg.data.shapes)?,
        pipe.clone(),
        Some(tok.tokenizer.clone()),
        loader_cfg,
    )?;
    let (eval_set, unseen_set) = if lead {
        let load = |spec: &str| -> Result<Option<EvalSet>> {
            if spec.is_empty() {
                Ok(None)
            } else {
                EvalSet::load(spec, &cfg.data.shapes, &pipe, cfg.data.workers).map(Some)
            }
        };
        (load(&cfg.data.eval)?, load(&cfg.data.eval_unseen)?)
    } else {
        (None, None)
    };

    let mut trainer = Trainer::new(cfg, model, device.clone(), comm);
    let ckpt_root = dir.join("checkpoints");
    if opts.resume.is_some() {
        let last = checkpoint::list(&ckpt_root)?
            .pop()
            .ok_or_else(|| TrainError::Checkpoint {
                path: ckpt_root.clone(),
                reason: "no checkpoint to resume from".into(),
            })?;
        let (model, o1, o2, state) = checkpoint::load(
            &last,
            trainer.model.clone(),
            trainer.opt_decay.clone(),
            trainer.opt_no_decay.clone(),
            &device,
        )?;
        trainer.set_model(model);
        trainer.opt_decay = o1;
        trainer.opt_no_decay = o2;
        trainer.schedule.step = state.step;
        trainer.state = state;
        if lead {
            eprintln!("resuming {} at step {}", last.display(), trainer.state.step);
        }
    }

    let mut log = if lead {
        Some(MetricsLog::open(dir)?)
    } else {
        None
    };
    let total = cfg.optim.steps;
    let bar = (lead && cfg.log.progress).then(|| {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        b.set_position(trainer.state.step as u64);
        b
    });
    let mut train_secs = 0.0f64;
    let mut trained_samples = 0u64;
    let mut window: Vec<f32> = Vec::new();
    let mut last_loss = f64::NAN;
    let mut skipped_samples = 0usize;
    let save = |t: &Trainer<B, C>| {
        checkpoint::save(
            &ckpt_root,
            &t.model,
            &t.opt_decay,
            &t.opt_no_decay,
            &t.state,
            cfg.checkpoint.keep_last,
        )
    };

    'outer: while trainer.state.step < total {
        let mut epoch = loader.epoch(trainer.state.epoch, trainer.state.batch_in_epoch);
        let mut got_any = false;
        loop {
            let t0 = Instant::now();
            let Some(batch) = epoch.next() else { break };
            let batch = batch?;
            got_any = true;
            trainer.state.batch_in_epoch += 1;
            let report = trainer.step(&batch)?;
            train_secs += t0.elapsed().as_secs_f64();
            trained_samples += (batch.len() * world) as u64;
            if !report.skipped {
                window.push(report.loss);
            }
            let step = trainer.state.step;
            if lead && !report.skipped && (step % cfg.log.every.max(1) == 0 || step == total) {
                let mean =
                    window.iter().map(|&v| v as f64).sum::<f64>() / window.len().max(1) as f64;
                last_loss = mean;
                window.clear();
                let sps = trained_samples as f64 / train_secs.max(1e-9);
                let rec = serde_json::json!({
                    "kind": "train", "step": step, "loss": mean, "lr": report.lr, "grad_norm": report.grad_norm,
                    "logit_scale": trainer.model.logit_scale.val().exp().into_scalar().elem_f64(),
                    "samples_per_s": sps, "epoch": trainer.state.epoch, "skipped_steps": trainer.state.skipped_steps,
                });
                if let Some(l) = log.as_mut() {
                    l.write(&rec)?;
                }
                if let Some(b) = &bar {
                    b.set_message(format!(
                        "loss {mean:.4} lr {:.2e} {sps:.1} samples/s",
                        report.lr
                    ));
                }
            }
            if let Some(b) = &bar {
                b.set_position(step as u64);
            }
            let at_eval =
                cfg.eval.every > 0 && step % cfg.eval.every == 0 && !report.skipped && step < total;
            if lead && at_eval {
                let m = run_eval(
                    &trainer.model.valid(),
                    tok.tokenizer.as_ref(),
                    eval_set.as_ref(),
                    unseen_set.as_ref(),
                    &cfg.eval.templates,
                    &device,
                )?;
                write_eval(log.as_mut(), step, &m)?;
                if let Some(b) = &bar {
                    b.println(format!("step {step}: {}", eval_line(&m)));
                }
            }
            if lead
                && cfg.checkpoint.every > 0
                && step % cfg.checkpoint.every == 0
                && !report.skipped
                && step < total
            {
                save(&trainer)?;
            }
            if opts.stop.load(Ordering::Relaxed) {
                let path = if lead {
                    save(&trainer)?
                } else {
                    ckpt_root.clone()
                };
                return Err(TrainError::Interrupted { step, path });
            }
            if step >= total {
                skipped_samples += epoch.stats().skipped_count();
                break 'outer;
            }
        }
        skipped_samples += epoch.stats().skipped_count();
        if !got_any {
            return Err(TrainError::Config(format!(
                "training data \"{}\" yields no batch of {per_rank} samples",
                cfg.data.train
            )));
        }
        trainer.state.epoch += 1;
        trainer.state.batch_in_epoch = 0;
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if !lead {
        return Ok(FinalReport::default());
    }
    save(&trainer)?;
    let valid = trainer.model.valid();
    let m = run_eval(
        &valid,
        tok.tokenizer.as_ref(),
        eval_set.as_ref(),
        unseen_set.as_ref(),
        &cfg.eval.templates,
        &device,
    )?;
    write_eval(log.as_mut(), trainer.state.step, &m)?;
    // Export in transformers' layout, with the tokenizer next to it.
    let out = dir.join("final");
    vlp_align::pretrained::save_hf(&valid, &arch, &out, StoredDType::F32)?;
    let pre = match arch.kind {
        vlp_align::ModelKind::Clip => vlp_align::PreprocessConfig::clip(arch.vision.image_size),
        vlp_align::ModelKind::Siglip => vlp_align::PreprocessConfig::siglip(arch.vision.image_size),
    };
    vlp_align::pretrained::save_preprocessor_config(&pre, &out)?;
    if let Some(t) = &tok.hf {
        t.save(out.join("tokenizer.json"))?;
    }
    let report = FinalReport {
        zero_shot_top1: m.zero_shot_top1,
        zero_shot_top1_unseen: m.zero_shot_top1_unseen,
        retrieval_i2t_r1: m.retrieval_i2t_r1,
        retrieval_t2i_r1: m.retrieval_t2i_r1,
        retrieval_i2t_r5: m.retrieval_i2t_r5,
        retrieval_t2i_r5: m.retrieval_t2i_r5,
        train_samples_per_s: trained_samples as f64 / train_secs.max(1e-9),
        wall_s: start.elapsed().as_secs_f64(),
        steps: trainer.state.step,
        final_loss: last_loss,
        skipped_steps: trainer.state.skipped_steps,
        skipped_samples,
        run_dir: dir.to_path_buf(),
    };
    let json = serde_json::json!({ "final": report });
    std::fs::write(
        dir.join("final.json"),
        serde_json::to_string_pretty(&json).expect("serialises"),
    )
    .map_err(io(dir))?;
    plot(&MetricsLog::read(dir), &dir.join("metrics.png"))?;
    Ok(report)
}

fn write_eval(log: Option<&mut MetricsLog>, step: usize, m: &EvalMetrics) -> Result<()> {
    let mut v = serde_json::to_value(m).expect("metrics serialise");
    v["kind"] = "eval".into();
    v["step"] = step.into();
    match log {
        Some(l) => l.write(&v),
        None => Ok(()),
    }
}

fn eval_line(m: &EvalMetrics) -> String {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
    format!(
        "zero-shot top1 {} (unseen {}), retrieval R@1 i2t {} t2i {}",
        f(m.zero_shot_top1),
        f(m.zero_shot_top1_unseen),
        f(m.retrieval_i2t_r1),
        f(m.retrieval_t2i_r1)
    )
}

trait ElemF64 {
    fn elem_f64(self) -> f64;
}

impl<E: burn::tensor::ElementConversion> ElemF64 for E {
    fn elem_f64(self) -> f64 {
        self.elem::<f64>()
    }
}
