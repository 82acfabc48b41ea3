//! Optimisation: AdamW or SGD per parameter group (open_clip's weight-decay rule refined by
//! `[[optim.groups]]`), warm-up + cosine/constant/poly schedules, global gradient-norm clipping,
//! and the f32 master copy of mixed precision.

use std::collections::HashSet;
use std::marker::PhantomData;

use burn::lr_scheduler::LrScheduler;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder, RecorderError};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, FloatDType, Tensor};

use crate::config::OptimConfig;

/// Parameters that share a learning-rate factor and a weight decay (one optimiser each).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGroup {
    /// The parameters.
    pub ids: Vec<ParamId>,
    /// Factor on the scheduled learning rate.
    pub lr_scale: f64,
    /// Weight decay.
    pub weight_decay: f64,
}

struct GroupVisitor<'a> {
    path: Vec<String>,
    cfg: &'a OptimConfig,
    /// (lr_scale, weight decay as bits) → group index.
    groups: Vec<ParamGroup>,
}

/// open_clip's rule: matrices and kernels decay; biases, norms, embedding tables, the class
/// token, probes and logit scale/bias do not.
fn decays(path: &str, rank: usize) -> bool {
    let embedding = [
        "token_embedding",
        "position_embedding",
        "class_embedding",
        "probe",
    ]
    .iter()
    .any(|e| path.contains(e));
    let logit = path
        .rsplit('.')
        .next()
        .is_some_and(|l| l.starts_with("logit_"))
        || path.starts_with("logit_");
    rank >= 2 && !embedding && !logit
}

impl<B: Backend> ModuleVisitor<B> for GroupVisitor<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let path = self.path.join(".");
        let rule = if decays(&path, D) {
            self.cfg.weight_decay
        } else {
            0.0
        };
        let (lr_scale, wd) = match self.cfg.groups.iter().find(|g| path.starts_with(&g.prefix)) {
            Some(g) => (g.lr_scale, g.weight_decay.unwrap_or(rule)),
            None => (1.0, rule),
        };
        match self
            .groups
            .iter_mut()
            .find(|g| g.lr_scale == lr_scale && g.weight_decay == wd)
        {
            Some(g) => g.ids.push(p.id),
            None => self.groups.push(ParamGroup {
                ids: vec![p.id],
                lr_scale,
                weight_decay: wd,
            }),
        }
    }
}

/// Splits a model's parameters into groups by learning-rate factor and weight decay: the decay
/// rule (decayed matrices vs. everything else) refined by `[[optim.groups]]`. Groups come in the
/// order their first parameter appears, so every rank and every resume builds the same list.
pub fn param_groups<B: Backend, M: Module<B>>(model: &M, cfg: &OptimConfig) -> Vec<ParamGroup> {
    let mut v = GroupVisitor {
        path: Vec::new(),
        cfg,
        groups: Vec::new(),
    };
    model.visit(&mut v);
    v.groups
}

/// The learning-rate schedule: linear warm-up from 0 to `peak`, then cosine decay to `min`,
/// a constant `peak`, or a polynomial decay to `min` at `total` (held after).
#[derive(Debug, Clone)]
pub struct Schedule {
    /// `cosine`, `constant` or `poly`.
    pub kind: String,
    /// Exponent of `poly`.
    pub power: f64,
    /// Peak learning rate.
    pub peak: f64,
    /// Final learning rate.
    pub min: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
    /// Steps taken.
    pub step: usize,
}

impl Schedule {
    /// The schedule `[optim]` describes.
    pub fn from_config(o: &OptimConfig) -> Self {
        Self {
            kind: o.schedule.clone(),
            power: o.power,
            peak: o.lr,
            min: o.min_lr,
            warmup: o.warmup_steps,
            total: o.steps,
            step: 0,
        }
    }

    /// Learning rate at step `s` (1-based: the first update uses `lr_at(1)`).
    pub fn lr_at(&self, s: usize) -> f64 {
        if s <= self.warmup && self.warmup > 0 {
            return self.peak * s as f64 / self.warmup as f64;
        }
        let p = ((s - self.warmup) as f64 / (self.total - self.warmup).max(1) as f64).min(1.0);
        match self.kind.as_str() {
            "constant" => self.peak,
            "poly" => self.min + (self.peak - self.min) * (1.0 - p).powf(self.power),
            _ => self.min + 0.5 * (self.peak - self.min) * (1.0 + (std::f64::consts::PI * p).cos()),
        }
    }
}

impl LrScheduler for Schedule {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        self.step += 1;
        self.lr_at(self.step)
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.step
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.step = record;
        self
    }
}

