//! PIR-CLIP's spatial prior-guided token weighting ("Spatial-PAE", Pan et al., 2024, §3.2; the
//! official `VisionTransformer.forward` in `src/open_clip/transformer.py`): a scene prior token
//! `y` (a scene classifier's feature) scores every image token, the tokens are re-weighted by
//! that belief and by a rank weight, L2-normalised, and `y` is prepended, so it is the token the
//! tower pools.
//!
//! ```text
//! B = softmax_tokens(x · yᵀ)        w = 1 / √(r + 1)
//! x ← normalize(x ⊙ B + x ⊙ w);     x ← [y; x]
//! ```
//!
//! Paper and code differ on `r` ([`RankWeights`]): the paper ranks each token by its belief;
//! the released code takes `1/√(sorted_ind + 1)` elementwise, i.e. the weight at position `j` is
//! set by the *index of the token ranked j-th*. We follow the code by default, as the project
//! does where they disagree, and offer the paper's form.
//!
//! Note what the normalisation does: `x ⊙ B + x ⊙ w = (B + w) · x` scales each token by a
//! positive number, which the L2 normalisation (the code's `F.normalize`; a LayerNorm would do
//! the same) removes again. As released, the re-weighting therefore reduces to `x / ‖x‖` and
//! does not depend on the prior at all (a test shows it); the prior reaches the tower only as
//! the prepended, pooled token. `renormalize = false` keeps the weights (`(B + w) · x`, no
//! normalisation), the form in which the belief matrix acts.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Gelu, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use vlp_core::nn::EncoderHook;

/// How the rank weight `w = 1/√(r + 1)` picks `r` for each token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankWeights {
    /// As the released code: `r` at position `j` is the index of the token with the `j`-th
    /// highest belief (`torch.sort(...)[1]` used elementwise).
    #[default]
    Code,
    /// As the paper describes: `r` is the token's own rank by belief (0 = highest).
    Rank,
    /// No rank weight (`x ⊙ B` only), for ablations.
    None,
}

/// The belief matrix and the re-weighted tokens, L2-normalised when `renormalize` (the code).
///
/// # Shapes
/// - `x`: `[batch, tokens, d]` (after the tower's pre-LayerNorm); `y`: `[batch, 1, d]`
/// - returns: `[batch, tokens, d]` (every token of unit L2 norm when `renormalize`)
pub fn prior_weighting<B: Backend>(
    x: Tensor<B, 3>,
    y: Tensor<B, 3>,
    rank: RankWeights,
    renormalize: bool,
) -> Tensor<B, 3> {
    let [b, t, _] = x.dims();
    // [b, t, 1] scores, softmax over the tokens.
    let belief = softmax(x.clone().matmul(y.swap_dims(1, 2)), 1);
    let flat = belief.clone().reshape([b, t]);
    let weighted = match rank {
        RankWeights::None => x.clone() * belief,
        RankWeights::Code | RankWeights::Rank => {
            let order = flat.argsort_descending(1);
            let r = match rank {
                RankWeights::Code => order,
                // The inverse permutation: the position of each token in the order.
                _ => order.argsort(1),
            };
            let w = (r.float() + 1.0).sqrt().recip().reshape([b, t, 1]);
            x.clone() * belief + x * w
        }
    };
    if !renormalize {
        return weighted;
    }
    // torch.nn.functional.normalize: x / max(‖x‖, 1e-12).
    let norm = weighted
        .clone()
        .powi_scalar(2)
        .sum_dim(2)
        .sqrt()
        .clamp_min(1e-12);
    weighted / norm
}

/// A hook that applies [`prior_weighting`] to the tokens entering the first block and prepends
/// the prior token; with a CLIP-layout [`Vit`](crate::Vit) the pooled output is then the prior
/// token's (the code pools `x[:, 0]`, which is `y` after the prepend).
pub struct PriorHook<B: Backend> {
    /// The prior token per image, `[batch, 1, d]`.
    pub prior: Tensor<B, 3>,
    /// Which rank weights.
    pub rank: RankWeights,
    /// Whether the weighted tokens are L2-normalised (the code).
    pub renormalize: bool,
}

