//! Optimisation: AdamW with open_clip's weight-decay groups, warm-up + cosine schedule, global
//! gradient-norm clipping, frozen towers, and the f32 master copy of mixed precision.

use std::collections::HashSet;
use std::marker::PhantomData;

use burn::lr_scheduler::LrScheduler;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, FloatDType, Tensor};

/// Which parameters get weight decay.
#[derive(Debug, Clone, Default)]
pub struct ParamGroups {
    /// Matrices and convolution kernels: decayed.
    pub decay: Vec<ParamId>,
    /// Biases, norms, embedding tables, class token, probe, logit scale and bias: not decayed.
    pub no_decay: Vec<ParamId>,
}

struct GroupVisitor {
    path: Vec<String>,
    groups: ParamGroups,
}

impl<B: Backend> ModuleVisitor<B> for GroupVisitor {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let path = self.path.join(".");
        let embedding = [
            "token_embedding",
            "position_embedding",
            "class_embedding",
            "probe",
        ]
        .iter()
        .any(|e| path.contains(e));
        if D < 2 || embedding || path.starts_with("logit_") {
            self.groups.no_decay.push(p.id);
        } else {
            self.groups.decay.push(p.id);
        }
    }
}

/// Splits a model's parameters into the decayed and the non-decayed group.
pub fn param_groups<B: Backend, M: Module<B>>(model: &M) -> ParamGroups {
    let mut v = GroupVisitor {
        path: Vec::new(),
        groups: ParamGroups::default(),
    };
    model.visit(&mut v);
    v.groups
}

/// Linear warm-up from 0 to `peak`, then cosine decay to `min` at `total` (held after).
#[derive(Debug, Clone)]
pub struct WarmupCosine {
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

impl WarmupCosine {
    /// Learning rate at step `s` (1-based: the first update uses `lr_at(1)`).
    pub fn lr_at(&self, s: usize) -> f64 {
        if s <= self.warmup && self.warmup > 0 {
            return self.peak * s as f64 / self.warmup as f64;
        }
        let p = ((s - self.warmup) as f64 / (self.total - self.warmup).max(1) as f64).min(1.0);
        self.min + 0.5 * (self.peak - self.min) * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

impl LrScheduler for WarmupCosine {
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

/// Makes every lazily-initialised parameter concrete, so clones share values (a clone of an
/// uninitialised parameter would draw its own).
pub fn materialize<B: Backend, M: Module<B>>(model: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let _ = p.val();
        }
    }
    model.visit(&mut Touch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_align::ClipConfig;
    use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = WarmupCosine {
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
    }

    #[test]
    fn groups_follow_the_rule() {
        let m = ClipConfig::vit_b_32().init::<DefaultBackend>(&default_device());
        let g = param_groups(&m);
        let infos = vlp_core::checkpoint::param_infos(&m);
        assert_eq!(g.decay.len() + g.no_decay.len(), infos.len());
        // Decayed: 2 attention... every Linear/conv weight; not: biases, norms, embeddings.
        let decayed: Vec<&str> = infos
            .iter()
            .filter(|i| i.shape.len() >= 2 && !i.path.contains("embedding"))
            .map(|i| i.path.as_str())
            .collect();
        assert_eq!(
            g.decay.len(),
            decayed.len() + 1,
            "+1: the patch convolution weight"
        );
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
