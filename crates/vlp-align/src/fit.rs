//! The few-shot training recipe shared by prompt learners and adapters (CoOp's, which
//! CLIP-Adapter and the methods built on CoOp's code reuse): SGD with momentum 0.9 and weight
//! decay 5e-4, one epoch of constant warm-up at 1e-5, then cosine to zero, cross-entropy over a
//! module's logits for shuffled batches of frozen features (`KaiyangZhou/CoOp`,
//! `configs/trainers/CoOp/*.yaml`, dassl's `ConstantWarmupScheduler` around `CosineAnnealingLR`,
//! stepped per step here instead of per epoch).

use burn::config::Config;
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use vlp_core::rng::Rng;

use crate::error::{AlignError, Result};

/// The few-shot training recipe.
#[derive(Config, Debug)]
pub struct FewShotFitConfig {
    /// Passes over the shots (CoOp's code: 50 for 1–2 shots, 100 for 4–8, 200 for 16).
    #[config(default = 50)]
    pub epochs: usize,
    /// Shots per step.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Peak learning rate of SGD.
    #[config(default = 0.002)]
    pub lr: f64,
    /// SGD momentum.
    #[config(default = 0.9)]
    pub momentum: f64,
    /// Weight decay.
    #[config(default = 5e-4)]
    pub weight_decay: f64,
    /// Epochs of constant warm-up before the cosine schedule, at most half the steps; fractions
    /// allowed (trained on `v` augmented views per shot, one of the code's epochs is `1/v` of an
    /// epoch here).
    #[config(default = 1.0)]
    pub warmup_epochs: f64,
    /// Learning rate during warm-up.
    #[config(default = 1e-5)]
    pub warmup_lr: f64,
    /// Seed of the shot order.
    #[config(default = 0)]
    pub seed: u64,
}

/// The learning rate of `step` (counted from 0) out of `total`: constant `warmup_lr` for
/// `warmup` steps, then cosine from `lr` to 0 over the remaining steps.
pub(crate) fn lr_at(cfg: &FewShotFitConfig, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return cfg.warmup_lr;
    }
    let span = (total - warmup).max(1) as f64;
    let t = (step - warmup) as f64 / span;
    0.5 * cfg.lr * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Trains `module` so that `logits(module, features of a batch)` (`[batch, classes]`) classify
/// the batch's `labels`, returning it and each epoch's mean loss. Only `module`'s parameters
/// move; `features` (`[shots, dim]`) are constants. `name` names the method in errors.
pub fn fit_few_shot<B: AutodiffBackend, M: AutodiffModule<B>>(
    name: &str,
    module: M,
    features: Tensor<B, 2>,
    labels: &[usize],
    classes: usize,
    cfg: &FewShotFitConfig,
    logits: impl Fn(&M, Tensor<B, 2>) -> Tensor<B, 2>,
) -> Result<(M, Vec<f64>)> {
    let device = features.device();
    let ce = CrossEntropyLossConfig::new().init(&device);
    fit_few_shot_with_loss(name, module, features, labels, classes, cfg, |m, x, y| {
        ce.forward(logits(m, x), y)
    })
}

/// Steps of warm-up: `warmup_epochs` of `per_epoch` steps, rounded, never more than half of
/// `total`.
fn warmup_steps(cfg: &FewShotFitConfig, per_epoch: usize, total: usize) -> usize {
    ((per_epoch as f64 * cfg.warmup_epochs).round() as usize).min(total / 2)
}

/// [`fit_few_shot`] with a loss of the method's own: `loss(module, inputs of a batch, their
/// labels ([batch]))` returns a `[1]` tensor to minimise. The inputs are any tensor whose first
/// dimension is the shots: frozen features (`[shots, dim]`) or images (`[shots, 3, h, w]`) for
/// methods that run a tower.
pub fn fit_few_shot_with_loss<B: AutodiffBackend, M: AutodiffModule<B>, const D: usize>(
    name: &str,
    module: M,
    features: Tensor<B, D>,
    labels: &[usize],
    classes: usize,
    cfg: &FewShotFitConfig,
    loss: impl Fn(&M, Tensor<B, D>, Tensor<B, 1, Int>) -> Tensor<B, 1>,
) -> Result<(M, Vec<f64>)> {
    let bad = |reason: String| AlignError::Input {
        model: name.into(),
        reason,
    };
    let n = features.dims()[0];
    if n == 0 || n != labels.len() {
        return Err(bad(format!(
            "{n} image features for {} labels",
            labels.len()
        )));
    }
    if let Some(l) = labels.iter().find(|&&l| l >= classes) {
        return Err(bad(format!("label {l} but {classes} classes")));
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(bad("batch_size and epochs must be at least 1".into()));
    }
    if !(cfg.warmup_epochs.is_finite() && cfg.warmup_epochs >= 0.0) {
        return Err(bad(format!(
            "warmup_epochs {} must be a finite number ≥ 0",
            cfg.warmup_epochs
        )));
    }
    let device = features.device();
    let features = features.detach();
    let per_epoch = n.div_ceil(cfg.batch_size);
    let total = per_epoch * cfg.epochs;
    let warmup = warmup_steps(cfg, per_epoch, total);
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(cfg.momentum)))
        .with_weight_decay(Some(WeightDecayConfig::new(cfg.weight_decay as f32)))
        .init::<B, M>();
    let mut rng = Rng::new(cfg.seed);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut module, mut losses, mut step) = (module, Vec::new(), 0);
    for _ in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let mut sum = 0.0;
        for batch in order.chunks(cfg.batch_size) {
            let idx: Vec<i64> = batch.iter().map(|&i| i as i64).collect();
            let lab: Vec<i64> = batch.iter().map(|&i| labels[i] as i64).collect();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [batch.len()]), &device);
            let lab = Tensor::<B, 1, Int>::from_data(TensorData::new(lab, [batch.len()]), &device);
            let loss = loss(&module, features.clone().select(0, idx), lab);
            sum += loss.clone().into_scalar().elem::<f64>() * batch.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &module);
            module = optim.step(lr_at(cfg, step, warmup, total), module, grads);
            step += 1;
        }
        losses.push(sum / n as f64);
    }
    Ok((module, losses))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_counts_fractions_of_an_epoch_and_at_most_half_the_run() {
        let cfg = |w: f64| FewShotFitConfig::new().with_warmup_epochs(w);
        // 60 steps an epoch: a fifth is 12 steps (one of the code's epochs over 5 views).
        assert_eq!(warmup_steps(&cfg(0.2), 60, 300), 12);
        assert_eq!(warmup_steps(&cfg(1.0), 60, 12_000), 60);
        assert_eq!(warmup_steps(&cfg(0.0), 60, 300), 0);
        // One epoch of warm-up in a one-epoch run would leave nothing to train.
        assert_eq!(warmup_steps(&cfg(1.0), 60, 60), 30);
    }

    #[test]
    fn warm_up_is_constant_then_cosine_reaches_zero() {
        let cfg = FewShotFitConfig::new();
        assert_eq!(lr_at(&cfg, 0, 2, 10), 1e-5);
        assert_eq!(lr_at(&cfg, 1, 2, 10), 1e-5);
        assert!((lr_at(&cfg, 2, 2, 10) - 0.002).abs() < 1e-12);
        assert!((lr_at(&cfg, 6, 2, 10) - 0.001).abs() < 1e-12);
        assert!(lr_at(&cfg, 9, 2, 10) < 0.002 * 0.05);
    }
}
