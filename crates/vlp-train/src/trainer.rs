//! One optimisation step of any [`Method`], and the state it evolves.

use std::sync::Arc;

use burn::module::{AutodiffModule, Module, ModuleMapper, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, FloatDType, Tensor};
use vlp_data::loader::Batch;

use crate::checkpoint::TrainState;
use crate::comm::{Comm, gather_features};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::method::{Embeddings, Method, Objective, StepInput};
use crate::optim::{
    GroupOptimizer, ParamGroup, Schedule, clip_global_norm, grads_to_f32, param_groups, take_group,
};

/// What one call of [`Trainer::step`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The loss of the global batch (before the update).
    pub loss: f32,
    /// The objective's named parts.
    pub parts: Vec<(String, f32)>,
    /// Global gradient norm before clipping (0 when skipped).
    pub grad_norm: f32,
    /// Learning rate used (0 when skipped).
    pub lr: f64,
    /// Whether the step was skipped because the loss was not finite.
    pub skipped: bool,
}

/// Casts every parameter to a half type, keeping ids, as fresh leaves; frozen parameters
/// (locked towers, everything but LoRA adapters) stay frozen.
struct CastParams(FloatDType);

impl<B: Backend> ModuleMapper<B> for CastParams {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.0;
        p.map(|t| {
            let train = t.is_require_grad();
            t.cast(dtype).detach().set_require_grad(train)
        })
    }
}

/// Model, optimisers, schedule and counters of a run on one rank, for method `M`.
pub struct Trainer<B: AutodiffBackend, M: Method, C: Comm<B>>
where
    M::Model<B>: AutodiffModule<B>,
{
    /// The method.
    pub method: Arc<M>,
    /// The model (f32 master weights).
    pub model: M::Model<B>,
    /// One optimiser per parameter group.
    pub optimizers: Vec<GroupOptimizer<B, M::Model<B>>>,
    groups: Vec<ParamGroup>,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// Counters and data position.
    pub state: TrainState,
    accumulate: usize,
    grad_clip: f32,
    max_nonfinite: usize,
    half: Option<FloatDType>,
    seed: u64,
    device: B::Device,
    /// Communication with the other ranks.
    pub comm: C,
}

