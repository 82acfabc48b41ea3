//! One optimisation step, and the state it evolves.

use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, FloatDType, Int, Tensor};
use vlp_align::loss::{LossKind, MAX_LOGIT_SCALE, clip_loss, siglip_loss};
use vlp_align::{ClipModel, normalize};
use vlp_data::loader::Batch;

use crate::checkpoint::TrainState;
use crate::comm::Comm;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::optim::{
    ParamGroups, WarmupCosine, clip_global_norm, grads_to_f32, param_groups, take_group,
};

type Adam<B> = OptimizerAdaptor<AdamW, ClipModel<B>, B>;
/// Image and text features of one micro-batch on the inner backend.
type Pair<B> = (Tensor<B, 2>, Tensor<B, 2>);

/// What one call of [`Trainer::step`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The loss of the global batch (before the update).
    pub loss: f32,
    /// Global gradient norm before clipping (0 when skipped).
    pub grad_norm: f32,
    /// Learning rate used (0 when skipped).
    pub lr: f64,
    /// Whether the step was skipped because the loss was not finite.
    pub skipped: bool,
}

/// Casts every parameter to a half type, keeping ids, as fresh leaves.
struct CastParams(FloatDType);

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        p.map(|t| t.cast(dtype).detach().require_grad())
    }
}

/// Model, optimisers, schedule and counters of a run on one rank.
pub struct Trainer<B: AutodiffBackend, C: Comm<B>> {
    /// The model (f32 master weights).
    pub model: ClipModel<B>,
    /// AdamW over the decayed group.
    pub opt_decay: Adam<B>,
    /// AdamW over the non-decayed group.
    pub opt_no_decay: Adam<B>,
    groups: ParamGroups,
    /// The learning-rate schedule.
    pub schedule: WarmupCosine,
    /// Counters and data position.
    pub state: TrainState,
    loss: LossKind,
    accumulate: usize,
    grad_clip: f32,
    max_nonfinite: usize,
    half: Option<FloatDType>,
    seed: u64,
    device: B::Device,
    /// Communication with the other ranks.
    pub comm: C,
}

impl<B: AutodiffBackend, C: Comm<B>> Trainer<B, C> {
    /// A trainer for `model` (towers locked as `[optim]` says).
    pub fn new(cfg: &TrainConfig, mut model: ClipModel<B>, device: B::Device, comm: C) -> Self {
        if cfg.optim.lock_image {
            model.vision_model = model.vision_model.no_grad();
            model.visual_projection = model.visual_projection.map(|p| p.no_grad());
        }
        if cfg.optim.lock_text {
            model.text_model = model.text_model.no_grad();
            model.text_projection = model.text_projection.map(|p| p.no_grad());
        }
        let o = &cfg.optim;
        let adam = |wd: f64| {
            AdamWConfig::new()
                .with_beta_1(o.beta1)
                .with_beta_2(o.beta2)
                .with_epsilon(o.eps)
                .with_weight_decay(wd as f32)
                .init::<B, ClipModel<B>>()
        };
        let half = match cfg.precision.mode.as_str() {
            "bf16" => Some(FloatDType::BF16),
            "f16" => Some(FloatDType::F16),
            _ => None,
        };
        Self {
            groups: param_groups(&model),
            model,
            opt_decay: adam(o.weight_decay),
            opt_no_decay: adam(0.0),
            schedule: WarmupCosine {
                peak: o.lr,
                min: o.min_lr,
                warmup: o.warmup_steps,
                total: o.steps,
                step: 0,
            },
            state: TrainState::default(),
            loss: cfg.model.loss,
            accumulate: o.accumulate,
            grad_clip: o.grad_clip,
            max_nonfinite: o.max_nonfinite,
            half,
            seed: cfg.run.seed,
            device,
            comm,
        }
    }

    /// Replaces the model (e.g. with one restored from a checkpoint, whose parameter ids are the
    /// saved ones) and regroups its parameters for weight decay.
    pub fn set_model(&mut self, model: ClipModel<B>) {
        self.groups = param_groups(&model);
        self.model = model;
    }

