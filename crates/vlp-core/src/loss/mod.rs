//! Loss functions and the numerics under them that several methods share and that know nothing
//! about images or text: circle loss (multi-positive metric learning), Sinkhorn–Knopp scaling
//! (entropic optimal transport, and SwAV's balanced assignments), label-smoothed cross-entropy,
//! Barlow Twins' redundancy reduction, the supervised contrastive loss and logit distillation's KL. Each is checked against a closed form or a loop.

mod barlow;
mod circle;
mod sinkhorn;
mod smoothing;
mod supcon;

pub use barlow::barlow_twins_loss;
pub use circle::circle_loss;
pub use sinkhorn::{sinkhorn, swav_assignments};
pub use smoothing::{diagonal_smoothed_cross_entropy, label_smoothed_cross_entropy};
pub use supcon::{softmax_kl_divergence, supervised_contrastive_loss};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `log Σ exp` along `dim` (kept as size 1), stable for large magnitudes.
pub fn logsumexp<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    let max = x.clone().max_dim(dim).detach();
    (x - max.clone()).exp().sum_dim(dim).log() + max
}

/// `log(1 + exp(x))` without overflow: `max(x, 0) + log1p(exp(-|x|))`.
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p()
}
