//! The work of one rank: set up (tokenizer, model, data, evaluation sets, resume), loop over
//! batches (step, log, evaluate, checkpoint), finish (evaluate, export, report). Rank 0 logs,
//! evaluates, checkpoints and exports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use vlp_data::loader::{Loader, LoaderConfig};
use vlp_data::source::open_source;
use vlp_tasks::battery::EvalImages;

use super::{FinalReport, RunOptions, io};
use crate::checkpoint;
use crate::comm::Comm;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::method::{BuildContext, EvalContext, ExportContext, Method, Metrics};
use crate::metrics::{MetricsLog, plot};
use crate::model::{BuiltTokenizer, build_tokenizer};
use crate::optim::seeded_model;
use crate::trainer::{StepReport, Trainer};

/// Everything a rank builds before its first step.
struct Setup<B: AutodiffBackend, M: Method, C: Comm<B>>
where
    M::Model<B>: AutodiffModule<B>,
{
    tok: BuiltTokenizer,
    loader: Loader,
    eval: Option<EvalImages>,
    unseen: Option<EvalImages>,
    trainer: Trainer<B, M, C>,
    per_rank: usize,
}

fn setup<B, M, C>(
    cfg: &TrainConfig,
    method: Arc<M>,
    opts: &RunOptions,
    ckpt_root: &Path,
    device: B::Device,
    comm: C,
) -> Result<Setup<B, M, C>>
where
    B: AutodiffBackend,
    M: Method,
    C: Comm<B>,
    M::Model<B>: AutodiffModule<B, InnerModule = M::Model<B::InnerBackend>>,
{
    let lead = comm.rank() == 0;
    let world = comm.world();
    let tok = build_tokenizer(cfg)?;
    let ctx = BuildContext {
        config: cfg,
        tokenizer: &tok,
    };
    let pipe = method.pipeline(&ctx)?;
    // Ranks that are threads of one process share the backend's generator: rank 0's weights,
    // which every rank takes, must not depend on thread timing.
    let model =
        seeded_model::<B, _, _>(&device, cfg.run.seed, || method.build::<B>(&ctx, &device))?;
    let model = comm.sync_model(model)?;

    let source = open_source(&cfg.data.train, &cfg.data.shapes)?;
    // A method that needs what the data lacks stops here, naming both.
    source.require(&method.requires(), &format!("method `{}`", method.name()))?;
    crate::model::check_vocabulary(cfg, &tok, &source)?;
    let request = method.data();
    let per_rank = cfg.data.batch_size / world;
    let loader_cfg = LoaderConfig {
        batch_size: per_rank,
        workers: cfg.data.workers,
        seed: cfg.run.seed,
        shuffle: true,
        drop_last: true,
        augment: Some(cfg.data.augment.clone()),
        views: request.views.max(1),
        view_augments: request.view_augments,
        require_caption: request.require_caption.unwrap_or(true),
        max_skip_fraction: cfg.data.max_skip_fraction,
        rank: comm.rank(),
        world_size: world,
        ..Default::default()
    };
    let mut loader = Loader::new(
        source,
        pipe.clone(),
        Some(tok.tokenizer.clone()),
        loader_cfg,
    )?;
    if let Some(t) = request.text_transform {
        loader = loader.with_text_transform(t);
    }
    let load = |spec: &str| -> Result<Option<EvalImages>> {
        if !lead || spec.is_empty() {
            return Ok(None);
        }
        let source = open_source(spec, &cfg.data.shapes)?;
        Ok(Some(EvalImages::load(source, &pipe, cfg.data.workers)?))
    };
    let (eval, unseen) = (load(&cfg.data.eval)?, load(&cfg.data.eval_unseen)?);

    let mut trainer = Trainer::new(cfg, method, model, device.clone(), comm);
    trainer.state.world = world;
    if opts.resume.is_some() {
        let last = checkpoint::list(ckpt_root)?
            .pop()
            .ok_or_else(|| TrainError::Checkpoint {
                path: ckpt_root.to_path_buf(),
                reason: "no checkpoint to resume from".into(),
            })?;
        let (model, optimizers, state) = checkpoint::load(
            &last,
            trainer.model.clone(),
            trainer.optimizers.clone(),
            &device,
        )?;
        if state.world != 0 && state.world != world {
            return Err(TrainError::Checkpoint {
                path: last,
                reason: format!(
                    "saved by a run of {} ranks; resume it with the same number (this run has {world})",
                    state.world
                ),
            });
        }
        trainer.set_model(model, cfg);
        trainer.optimizers = optimizers;
        trainer.schedule.step = state.step;
        trainer.state = state;
        if lead {
            eprintln!("resuming {} at step {}", last.display(), trainer.state.step);
        }
    }
    Ok(Setup {
        tok,
        loader,
        eval,
        unseen,
        trainer,
        per_rank,
    })
}

