//! Communication between data-parallel ranks: gathering features of any shape with gradient for
//! the global contrastive batch (ragged token sets included) and summing gradients, on Burn's
//! collective engine (`burn::collective`).

use std::marker::PhantomData;

use burn::collective::{self, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::error::{Result, TrainError};
use crate::liveness::Watchdog;
use crate::method::{Embeddings, Entry};

/// What a training step needs from its peers.
pub trait Comm<B: AutodiffBackend>: Send {
    /// This rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// Every rank's tensor stacked in rank order along the first axis; only this rank's rows
    /// carry gradient, so the sum of every rank's gradient equals the gradient of the global
    /// loss (open_clip's `gather_with_grad`). Ranks may differ in every axis: the first adds up,
    /// the others are zero-padded to the largest (ragged token sets; see [`gather_features`]).
    fn gather<const D: usize>(&self, z: Tensor<B, D>) -> Result<Tensor<B, D>>
    where
        Self: Sized;
    /// Sums gradients over ranks.
    fn all_reduce<M: AutodiffModule<B>>(
        &self,
        grads: GradientsParams,
        model: &M,
    ) -> Result<GradientsParams>
    where
        Self: Sized;
    /// Makes every rank hold rank 0's weights before training starts (a broadcast, as DDP does):
    /// ranks that initialise their own copy need not draw the same random numbers. Not their
    /// mean: the mean of independent initialisations has a smaller spread than any of them.
    fn sync_model<M: AutodiffModule<B>>(&self, model: M) -> Result<M>
    where
        Self: Sized;
}

/// Gathers every feature of a method across ranks ([`Comm::gather`]): rows stack, token sets
/// stack with their padding, shorter sets padded (and marked as padding) to the longest.
pub fn gather_features<B: AutodiffBackend, C: Comm<B>>(
    comm: &C,
    features: Embeddings<B>,
) -> Result<Embeddings<B>> {
    if comm.world() == 1 {
        return Ok(features);
    }
    let mut out = Vec::new();
    for (name, e) in features.into_entries() {
        let e = match e {
            Entry::Rows(t) => Entry::Rows(comm.gather(t)?),
            Entry::Tokens(t, p) => {
                let [n, len, _] = t.dims();
                let device = t.device();
                // Gather validity (1 = token): the zero padding of shorter sets then reads as
                // "not a token".
                let valid = match p {
                    Some(p) => p.bool_not().float(),
                    None => Tensor::ones([n, len], &device),
                };
                let valid = comm.gather(valid.detach())?;
                Entry::Tokens(comm.gather(t)?, Some(valid.lower_elem(0.5)))
            }
        };
        out.push((name, e));
    }
    Ok(Embeddings::from_entries(out))
}

/// One rank: nothing to communicate.
pub struct Single;

impl<B: AutodiffBackend> Comm<B> for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn gather<const D: usize>(&self, z: Tensor<B, D>) -> Result<Tensor<B, D>> {
        Ok(z)
    }
    fn all_reduce<M: AutodiffModule<B>>(
        &self,
        grads: GradientsParams,
        _model: &M,
    ) -> Result<GradientsParams> {
        Ok(grads)
    }
    fn sync_model<M: AutodiffModule<B>>(&self, model: M) -> Result<M> {
        Ok(model)
    }
}

/// A rank of a `burn::collective` group (threads on one machine, optionally across machines).
pub struct Collective<B: AutodiffBackend> {
    peer: PeerId,
    rank: usize,
    world: usize,
    /// Across machines: stops the process when a collective call makes no progress.
    watchdog: Option<Watchdog>,
    _b: PhantomData<B>,
}

fn cerr(e: impl std::fmt::Debug) -> TrainError {
    TrainError::Distributed(format!("{e:?}"))
}