impl<B: Backend> EncoderHook<B> for PriorHook<B> {
    fn before_layer(&mut self, layer: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if layer != 0 {
            return x;
        }
        let weighted = prior_weighting(x, self.prior.clone(), self.rank, self.renormalize);
        Tensor::cat(vec![self.prior.clone(), weighted], 1)
    }
}

/// The scene-prior network: a small convolutional scene encoder whose feature, projected to the
/// tower's width, is the prior token (the code's `ModifiedResNet` + `vision_proj_res`).
#[derive(Config, Debug)]
pub struct PriorEncoderConfig {
    /// Width of the tower the prior token enters.
    pub width: usize,
    /// Stride (and kernel) of the first convolution.
    #[config(default = 4)]
    pub stride: usize,
    /// Channels of the two convolutions.
    #[config(default = 32)]
    pub channels: usize,
}

/// See [`PriorEncoderConfig`].
#[derive(Module, Debug)]
pub struct PriorEncoder<B: Backend> {
    /// `stride × stride` patches to `channels`.
    pub conv1: Conv2d<B>,
    /// 2 × 2, stride 2, `channels` to `2 · channels`.
    pub conv2: Conv2d<B>,
    /// Mean-pooled feature to the tower's width (`vision_proj_res`).
    pub proj: Linear<B>,
    /// Activation.
    pub act: Gelu,
}

impl PriorEncoderConfig {
    /// A fresh encoder.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PriorEncoder<B> {
        let (s, c) = (self.stride, self.channels);
        PriorEncoder {
            conv1: Conv2dConfig::new([3, c], [s, s])
                .with_stride([s, s])
                .init(device),
            conv2: Conv2dConfig::new([c, 2 * c], [2, 2])
                .with_stride([2, 2])
                .init(device),
            proj: LinearConfig::new(2 * c, self.width).init(device),
            act: Gelu::new(),
        }
    }
}