/// The training log of rank 0: a loss window, throughput, the metrics file and progress bar.
struct Progress {
    log: Option<MetricsLog>,
    bar: Option<indicatif::ProgressBar>,
    window: Vec<f32>,
    parts: Vec<(String, f64)>,
    last_loss: f64,
    train_secs: f64,
    trained_samples: u64,
}

impl Progress {
    fn new(lead: bool, dir: &Path, cfg: &TrainConfig, start_step: usize) -> Result<Self> {
        let bar = (lead && cfg.log.progress).then(|| {
            let b = indicatif::ProgressBar::new(cfg.optim.steps as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} step {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("valid template"),
            );
            b.set_position(start_step as u64);
            b
        });
        Ok(Self {
            log: if lead {
                Some(MetricsLog::open(dir)?)
            } else {
                None
            },
            bar,
            window: Vec::new(),
            parts: Vec::new(),
            last_loss: f64::NAN,
            train_secs: 0.0,
            trained_samples: 0,
        })
    }

    fn samples_per_s(&self) -> f64 {
        self.trained_samples as f64 / self.train_secs.max(1e-9)
    }

    fn record(&mut self, r: &StepReport) {
        if r.skipped {
            return;
        }
        self.window.push(r.loss);
        for (name, v) in &r.parts {
            match self.parts.iter_mut().find(|(n, _)| n == name) {
                Some((_, acc)) => *acc += *v as f64,
                None => self.parts.push((name.clone(), *v as f64)),
            }
        }
    }

    fn write_train(
        &mut self,
        step: usize,
        r: &StepReport,
        epoch: u64,
        skipped_steps: usize,
        extra: Vec<(String, f64)>,
    ) -> Result<()> {
        let n = self.window.len().max(1) as f64;
        let mean = self.window.iter().map(|&v| v as f64).sum::<f64>() / n;
        self.last_loss = mean;
        let sps = self.samples_per_s();
        let mut rec = serde_json::json!({
            "kind": "train", "step": step, "loss": mean, "lr": r.lr, "grad_norm": r.grad_norm,
            "samples_per_s": sps, "epoch": epoch, "skipped_steps": skipped_steps,
        });
        for (name, total) in self.parts.drain(..) {
            rec[format!("loss_{name}")] = (total / n).into();
        }
        for (name, v) in extra {
            rec[name] = v.into();
        }
        self.window.clear();
        if let Some(l) = self.log.as_mut() {
            l.write(&rec)?;
        }
        if let Some(b) = &self.bar {
            b.set_message(format!("loss {mean:.4} lr {:.2e} {sps:.1} samples/s", r.lr));
        }
        Ok(())
    }

    fn write_eval(&mut self, step: usize, m: &Metrics) -> Result<()> {
        let mut v = serde_json::to_value(m).expect("metrics serialise");
        v["kind"] = "eval".into();
        v["step"] = step.into();
        if let Some(b) = &self.bar {
            let line: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
            b.println(format!("step {step}: {}", line.join(", ")));
        }
        match self.log.as_mut() {
            Some(l) => l.write(&v),
            None => Ok(()),
        }
    }
}

