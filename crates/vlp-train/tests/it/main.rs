//! Training-runner tests on tiny models and ShapesWorld (seconds each).

// The CPU device is `Copy`, GPU devices are not: the clones keep the tests backend-agnostic.
#![allow(clippy::clone_on_copy)]

mod clip_rocket;
mod cocu;
mod comm;
mod coop;
mod dreamlip;
mod eval;
mod filip;
mod fixture;
mod gist;
mod lxmert;
mod maple;
mod pixel_linguist;
mod precision;
mod priorclip;
mod proapo;
mod ptp;
mod semaim;
mod sgva;
mod steps;
mod syvic;
mod toy;

use std::sync::Arc;

use vlp_core::backend::{DefaultDevice, TrainBackend, default_device};
use vlp_data::loader::{Batch, Loader, LoaderConfig};
use vlp_data::source::open_source;
use vlp_tasks::battery::EvalImages;
use vlp_train::TrainConfig;
use vlp_train::method::clip::{ClipMethod, architecture, pipeline_of};
use vlp_train::method::{BuildContext, EvalContext, Method};
use vlp_train::model::build_tokenizer;
use vlp_train::optim::seeded_model;

/// `burn::collective` is one registry per process: tests that register ranks take turns.
pub fn collective_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The model the claim tests train (64 wide, 2 layers, 32 px in patches of 8, batch 32, lr
/// 3e-3) for `steps` from `seed`, then `extra` overrides.
pub fn claim_config(seed: u64, steps: usize, extra: &[&str]) -> TrainConfig {
    let (steps, seed) = (format!("optim.steps={steps}"), format!("run.seed={seed}"));
    let mut o = vec![
        "model.width=64",
        "model.layers=2",
        "model.heads=2",
        "model.embed_dim=64",
        "model.patch_size=8",
        "data.batch_size=32",
        "optim.warmup_steps=20",
        "optim.lr=0.003",
        &steps,
        &seed,
    ];
    o.extend_from_slice(extra);
    tiny(&o)
}

/// A config small enough to train in seconds.
pub fn tiny(overrides: &[&str]) -> TrainConfig {
    let mut o: Vec<String> = [
        "model.width=32",
        "model.layers=1",
        "model.heads=2",
        "model.embed_dim=32",
        "data.shapes.image_size=32",
        "data.batch_size=16",
        "data.workers=1",
        "data.eval=\"\"",
        "data.eval_unseen=\"\"",
        "optim.steps=30",
        "optim.warmup_steps=3",
        "optim.lr=0.002",
        "tokenizer.context_length=16",
        "log.progress=false",
        "log.every=1",
        "eval.every=0",
        "checkpoint.every=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.extend(overrides.iter().map(|s| s.to_string()));
    TrainConfig::load(None, &o).unwrap()
}

/// The CLIP-family method `cfg` names.
pub fn method(cfg: &TrainConfig) -> Arc<ClipMethod> {
    Arc::new(match cfg.method.kind.as_str() {
        "siglip" => ClipMethod::siglip(cfg).unwrap(),
        _ => ClipMethod::clip(cfg).unwrap(),
    })
}

/// Trains the method `cfg` names into `dir` through the runner (stages resolved).
pub fn train_into(cfg: &TrainConfig, dir: &std::path::Path) -> vlp_train::FinalReport {
    vlp_train::train::<TrainBackend>(
        cfg,
        devices(cfg),
        vlp_train::RunOptions {
            run_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("training into {}: {e}", dir.display()))
}

/// `(step, loss)` of every training record the run in `dir` logged.
pub fn train_losses(dir: &std::path::Path) -> Vec<(u64, f64)> {
    vlp_train::metrics::MetricsLog::read(dir)
        .iter()
        .filter(|r| r["kind"] == "train")
        .map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()))
        .collect()
}

/// One device per rank of `cfg` (the CPU has one; ranks share it).
pub fn devices(cfg: &TrainConfig) -> Vec<DefaultDevice> {
    vec![default_device(); cfg.distributed.devices.max(1)]
}

/// The dual-encoder architecture of `cfg`.
pub fn arch(cfg: &TrainConfig) -> vlp_align::ClipConfig {
    let tok = build_tokenizer(cfg).unwrap();
    let ctx = BuildContext {
        config: cfg,
        tokenizer: &tok,
    };
    architecture(&ctx, cfg.method.kind == "siglip").unwrap()
}

/// Zero-shot top-1 of a trained `model` of `method` on `set` with `cfg`'s templates.
pub fn zero_shot<M: Method>(
    method: &M,
    model: &M::Model<vlp_core::backend::DefaultBackend>,
    set: &EvalImages,
    cfg: &TrainConfig,
) -> f64 {
    evaluated(method, model, set, cfg)["zero_shot_top1"]
}

/// Every metric `method` reports for a trained `model` on `set` with `cfg`'s templates.
pub fn evaluated<M: Method>(
    method: &M,
    model: &M::Model<vlp_core::backend::DefaultBackend>,
    set: &EvalImages,
    cfg: &TrainConfig,
) -> vlp_train::method::Metrics {
    let tok = build_tokenizer(cfg).unwrap();
    let dev = vlp_core::backend::default_device();
    let ctx = EvalContext {
        eval: Some(set),
        unseen: None,
        tokenizer: tok.tokenizer.as_ref(),
        templates: &cfg.eval.templates,
        device: &dev,
    };
    method.evaluate(model, &ctx).unwrap()
}

/// The ShapesWorld images of `spec` (`shapes:test:300`, ...) at `cfg`'s size through CLIP's
/// preprocessing, as the held-out sets of the claim tests.
pub fn held_out(cfg: &TrainConfig, spec: &str) -> EvalImages {
    let pipe = vlp_data::ImagePipeline::clip(cfg.data.shapes.image_size);
    EvalImages::load(open_source(spec, &cfg.data.shapes).unwrap(), &pipe, 1).unwrap()
}

/// The first `n` training batches of `cfg`.
pub fn batches(cfg: &TrainConfig, n: usize) -> Vec<Batch> {
    batches_with(cfg, n, None)
}

/// The first `n` training batches of `cfg`, with a method's text transform.
pub fn batches_with(
    cfg: &TrainConfig,
    n: usize,
    texts: Option<Arc<dyn vlp_data::TextTransform>>,
) -> Vec<Batch> {
    batches_for(
        cfg,
        n,
        0,
        vlp_train::method::DataRequest {
            text_transform: texts,
            ..Default::default()
        },
    )
}

/// The first `n` training batches of `cfg` as a method asks for them (views, their
/// augmentations, texts), as the runner builds its loader; `data_seed` seeds order and
/// augmentation.
pub fn batches_for(
    cfg: &TrainConfig,
    n: usize,
    data_seed: u64,
    request: vlp_train::method::DataRequest,
) -> Vec<Batch> {
    let tok = build_tokenizer(cfg).unwrap();
    let ctx = BuildContext {
        config: cfg,
        tokenizer: &tok,
    };
    let pipe = pipeline_of(&ctx, &architecture(&ctx, false).unwrap()).unwrap();
    let lc = LoaderConfig {
        batch_size: cfg.data.batch_size,
        workers: 1,
        seed: data_seed,
        augment: Some(cfg.data.augment.clone()),
        views: request.views.max(1),
        view_augments: request.view_augments,
        ..Default::default()
    };
    let loader = Loader::new(
        open_source(&cfg.data.train, &cfg.data.shapes).unwrap(),
        pipe,
        Some(Arc::clone(&tok.tokenizer)),
        lc,
    )
    .unwrap();
    let loader = match request.text_transform {
        Some(t) => loader.with_text_transform(t),
        None => loader,
    };
    // Epoch after epoch until `n` batches (a small dataset is seen several times).
    (0u64..)
        .flat_map(|e| loader.epoch(e, 0))
        .take(n)
        .map(|b| b.unwrap())
        .collect()
}

/// `run(seed)` for every seed, each in its own thread (claim tests average seeds), in seed
/// order.
pub fn per_seed<T: Send>(seeds: &[u64], run: impl Fn(u64) -> T + Sync) -> Vec<T> {
    let out: Vec<T> = std::thread::scope(|s| {
        let run = &run;
        let hs: Vec<_> = seeds
            .iter()
            .map(|&seed| s.spawn(move || run(seed)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(out.len(), seeds.len());
    out
}

/// A fresh model for `cfg`, seeded.
pub fn model(cfg: &TrainConfig, seed: u64) -> vlp_align::ClipModel<TrainBackend> {
    let arch = arch(cfg);
    let dev = default_device();
    seeded_model::<TrainBackend, _, std::convert::Infallible>(&dev, seed, || {
        Ok(arch.init::<TrainBackend>(&dev))
    })
    .unwrap()
}

/// Trains `method` on `data` from `cfg`'s seed (one rank), returning the inference model. Seeds
/// may train in parallel threads sharing the backend's generator: `seeded_model` draws the
/// initial weights under the process-wide lock, so each seed's model does not depend on thread
/// timing.
pub fn trained<M: vlp_train::method::Method>(
    method: Arc<M>,
    cfg: &TrainConfig,
    data: &[Batch],
) -> M::Model<vlp_core::backend::DefaultBackend>
where
    M::Model<TrainBackend>: burn::module::AutodiffModule<
            TrainBackend,
            InnerModule = M::Model<vlp_core::backend::DefaultBackend>,
        >,
{
    use burn::module::AutodiffModule;
    let tok = build_tokenizer(cfg).unwrap();
    let ctx = BuildContext {
        config: cfg,
        tokenizer: &tok,
    };
    let dev = default_device();
    let model = seeded_model::<TrainBackend, _, _>(&dev, cfg.run.seed, || {
        method.build::<TrainBackend>(&ctx, &dev)
    })
    .unwrap();
    let mut t = vlp_train::trainer::Trainer::new(cfg, method, model, dev, vlp_train::comm::Single);
    for b in data {
        t.step(b).unwrap();
    }
    t.model.valid()
}