    /// Normalised image and text features of a micro-batch, in f32.
    fn features(
        model: &ClipModel<B>,
        px: Tensor<B, 4>,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Int>,
        half: Option<FloatDType>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let px = match half {
            Some(dt) => px.cast(dt),
            None => px,
        };
        let mask = model.text_model.causal.then_some(mask);
        let img = model.encode_image(px).cast(FloatDType::F32);
        let txt = model.encode_text(ids, mask).cast(FloatDType::F32);
        (normalize(img), normalize(txt))
    }

    fn objective(
        &self,
        model: &ClipModel<B>,
        img: Tensor<B, 2>,
        txt: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        let scale = model.logit_scale.val().cast(FloatDType::F32);
        match self.loss {
            LossKind::Clip => clip_loss(img, txt, scale),
            LossKind::Siglip => {
                let bias = model
                    .logit_bias
                    .as_ref()
                    .expect("the sigmoid loss builds the model with a logit bias")
                    .val()
                    .cast(FloatDType::F32);
                siglip_loss(img, txt, scale, bias)
            }
        }
    }

    /// Forward, backward and update on one batch (this rank's share of the global batch).
    ///
    /// A non-finite loss skips the update (counted in `state.skipped_steps`); more than
    /// `optim.max_nonfinite` in a row is an error.
    pub fn step(&mut self, batch: &Batch) -> Result<StepReport> {
        let tokens = batch.tokens.as_ref().ok_or_else(|| {
            TrainError::Config("the training loader must tokenise captions".into())
        })?;
        B::seed(
            &self.device,
            self.seed
                .wrapping_mul(1_000_003)
                .wrapping_add(self.state.step as u64),
        );
        let n = batch.len();
        let px = batch.images_tensor::<B>(&self.device);
        let (ids, mask) = tokens.to_tensors::<B>(&self.device);
        let fwd = match self.half {
            Some(dt) => self.model.clone().map(&mut CastParams(dt)),
            None => self.model.clone(),
        };
        let m = self.accumulate.min(n).max(1);
        let (loss_value, mut grads) = if m == 1 {
            let (img, txt) = Self::features(&fwd, px, ids, mask, self.half);
            let (img, txt) = (self.comm.gather(img)?, self.comm.gather(txt)?);
            let loss = self.objective(&fwd, img, txt);
            let value: f32 = loss.clone().into_scalar().elem();
            if !value.is_finite() {
                return self.skip(value);
            }
            (value, GradientsParams::from_grads(loss.backward(), &fwd))
        } else {
            // open_clip's accumulation: features of every micro-batch first (no graph), then
            // each micro-batch again with gradient against the cached rest, so the loss always
            // sees the whole batch.
            let per = n.div_ceil(m);
            let ranges: Vec<std::ops::Range<usize>> =
                (0..n).step_by(per).map(|s| s..(s + per).min(n)).collect();
            let inner = fwd.valid();
            let cached: Vec<Pair<B::InnerBackend>> = ranges
                .iter()
                .map(|r| {
                    let (i, t) = Self::features_inner(
                        &inner,
                        px.clone().inner().slice([r.clone()]),
                        ids.clone().inner().slice([r.clone()]),
                        mask.clone().inner().slice([r.clone()]),
                        self.half,
                    );
                    (i, t)
                })
                .collect();
            let mut acc = GradientsAccumulator::<ClipModel<B>>::new();
            let mut value = 0.0;
            for (j, r) in ranges.iter().enumerate() {
                let (img_j, txt_j) = Self::features(
                    &fwd,
                    px.clone().slice([r.clone()]),
                    ids.clone().slice([r.clone()]),
                    mask.clone().slice([r.clone()]),
                    self.half,
                );
                // The whole batch: this micro-batch's rows with gradient, the others cached.
                let cat = |own: Tensor<B, 2>, text: bool| {
                    let parts: Vec<Tensor<B, 2>> = cached
                        .iter()
                        .enumerate()
                        .map(|(k, c)| match (k == j, text) {
                            (true, _) => own.clone(),
                            (false, false) => Tensor::from_inner(c.0.clone()),
                            (false, true) => Tensor::from_inner(c.1.clone()),
                        })
                        .collect();
                    Tensor::cat(parts, 0)
                };
                let img = self.comm.gather(cat(img_j, false))?;
                let txt = self.comm.gather(cat(txt_j, true))?;
                let loss = self.objective(&fwd, img, txt);
                let v: f32 = loss.clone().into_scalar().elem();
                if !v.is_finite() {
                    return self.skip(v);
                }
                if j == 0 {
                    value = v;
                }
                acc.accumulate(&fwd, GradientsParams::from_grads(loss.backward(), &fwd));
            }
            // Every micro-batch backpropagates the whole loss into the logit scale and bias
            // (they do not go through the cached rows): average them, so accumulation gives
            // exactly the big-batch gradient. open_clip sums them instead.
            let mut grads = acc.grads();
            let inv = 1.0 / ranges.len() as f32;
            let mut scale_one = |id: burn::module::ParamId| {
                if let Some(g) = grads.remove::<B::InnerBackend, 1>(id) {
                    grads.register::<B::InnerBackend, 1>(id, g.mul_scalar(inv));
                }
            };
            scale_one(fwd.logit_scale.id);
            if let Some(b) = &fwd.logit_bias {
                scale_one(b.id);
            }
            (value, grads)
        };
        self.state.nonfinite_run = 0;
        if self.half.is_some() {
            grads_to_f32::<B, _>(&self.model, &mut grads);
        }
        let mut grads = self.comm.all_reduce(grads, &self.model)?;
        let grad_norm = clip_global_norm::<B, _>(&self.model, &mut grads, self.grad_clip);
        let lr = burn::lr_scheduler::LrScheduler::step(&mut self.schedule);
        let g_no_decay = take_group::<B, _>(&self.model, &mut grads, &self.groups.no_decay);
        let model = self.opt_decay.step(lr, self.model.clone(), grads);
        let mut model = self.opt_no_decay.step(lr, model, g_no_decay);
        if self.loss == LossKind::Clip {
            // open_clip clamps the learnable log-scale to [0, ln 100] after every step.
            model.logit_scale = model
                .logit_scale
                .map(|t| t.clamp(0.0, MAX_LOGIT_SCALE.ln()).detach().require_grad());
        }
        self.model = model;
        self.state.step += 1;
        self.state.samples += (n * self.comm.world()) as u64;
        Ok(StepReport {
            loss: loss_value,
            grad_norm,
            lr,
            skipped: false,
        })
    }

    fn features_inner(
        model: &ClipModel<B::InnerBackend>,
        px: Tensor<B::InnerBackend, 4>,
        ids: Tensor<B::InnerBackend, 2, Int>,
        mask: Tensor<B::InnerBackend, 2, Int>,
        half: Option<FloatDType>,
    ) -> (Tensor<B::InnerBackend, 2>, Tensor<B::InnerBackend, 2>) {
        let px = match half {
            Some(dt) => px.cast(dt),
            None => px,
        };
        let mask = model.text_model.causal.then_some(mask);
        let img = model.encode_image(px).cast(FloatDType::F32);
        let txt = model.encode_text(ids, mask).cast(FloatDType::F32);
        (normalize(img), normalize(txt))
    }

    fn skip(&mut self, value: f32) -> Result<StepReport> {
        self.state.skipped_steps += 1;
        self.state.nonfinite_run += 1;
        if self.state.nonfinite_run > self.max_nonfinite {
            return Err(TrainError::Diverged {
                step: self.state.step,
                count: self.state.nonfinite_run,
            });
        }
        Ok(StepReport {
            loss: value,
            grad_norm: 0.0,
            lr: 0.0,
            skipped: true,
        })
    }
}