/// The optimiser of one parameter group.
pub enum GroupOptimizer<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// AdamW with decoupled weight decay.
    AdamW(OptimizerAdaptor<AdamW, M, B>),
    /// SGD with momentum and L2 weight decay (PyTorch's `SGD`).
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, M, B>),
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Clone for GroupOptimizer<B, M> {
    fn clone(&self) -> Self {
        match self {
            Self::AdamW(o) => Self::AdamW(o.clone()),
            Self::Sgd(o) => Self::Sgd(o.clone()),
        }
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> GroupOptimizer<B, M> {
    /// The optimiser `[optim]` asks for, with weight decay `weight_decay`.
    pub fn new(o: &OptimConfig, weight_decay: f64) -> Self {
        if o.optimizer == "sgd" {
            let momentum = (o.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(o.momentum)
                    .with_dampening(0.0)
                    .with_nesterov(o.nesterov)
            });
            let wd = (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32));
            Self::Sgd(
                SgdConfig::new()
                    .with_momentum(momentum)
                    .with_weight_decay(wd)
                    .init::<B, M>(),
            )
        } else {
            Self::AdamW(
                AdamWConfig::new()
                    .with_beta_1(o.beta1)
                    .with_beta_2(o.beta2)
                    .with_epsilon(o.eps)
                    .with_weight_decay(weight_decay as f32)
                    .init::<B, M>(),
            )
        }
    }

    /// One update of `model` with `grads` (which hold only this group's parameters).
    pub fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        match self {
            Self::AdamW(o) => o.step(lr, model, grads),
            Self::Sgd(o) => o.step(lr, model, grads),
        }
    }

    /// Writes the optimiser state to `path` (recorder's extension added).
    pub fn save(
        &self,
        rec: &BinFileRecorder<FullPrecisionSettings>,
        path: std::path::PathBuf,
    ) -> Result<(), RecorderError> {
        match self {
            Self::AdamW(o) => Recorder::<B>::record(rec, o.to_record(), path),
            Self::Sgd(o) => Recorder::<B>::record(rec, o.to_record(), path),
        }
    }

    /// Restores the state written by [`save`](Self::save).
    pub fn load(
        self,
        rec: &BinFileRecorder<FullPrecisionSettings>,
        path: std::path::PathBuf,
        device: &B::Device,
    ) -> Result<Self, RecorderError> {
        Ok(match self {
            Self::AdamW(o) => Self::AdamW(o.load_record(Recorder::<B>::load(rec, path, device)?)),
            Self::Sgd(o) => Self::Sgd(o.load_record(Recorder::<B>::load(rec, path, device)?)),
        })
    }
}

struct SqNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    acc: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SqNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(p.id) {
            let s = g.cast(FloatDType::F32).square().sum();
            self.acc = Some(match self.acc.take() {
                Some(a) => a + s,
                None => s,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f32,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(p.id) {
            self.grads
                .register::<B::InnerBackend, D>(p.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of all gradients; when above `max` (> 0), every gradient is scaled by
/// `max / norm`, as `torch.nn.utils.clip_grad_norm_` does. Returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max: f32,
) -> f32 {
    let mut v = SqNorm::<B> { grads, acc: None };
    model.visit(&mut v);
    let norm = v
        .acc
        .map(|a| a.into_scalar().elem::<f32>().sqrt())
        .unwrap_or(0.0);
    if max > 0.0 && norm > max && norm.is_finite() {
        model.visit(&mut Scale::<B> {
            grads,
            factor: max / (norm + 1e-6),
            _b: PhantomData,
        });
    }
    norm
}

/// Moves the gradients of `ids` into a new set (for per-group optimisers).
pub fn take_group<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    ids: &[ParamId],
) -> GradientsParams {
    struct Take<'a, B: AutodiffBackend> {
        from: &'a mut GradientsParams,
        to: GradientsParams,
        ids: HashSet<ParamId>,
        _b: PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Take<'_, B> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if self.ids.contains(&p.id)
                && let Some(g) = self.from.remove::<B::InnerBackend, D>(p.id)
            {
                self.to.register::<B::InnerBackend, D>(p.id, g);
            }
        }
    }
    let mut t = Take::<B> {
        from: grads,
        to: GradientsParams::new(),
        ids: ids.iter().copied().collect(),
        _b: PhantomData,
    };
    model.visit(&mut t);
    t.to
}

/// Casts every gradient to f32 (half-precision backward → f32 master update).
pub fn grads_to_f32<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
) {
    struct Cast<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        _b: PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Cast<'_, B> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(p.id) {
                self.grads
                    .register::<B::InnerBackend, D>(p.id, g.cast(FloatDType::F32));
            }
        }
    }
    model.visit(&mut Cast::<B> {
        grads,
        _b: PhantomData,
    });
}

