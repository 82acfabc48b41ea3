//! Communication between data-parallel ranks: gathering features with gradient for the global
//! contrastive batch and summing gradients, on Burn's collective engine (`burn::collective`).

use std::marker::PhantomData;

use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::error::{Result, TrainError};

/// What a training step needs from its peers.
pub trait Comm<B: AutodiffBackend>: Send {
    /// This rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// Rows of every rank stacked in rank order; only this rank's rows carry gradient, so the
    /// sum of every rank's gradient equals the gradient of the global loss (open_clip's
    /// `gather_with_grad`).
    fn gather(&self, z: Tensor<B, 2>) -> Result<Tensor<B, 2>>;
    /// Sums gradients over ranks.
    fn all_reduce<M: AutodiffModule<B>>(
        &self,
        grads: GradientsParams,
        model: &M,
    ) -> Result<GradientsParams>
    where
        Self: Sized;
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
    fn gather(&self, z: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        Ok(z)
    }
    fn all_reduce<M: AutodiffModule<B>>(
        &self,
        grads: GradientsParams,
        _model: &M,
    ) -> Result<GradientsParams> {
        Ok(grads)
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

    fn gather(&self, z: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        // The collective ops are not differentiable: all-reduce a zero-padded copy on the inner
        // backend, then put the local rows back with their autodiff history.
        let [n, d] = z.dims();
        let (r, w) = (self.rank, self.world);
        let device = z.device();
        let padded = Tensor::<B::InnerBackend, 2>::zeros([n * w, d], &device.clone())
            .slice_assign([r * n..(r + 1) * n, 0..d], z.clone().inner());
        let full = collective::all_reduce::<B::InnerBackend>(
            self.peer,
            padded.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(cerr)?;
        let full = Tensor::<B::InnerBackend, 2>::from_primitive(TensorPrimitive::Float(full));
        Ok(Tensor::<B, 2>::from_inner(full).slice_assign([r * n..(r + 1) * n, 0..d], z))
    }

    fn all_reduce<M: AutodiffModule<B>>(
        &self,
        grads: GradientsParams,
        _model: &M,
    ) -> Result<GradientsParams> {
        grads
            .all_reduce::<B::InnerBackend>(self.peer, ReduceOperation::Sum)
            .map_err(cerr)
    }
}
