//! Communication between data-parallel ranks: gathering features of any shape with gradient for
//! the global contrastive batch (ragged token sets included) and summing gradients, on Burn's
//! collective engine (`burn::collective`).

use std::marker::PhantomData;

use burn::collective::{self, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::error::{Result, TrainError};
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
    /// Makes every rank hold the same weights (their mean) before training starts: ranks that
    /// initialise their own copy need not draw the same random numbers.
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
            _b: PhantomData,
        })
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
        let shapes = collective::all_reduce::<B::InnerBackend>(
            self.peer,
            Tensor::<B::InnerBackend, 1>::from_floats(mine.as_slice(), &device)
                .into_primitive()
                .tensor(),
            ReduceOperation::Sum,
        )
        .map_err(cerr)?;
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
        let full = collective::all_reduce::<B::InnerBackend>(
            self.peer,
            padded.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(cerr)?;
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
        // (`AllReduceShapeMismatch` between threads, a hang between machines).
        let mut v = ReduceGrads::<B> {
            grads: &mut grads,
            peer: self.peer,
            error: None,
            _b: PhantomData,
        };
        model.visit(&mut v);
        match v.error {
            Some(e) => Err(cerr(e)),
            None => Ok(grads),
        }
    }

    fn sync_model<M: AutodiffModule<B>>(&self, model: M) -> Result<M> {
        let mut m = MeanParams::<B> {
            peer: self.peer,
            error: None,
            _b: PhantomData,
        };
        let model = model.map(&mut m);
        match m.error {
            Some(e) => Err(cerr(e)),
            None => Ok(model),
        }
    }
}

struct ReduceGrads<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    peer: PeerId,
    error: Option<CollectiveError>,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ReduceGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        if self.error.is_some() {
            return;
        }
        let Some(g) = self.grads.remove::<B::InnerBackend, D>(p.id) else {
            return;
        };
        let op = ReduceOperation::Sum;
        match collective::all_reduce::<B::InnerBackend>(self.peer, g.into_primitive().tensor(), op)
        {
            Ok(sum) => self.grads.register::<B::InnerBackend, D>(
                p.id,
                Tensor::from_primitive(TensorPrimitive::Float(sum)),
            ),
            Err(e) => self.error = Some(e),
        }
    }
}

struct MeanParams<B: AutodiffBackend> {
    peer: PeerId,
    error: Option<CollectiveError>,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for MeanParams<B> {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return p;
        }
        let (peer, error) = (self.peer, &mut self.error);
        p.map(|t| {
            let grad = t.is_require_grad();
            let op = ReduceOperation::Mean;
            match collective::all_reduce::<B::InnerBackend>(
                peer,
                t.clone().inner().into_primitive().tensor(),
                op,
            ) {
                Ok(mean) => {
                    let inner =
                        Tensor::<B::InnerBackend, D>::from_primitive(TensorPrimitive::Float(mean));
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