/// Builds a model from `seed`: `build` and the draws of its lazily initialised parameters
/// (`materialize`) run under [`vlp_core::backend::seeded`], so its weights depend on the seed
/// alone, not on other threads drawing at the same time.
pub fn seeded_model<B: Backend, M: Module<B>, E>(
    device: &B::Device,
    seed: u64,
    build: impl FnOnce() -> Result<M, E>,
) -> Result<M, E> {
    vlp_core::backend::seeded::<B, _>(device, seed, || {
        let model = build()?;
        materialize(&model);
        Ok(model)
    })
}

pub use vlp_core::backend::materialize;

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_align::ClipConfig;
    use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};

    #[test]
    fn schedule_warms_up_then_decays() {
        let mut s = Schedule {
            kind: "cosine".into(),
            power: 1.0,
            peak: 1.0,
            min: 0.1,
            warmup: 10,
            total: 110,
            step: 0,
        };
        assert!((s.lr_at(1) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((s.lr_at(60) - 0.55).abs() < 1e-12);
        assert!((s.lr_at(110) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(500) - 0.1).abs() < 1e-12);
        s.kind = "constant".into();
        assert_eq!((s.lr_at(5), s.lr_at(60), s.lr_at(500)), (0.5, 1.0, 1.0));
        // poly with power 2: min + (peak - min)(1 - p)², p = (s - warmup) / (total - warmup).
        s.kind = "poly".into();
        s.power = 2.0;
        assert!((s.lr_at(60) - (0.1 + 0.9 * 0.25)).abs() < 1e-12);
        assert!((s.lr_at(110) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn groups_follow_the_rule() {
        let m = ClipConfig::vit_b_32().init::<DefaultBackend>(&default_device());
        let cfg = OptimConfig::default();
        let g = param_groups(&m, &cfg);
        let infos = vlp_core::checkpoint::param_infos(&m);
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(g[0].ids.len() + g[1].ids.len(), infos.len());
        let decay = g
            .iter()
            .find(|g| g.weight_decay == cfg.weight_decay)
            .unwrap();
        // Decayed: every Linear/conv weight; not: biases, norms, embeddings, logit scale.
        let decayed: Vec<&str> = infos
            .iter()
            .filter(|i| i.shape.len() >= 2 && !i.path.contains("embedding"))
            .map(|i| i.path.as_str())
            .collect();
        assert_eq!(
            decay.ids.len(),
            decayed.len() + 1,
            "+1: the patch convolution weight"
        );
        // A group by prefix takes its parameters out of both default groups.
        let cfg = OptimConfig {
            groups: vec![crate::config::ParamGroupConfig {
                prefix: "text_model.".into(),
                lr_scale: 0.1,
                weight_decay: Some(0.0),
            }],
            ..OptimConfig::default()
        };
        let g = param_groups(&m, &cfg);
        assert_eq!(g.len(), 3, "{g:?}");
        let text = g.iter().find(|g| g.lr_scale == 0.1).unwrap();
        let n_text = infos
            .iter()
            .filter(|i| i.path.starts_with("text_model."))
            .count();
        assert_eq!(text.ids.len(), n_text);
    }

    #[test]
    fn global_norm_clipping_matches_torch() {
        // Gradients 3 and 4 (norm 5) clipped to 1 become 0.6 and 0.8.
        use burn::module::Module;
        #[derive(Module, Debug)]
        struct Two<B: Backend> {
            a: Param<Tensor<B, 1>>,
            b: Param<Tensor<B, 1>>,
        }
        let dev = default_device();
        let m = Two::<TrainBackend> {
            a: Param::from_tensor(Tensor::from_floats([1.0], &dev)),
            b: Param::from_tensor(Tensor::from_floats([1.0], &dev)),
        };
        let loss = m.a.val() * 3.0 + m.b.val() * 4.0;
        let mut grads = GradientsParams::from_grads(loss.sum().backward(), &m);
        let norm = clip_global_norm(&m, &mut grads, 1.0);
        assert!((norm - 5.0).abs() < 1e-5);
        let ga: f32 = grads
            .get::<<TrainBackend as AutodiffBackend>::InnerBackend, 1>(m.a.id)
            .unwrap()
            .into_scalar();
        let gb: f32 = grads
            .get::<<TrainBackend as AutodiffBackend>::InnerBackend, 1>(m.b.id)
            .unwrap()
            .into_scalar();
        assert!(
            (ga - 0.6).abs() < 1e-4 && (gb - 0.8).abs() < 1e-4,
            "{ga} {gb}"
        );
    }
}