/// The loop of one rank.
pub(super) fn train_rank<B, M, C>(
    cfg: &TrainConfig,
    method: Arc<M>,
    dir: &Path,
    opts: &RunOptions,
    device: B::Device,
    comm: C,
) -> Result<FinalReport>
where
    B: AutodiffBackend,
    M: Method,
    C: Comm<B>,
    M::Model<B>: AutodiffModule<B, InnerModule = M::Model<B::InnerBackend>>,
{
    let start = Instant::now();
    let lead = comm.rank() == 0;
    let world = comm.world();
    let ckpt_root = dir.join("checkpoints");
    let Setup {
        tok,
        loader,
        eval,
        unseen,
        mut trainer,
        per_rank,
    } = setup::<B, M, C>(cfg, method.clone(), opts, &ckpt_root, device.clone(), comm)?;
    let mut progress = Progress::new(lead, dir, cfg, trainer.state.step)?;
    let mut audit = if cfg.log.sample_keys {
        let path = dir.join(format!("samples-rank{}.txt", trainer.comm.rank()));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Some((path, std::io::BufWriter::new(f)))
    } else {
        None
    };
    let total = cfg.optim.steps;
    let mut skipped_samples = 0usize;
    let save = |t: &Trainer<B, M, C>| -> Result<PathBuf> {
        checkpoint::save(
            &ckpt_root,
            &t.model,
            &t.optimizers,
            &t.state,
            cfg.checkpoint.keep_last,
        )
    };
    let evaluate = |t: &Trainer<B, M, C>| -> Result<Metrics> {
        let inner = t.model.valid();
        method.evaluate(
            &inner,
            &EvalContext {
                eval: eval.as_ref(),
                unseen: unseen.as_ref(),
                tokenizer: tok.tokenizer.as_ref(),
                templates: &cfg.eval.templates,
                device: &device,
            },
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
            if let Some((path, w)) = audit.as_mut() {
                use std::io::Write;
                for k in &batch.keys {
                    writeln!(w, "{} {k}", trainer.state.epoch).map_err(io(path))?;
                }
                w.flush().map_err(io(path))?;
            }
            progress.train_secs += t0.elapsed().as_secs_f64();
            progress.trained_samples += (batch.len() * world) as u64;
            progress.record(&report);
            let step = trainer.state.step;
            let ok = !report.skipped;
            if lead && ok && (step.is_multiple_of(cfg.log.every.max(1)) || step == total) {
                let extra = method.log_values(&trainer.model);
                let (epoch_no, skipped) = (trainer.state.epoch, trainer.state.skipped_steps);
                progress.write_train(step, &report, epoch_no, skipped, extra)?;
            }
            if let Some(b) = &progress.bar {
                b.set_position(step as u64);
            }
            if lead
                && ok
                && cfg.eval.every > 0
                && step.is_multiple_of(cfg.eval.every)
                && step < total
            {
                let m = evaluate(&trainer)?;
                progress.write_eval(step, &m)?;
            }
            if lead
                && ok
                && cfg.checkpoint.every > 0
                && step.is_multiple_of(cfg.checkpoint.every)
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
    if let Some(b) = &progress.bar {
        b.finish_and_clear();
    }
    if !lead {
        return Ok(FinalReport::default());
    }
    save(&trainer)?;
    let metrics = evaluate(&trainer)?;
    progress.write_eval(trainer.state.step, &metrics)?;
    let out = dir.join("final");
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    method.export(
        &trainer.model.valid(),
        &ExportContext {
            dir: &out,
            config: cfg,
            tokenizer: &tok,
        },
    )?;
    let report = FinalReport {
        method: method.name().to_string(),
        metrics,
        train_samples_per_s: progress.samples_per_s(),
        wall_s: start.elapsed().as_secs_f64(),
        steps: trainer.state.step,
        final_loss: progress.last_loss,
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
