//! Training-runner tests on tiny models and ShapesWorld (seconds each).

mod eval;
mod steps;

use std::sync::Arc;

use vlp_core::backend::{TrainBackend, default_device};
use vlp_data::loader::{Batch, Loader, LoaderConfig};
use vlp_data::source::open_source;
use vlp_train::TrainConfig;
use vlp_train::model::{build_tokenizer, model_config, pipeline};

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

/// The first `n` training batches of `cfg`.
pub fn batches(cfg: &TrainConfig, n: usize) -> Vec<Batch> {
    let tok = build_tokenizer(cfg).unwrap();
    let arch = model_config(cfg, &tok).unwrap();
    let lc = LoaderConfig {
        batch_size: cfg.data.batch_size,
        workers: 1,
        seed: 0,
        augment: Some(cfg.data.augment.clone()),
        ..Default::default()
    };
    let loader = Loader::new(
        open_source(&cfg.data.train, &cfg.data.shapes).unwrap(),
        pipeline(&arch),
        Some(Arc::clone(&tok.tokenizer)),
        lc,
    )
    .unwrap();
    loader.epoch(0, 0).take(n).map(|b| b.unwrap()).collect()
}

/// A fresh model for `cfg`, seeded.
pub fn model(cfg: &TrainConfig, seed: u64) -> vlp_align::ClipModel<TrainBackend> {
    let tok = build_tokenizer(cfg).unwrap();
    let arch = model_config(cfg, &tok).unwrap();
    let dev = default_device();
    <TrainBackend as burn::tensor::backend::Backend>::seed(&dev, seed);
    let m = arch.init::<TrainBackend>(&dev);
    vlp_train::optim::materialize(&m);
    m
}