impl<B, M, C> Trainer<B, M, C>
where
    B: AutodiffBackend,
    M: Method,
    C: Comm<B>,
    M::Model<B>: AutodiffModule<B, InnerModule = M::Model<B::InnerBackend>>,
{
    /// A trainer for `model` (the method's frozen parameters frozen).
    pub fn new(
        cfg: &TrainConfig,
        method: Arc<M>,
        model: M::Model<B>,
        device: B::Device,
        comm: C,
    ) -> Self {
        let model = method.freeze(model);
        let o = &cfg.optim;
        let groups = param_groups(&model, o);
        let optimizers = groups
            .iter()
            .map(|g| GroupOptimizer::new(o, g.weight_decay))
            .collect();
        let half = match cfg.precision.mode.as_str() {
            "bf16" => Some(FloatDType::BF16),
            "f16" => Some(FloatDType::F16),
            _ => None,
        };
        Self {
            method,
            model,
            optimizers,
            groups,
            schedule: Schedule::from_config(o),
            state: TrainState::default(),
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
    /// saved ones) and regroups its parameters.
    pub fn set_model(&mut self, model: M::Model<B>, cfg: &TrainConfig) {
        let model = self.method.freeze(model);
        self.groups = param_groups(&model, &cfg.optim);
        self.model = model;
    }

    /// The parameter groups, in optimiser order.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Features of a micro-batch with the half-precision copy (when mixed precision is on),
    /// in f32.
    fn embed<BB: Backend>(
        method: &M,
        model: &M::Model<BB>,
        batch: &Batch,
        device: &BB::Device,
        half: Option<FloatDType>,
    ) -> Result<Embeddings<BB>> {
        let input = StepInput {
            batch,
            device,
            dtype: half,
        };
        Ok(method.embed(model, &input)?.to_f32())
    }

    /// Forward, backward and update on one batch (this rank's share of the global batch).
    ///
    /// A non-finite loss skips the update (counted in `state.skipped_steps`); more than
    /// `optim.max_nonfinite` in a row is an error.
    pub fn step(&mut self, batch: &Batch) -> Result<StepReport> {
        // Under the process-wide generator lock, so that another run's step cannot reseed in
        // the middle of a model's initialisation (see `vlp_core::backend::seeded`).
        let step_seed = self
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(self.state.step as u64);
        vlp_core::backend::seeded::<B, _>(&self.device, step_seed, || ());
        let n = batch.len();
        let method = self.method.clone();
        let fwd = match self.half {
            Some(dt) => self.model.clone().map(&mut CastParams(dt)),
            None => self.model.clone(),
        };
        let m = self.accumulate.min(n).max(1);
        let (objective, mut grads) = if m == 1 {
            let e = Self::embed(&method, &fwd, batch, &self.device, self.half)?;
            let e = gather_features(&self.comm, e)?;
            let out = method.objective(&fwd, e)?;
            let value = scalar(&out.loss);
            if !value.is_finite() {
                return self.skip(value);
            }
            let parts = parts(&out);
            (
                (value, parts),
                GradientsParams::from_grads(out.loss.backward(), &fwd),
            )
        } else {
            // open_clip's accumulation: features of every micro-batch first (no graph), then
            // each micro-batch again with gradient against the cached rest, so the objective
            // always sees the whole batch.
            let micro = batch.split(m);
            let inner = fwd.valid();
            let cached: Vec<Embeddings<B::InnerBackend>> = micro
                .iter()
                .map(|mb| Self::embed(&method, &inner, mb, &self.device, self.half))
                .collect::<Result<_>>()?;
            let mut acc = GradientsAccumulator::<M::Model<B>>::new();
            let mut first = None;
            for (j, mb) in micro.iter().enumerate() {
                let own = Self::embed(&method, &fwd, mb, &self.device, self.half)?;
                let stacked: Vec<Embeddings<B>> = cached
                    .iter()
                    .enumerate()
                    .map(|(k, c)| {
                        if k == j {
                            own.clone()
                        } else {
                            Embeddings::from_inner(c.clone())
                        }
                    })
                    .collect();
                let e = gather_features(&self.comm, Embeddings::cat(stacked)?)?;
                let out = method.objective(&fwd, e)?;
                let v = scalar(&out.loss);
                if !v.is_finite() {
                    return self.skip(v);
                }
                if first.is_none() {
                    first = Some((v, parts(&out)));
                }
                acc.accumulate(&fwd, GradientsParams::from_grads(out.loss.backward(), &fwd));
            }
            let mut grads = acc.grads();
            // Every micro-batch backpropagates the whole loss into the objective's own
            // parameters (they do not go through the cached rows): average them, so
            // accumulation gives exactly the big-batch gradient (open_clip sums them).
            scale_params::<B, _>(
                &fwd,
                &mut grads,
                &method.objective_params(&fwd),
                1.0 / micro.len() as f32,
            );
            (first.expect("at least one micro-batch"), grads)
        };
        let (loss_value, parts) = objective;
        self.state.nonfinite_run = 0;
        if self.half.is_some() {
            grads_to_f32::<B, _>(&self.model, &mut grads);
        }
        // Likewise every rank computes the objective parameters' full gradient: the sum over
        // ranks would count it `world` times.
        let world = self.comm.world();
        if world > 1 {
            let ids = method.objective_params(&self.model);
            scale_params::<B, _>(&self.model, &mut grads, &ids, 1.0 / world as f32);
        }
        let mut grads = self.comm.all_reduce(grads, &self.model)?;
        let grad_norm = clip_global_norm::<B, _>(&self.model, &mut grads, self.grad_clip);
        let lr = burn::lr_scheduler::LrScheduler::step(&mut self.schedule);
        let mut model = self.model.clone();
        for (g, opt) in self.groups.iter().zip(self.optimizers.iter_mut()) {
            let mine = take_group::<B, _>(&model, &mut grads, &g.ids);
            model = opt.step(lr * g.lr_scale, model, mine);
        }
        self.model = method.after_update(model);
        self.state.step += 1;
        self.state.samples += (n * world) as u64;
        Ok(StepReport {
            loss: loss_value,
            parts,
            grad_norm,
            lr,
            skipped: false,
        })
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
            parts: Vec::new(),
            grad_norm: 0.0,
            lr: 0.0,
            skipped: true,
        })
    }
}

fn scalar<B: Backend>(t: &Tensor<B, 1>) -> f32 {
    t.clone().into_scalar().elem()
}

fn parts<B: Backend>(o: &Objective<B>) -> Vec<(String, f32)> {
    o.parts
        .iter()
        .map(|(n, t)| (n.clone(), scalar(t)))
        .collect()
}

/// Multiplies the gradients of `ids` by `factor`.
fn scale_params<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    ids: &[ParamId],
    factor: f32,
) {
    if ids.is_empty() || factor == 1.0 {
        return;
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        ids: &'a [ParamId],
        factor: f32,
    }
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if self.ids.contains(&p.id)
                && let Some(g) = self.grads.remove::<B::InnerBackend, D>(p.id)
            {
                self.grads
                    .register::<B::InnerBackend, D>(p.id, g.mul_scalar(self.factor));
            }
        }
    }
    model.visit(&mut Scale { grads, ids, factor });
}

/// The parameters a module holds, in module order (for tests and tools).
pub fn param_ids<B: Backend, M: Module<B>>(model: &M) -> Vec<ParamId> {
    struct Ids(Vec<ParamId>);
    impl<B: Backend> burn::module::ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.push(p.id);
        }
    }
    let mut v = Ids(Vec::new());
    model.visit(&mut v);
    v.0
}