impl<B: Backend> PriorEncoder<B> {
    /// The scene feature (mean over the map) before the projection.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, size, size]` with `size` ≥ `2 · stride`; returns `[batch, 2 · channels]`
    pub fn features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.act.forward(self.conv1.forward(pixels));
        let x = self.act.forward(self.conv2.forward(x));
        let [b, c, h, w] = x.dims();
        x.reshape([b, c, h * w]).mean_dim(2).reshape([b, c])
    }

    /// The prior token.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, size, size]`; returns `[batch, 1, width]`
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let f = self.proj.forward(self.features(pixels));
        let [b, d] = f.dims();
        f.reshape([b, 1, d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn rand(shape: [usize; 3], seed: u64) -> (Tensor<B, 3>, Vec<f32>) {
        let dev = default_device();
        let t = vlp_core::backend::seeded::<B, _>(&dev, seed, || {
            Tensor::<B, 3>::random(shape, Distribution::Normal(0.0, 1.0), &dev)
        });
        let v = t.to_data().to_vec::<f32>().unwrap();
        (t, v)
    }

    /// The code's computation, one image at a time.
    fn weighting_loop(
        x: &[f32],
        y: &[f32],
        (t, d): (usize, usize),
        rank: RankWeights,
        renormalize: bool,
    ) -> Vec<f64> {
        let scores: Vec<f64> = (0..t)
            .map(|i| (0..d).map(|k| x[i * d + k] as f64 * y[k] as f64).sum())
            .collect();
        let m = scores.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
        let belief: Vec<f64> = scores.iter().map(|s| (s - m).exp() / z).collect();
        let mut order: Vec<usize> = (0..t).collect();
        order.sort_by(|&a, &b| belief[b].partial_cmp(&belief[a]).unwrap());
        let mut out = Vec::new();
        for i in 0..t {
            let w = match rank {
                RankWeights::Code => 1.0 / ((order[i] + 1) as f64).sqrt(),
                RankWeights::Rank => {
                    let r = order.iter().position(|&j| j == i).unwrap();
                    1.0 / ((r + 1) as f64).sqrt()
                }
                RankWeights::None => 0.0,
            };
            let row: Vec<f64> = (0..d)
                .map(|k| x[i * d + k] as f64 * (belief[i] + w))
                .collect();
            let n = if renormalize {
                row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12)
            } else {
                1.0
            };
            out.extend(row.iter().map(|v| v / n));
        }
        out
    }

    #[test]
    fn weighting_matches_the_loop_for_each_rank_form() {
        // Odd sizes: 2 images, 7 tokens, 5 dims.
        let (b, t, d) = (2, 7, 5);
        let (x, xv) = rand([b, t, d], 1);
        let (y, yv) = rand([b, 1, d], 2);
        for rank in [RankWeights::Code, RankWeights::Rank, RankWeights::None] {
            for renormalize in [true, false] {
                let got = prior_weighting(x.clone(), y.clone(), rank, renormalize)
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap();
                assert_eq!(got.len(), b * t * d);
                for i in 0..b {
                    let want = weighting_loop(
                        &xv[i * t * d..(i + 1) * t * d],
                        &yv[i * d..(i + 1) * d],
                        (t, d),
                        rank,
                        renormalize,
                    );
                    for (g, w) in got[i * t * d..(i + 1) * t * d].iter().zip(&want) {
                        assert!((*g as f64 - w).abs() < 1e-5, "{rank:?}: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn renormalised_weighting_ignores_the_prior_and_the_rank_form() {
        // (B + w) · x is a positive multiple of x per token: the normalisation undoes it.
        let dev = default_device();
        let (x, _) = rand([2, 6, 4], 3);
        let (y1, _) = rand([2, 1, 4], 4);
        let (y2, _) = rand([2, 1, 4], 5);
        let plain = {
            let n = x.clone().powi_scalar(2).sum_dim(2).sqrt();
            x.clone() / n
        };
        for (y, rank) in [(y1.clone(), RankWeights::Code), (y2, RankWeights::Rank)] {
            let got = prior_weighting(x.clone(), y, rank, true);
            let diff: f32 = (got - plain.clone()).abs().max().into_scalar();
            assert!(diff < 1e-6, "{rank:?}: {diff}");
        }
        // Without the normalisation the prior and the rank form act. A 3-cycle order, so the
        // code's and the paper's assignments differ: scores 1, 3, 2 for tokens 0, 1, 2.
        let x = Tensor::<B, 3>::from_floats([[[1.0, 0.5], [3.0, 1.0], [2.0, -1.0]]], &dev);
        let y = Tensor::<B, 3>::from_floats([[[1.0, 0.0]]], &dev);
        let a = prior_weighting(x.clone(), y.clone(), RankWeights::Code, false);
        let b = prior_weighting(x, y, RankWeights::Rank, false);
        let diff: f32 = (a - b).abs().max().into_scalar();
        assert!(diff > 0.1, "{diff}");
    }

    #[test]
    fn hook_prepends_the_prior_only_before_the_first_block() {
        let dev = default_device();
        let (x, _) = rand([2, 5, 4], 5);
        let prior = Tensor::<B, 3>::from_data(
            TensorData::new((0..8).map(|v| v as f32).collect::<Vec<_>>(), [2, 1, 4]),
            &dev,
        );
        let mut hook = PriorHook {
            prior: prior.clone(),
            rank: RankWeights::Code,
            renormalize: true,
        };
        let out = hook.before_layer(0, x.clone());
        assert_eq!(out.dims(), [2, 6, 4]);
        let first: Vec<f32> = out.slice([0..2, 0..1, 0..4]).into_data().to_vec().unwrap();
        assert_eq!(first, (0..8).map(|v| v as f32).collect::<Vec<_>>());
        let later = hook.before_layer(1, x.clone());
        let same: f32 = (later - x).abs().max().into_scalar();
        assert_eq!(same, 0.0);
    }

    #[test]
    fn prior_encoder_shapes() {
        let dev = default_device();
        let enc = PriorEncoderConfig::new(12).init::<B>(&dev);
        let px = Tensor::<B, 4>::zeros([3, 3, 32, 32], &dev);
        assert_eq!(enc.forward(px).dims(), [3, 1, 12]);
    }
}