impl<B: AutodiffBackend> Collective<B> {
    /// Registers this rank. `rank` is global (node × devices + device); `config` carries the
    /// local device count and, for several machines, the coordinator.
    pub fn register(
        rank: usize,
        world: usize,
        device: B::Device,
        config: CollectiveConfig,
    ) -> Result<Self> {
        let peer = PeerId(rank as u32);
        collective::register::<B::InnerBackend>(peer, device.clone(), config).map_err(cerr)?;
        Ok(Self {
            peer,
            rank,
            world,
            watchdog: None,
            _b: PhantomData,
        })
    }

    /// Puts every collective call under `watchdog` (multi-node runs).
    pub fn with_watchdog(mut self, watchdog: Watchdog) -> Self {
        self.watchdog = Some(watchdog);
        self
    }

    /// One all-reduce of a primitive, under the watchdog when there is one.
    fn reduce(
        &self,
        label: &'static str,
        t: FloatTensor<B::InnerBackend>,
        op: ReduceOperation,
    ) -> Result<FloatTensor<B::InnerBackend>> {
        let run = || collective::all_reduce::<B::InnerBackend>(self.peer, t, op).map_err(cerr);
        match &self.watchdog {
            Some(w) => w.guard(label, run),
            None => run(),
        }
    }
}

impl<B: AutodiffBackend> Drop for Collective<B> {
    fn drop(&mut self) {
        let _ = collective::finish_collective::<B::InnerBackend>(self.peer);
    }
}

impl<B: AutodiffBackend> Comm<B> for Collective<B> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn gather<const D: usize>(&self, z: Tensor<B, D>) -> Result<Tensor<B, D>> {
        // The collective ops are not differentiable: all-reduce a zero-padded copy on the inner
        // backend, then put the local rows back with their autodiff history. Shapes are
        // exchanged first (one small all-reduce), so ranks may hold different sizes.
        let dims = z.dims();
        let (r, w) = (self.rank, self.world);
        let device = z.device();
        let mut mine = vec![0.0f32; w * D];
        for (k, d) in dims.iter().enumerate() {
            mine[r * D + k] = *d as f32;
        }
        let shapes = self.reduce(
            "gathering feature shapes",
            Tensor::<B::InnerBackend, 1>::from_floats(mine.as_slice(), &device)
                .into_primitive()
                .tensor(),
            ReduceOperation::Sum,
        )?;
        let shapes: Vec<usize> =
            Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(shapes))
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(cerr)?
                .into_iter()
                .map(|v| v.round() as usize)
                .collect();
        let rank_dims = |q: usize| &shapes[q * D..(q + 1) * D];
        let offset: usize = (0..r).map(|q| rank_dims(q)[0]).sum();
        let mut shape = [0usize; D];
        shape[0] = (0..w).map(|q| rank_dims(q)[0]).sum();
        for (k, s) in shape.iter_mut().enumerate().skip(1) {
            *s = (0..w).map(|q| rank_dims(q)[k]).max().unwrap_or(0);
        }
        let local: [std::ops::Range<usize>; D] = std::array::from_fn(|k| {
            if k == 0 {
                offset..offset + dims[0]
            } else {
                0..dims[k]
            }
        });
        let padded = Tensor::<B::InnerBackend, D>::zeros(shape, &device)
            .slice_assign(local.clone(), z.clone().inner());
        let full = self.reduce(
            "gathering features",
            padded.into_primitive().tensor(),
            ReduceOperation::Sum,
        )?;
        let full = Tensor::<B::InnerBackend, D>::from_primitive(TensorPrimitive::Float(full));
        Ok(Tensor::<B, D>::from_inner(full).slice_assign(local, z))
    }

    fn all_reduce<M: AutodiffModule<B>>(
        &self,
        mut grads: GradientsParams,
        model: &M,
    ) -> Result<GradientsParams> {
        // In module order, not `GradientsParams::all_reduce`'s sorted-`ParamId` order: ids are
        // random per process, so ranks that built their own model would pair different tensors
        // (`AllReduceShapeMismatch` between threads, a hang between machines). All gradients
        // travel as one flat tensor: one collective call per step instead of one per parameter.
        let mut take = TakeGrads::<B> {
            grads: &mut grads,
            flat: Vec::new(),
            _b: PhantomData,
        };
        model.visit(&mut take);
        let flat = std::mem::take(&mut take.flat);
        if flat.is_empty() {
            return Ok(grads);
        }
        let order: Vec<(burn::module::ParamId, usize)> =
            flat.iter().map(|(id, t)| (*id, t.dims()[0])).collect();
        let all = Tensor::cat(flat.into_iter().map(|(_, t)| t).collect(), 0);
        let sum = self.reduce(
            "summing gradients",
            all.into_primitive().tensor(),
            ReduceOperation::Sum,
        )?;
        let sum = Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(sum));
        let mut put = PutGrads::<B> {
            grads: &mut grads,
            sum,
            order,
            next: 0,
            offset: 0,
            _b: PhantomData,
        };
        model.visit(&mut put);
        Ok(grads)
    }

    fn sync_model<M: AutodiffModule<B>>(&self, model: M) -> Result<M> {
        let mut m = BroadcastParams::<B> {
            peer: self.peer,
            root: self.rank == 0,
            error: None,
            _b: PhantomData,
        };
        let model = match &self.watchdog {
            Some(w) => w.guard("taking rank 0's initial weights", || model.map(&mut m)),
            None => model.map(&mut m),
        };
        match m.error {
            Some(e) => Err(cerr(e)),
            None => Ok(model),
        }
    }
}

/// Takes every gradient out of `grads`, in module order, flattened.
struct TakeGrads<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    flat: Vec<(burn::module::ParamId, Tensor<B::InnerBackend, 1>)>,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for TakeGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        // A parameter without gradient (frozen) is skipped on every rank alike: all ranks
        // freeze the same parameters.
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(p.id) {
            let n = g.shape().num_elements();
            self.flat.push((p.id, g.reshape([n])));
        }
    }
}

/// Puts the summed gradients back to the parameters [`TakeGrads`] took them from.
struct PutGrads<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    sum: Tensor<B::InnerBackend, 1>,
    /// (parameter, element count) in the order they were taken.
    order: Vec<(burn::module::ParamId, usize)>,
    next: usize,
    offset: usize,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for PutGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        let Some(&(id, n)) = self.order.get(self.next) else {
            return;
        };
        if id != p.id {
            return; // a frozen parameter: it gave no gradient
        }
        let g = self
            .sum
            .clone()
            .slice([self.offset..self.offset + n])
            .reshape(p.lazy_shape().dims::<D>());
        self.grads.register::<B::InnerBackend, D>(p.id, g);
        self.offset += n;
        self.next += 1;
    }
}

/// Rank 0's parameters on every rank: a sum where every other rank contributes zeros, which
/// gives rank 0's values exactly (`x + 0 = x`) with the one collective Burn has.
struct BroadcastParams<B: AutodiffBackend> {
    peer: PeerId,
    root: bool,
    error: Option<CollectiveError>,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for BroadcastParams<B> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return p;
        }
        let (peer, root, error) = (self.peer, self.root, &mut self.error);
        p.map(|t| {
            let grad = t.is_require_grad();
            let mine = match root {
                true => t.clone().inner(),
                false => t.clone().inner().zeros_like(),
            };
            match collective::all_reduce::<B::InnerBackend>(
                peer,
                mine.into_primitive().tensor(),
                ReduceOperation::Sum,
            ) {
                Ok(sum) => {
                    let inner =
                        Tensor::<B::InnerBackend, D>::from_primitive(TensorPrimitive::Float(sum));
                    Tensor::from_inner(inner).set_require_grad(grad)
                }
                Err(e) => {
                    *error = Some(e);
                    t
                }
            }
        })
    }
}
