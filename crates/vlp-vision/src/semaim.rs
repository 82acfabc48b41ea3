//! SemAIM (Song et al., 2023, "Semantic-Aware Autoregressive Image Modeling for Visual
//! Representation Learning"; official code `skyoux/SemAIM`, `models/models_semaim.py`): a ViT
//! trained to predict its image patch by patch in an order π that starts at the image's semantic
//! centre, XLNet-style with two streams.
//!
//! - The content stream is a CLIP-layout [`Vit`] (class token, patches, positions) whose every
//!   block gets the content mask: token i attends j iff π(j) ≤ π(i); the class token attends
//!   only itself and every token attends it (the code's `mask_h` with its padding row/column).
//! - The query stream starts from the position embeddings alone and, after every
//!   `depth / query_depth` content blocks, cross-attends to the content stream's tokens with the
//!   query mask π(j) < π(i) ([`QueryBlock`], the code's `Block_SelfCrossMask` with k = v = h).
//!   A LayerNorm and an MLP head turn each query into its patch's pixels (or a teacher's
//!   feature of the patch, `target_dim`).
//! - Orders ([`Order`]): `attention_center` (the patch whose feature is most similar to the
//!   class token's in a teacher encoder is the centre; π is the grid distance to it plus 1e-3
//!   noise), `center_out` (the same around the grid's centre), `stochastic`, `raster`.
//! - Targets: the image blurred with a Gaussian (kernel 9, σ 1, zero padding), patchified; the
//!   loss is the mean squared error over patch tokens ([`pixel_loss`]).
//!
//! Where this departs from the code: the content stream's position embeddings are CLIP's learned
//! ones (the code freezes 2-D sin-cos ones), so the query stream's starting point is learned too;
//! `center_out` orders by distance to the centre (the code draws a random order inside fixed
//! square rings, sized for a 14 × 14 grid).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Bool, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vlp_core::nn::{
    Activation, Attention, AttentionConfig, AttentionMask, AttentionRecorder, EncoderHook,
    LayerNorm, LayerNormConfig, Mlp, MlpConfig, linear_2d,
};
use vlp_core::rng::Rng;
use vlp_core::{CoreError, Result};

use crate::vit::{Vit, VitConfig, VitLayout};

/// How the prediction order of the patches is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Outwards from the patch a teacher finds most like the class token (SemAIM).
    AttentionCenter,
    /// Outwards from the grid's centre.
    CenterOut,
    /// A uniformly random order (XLNet, the code's `stochastic`).
    Stochastic,
    /// Row by row.
    Raster,
}

/// π over a `grid × grid` patch grid, row-major: patches with smaller values come first.
/// `centre` (a patch index) is used by [`Order::AttentionCenter`] and required there.
pub fn order_values(order: Order, grid: usize, centre: Option<usize>, rng: &mut Rng) -> Vec<f32> {
    let n = grid * grid;
    let around = |r0: f32, c0: f32, rng: &mut Rng| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let (r, c) = ((i / grid) as f32, (i % grid) as f32);
                ((r - r0).powi(2) + (c - c0).powi(2)).sqrt() + rng.unit() * 1e-3
            })
            .collect()
    };
    match order {
        Order::Raster => (0..n).map(|i| i as f32).collect(),
        Order::Stochastic => (0..n).map(|_| rng.unit()).collect(),
        Order::CenterOut => {
            let c = (grid as f32 - 1.0) / 2.0;
            around(c, c, rng)
        }
        Order::AttentionCenter => {
            let k = centre
                .expect("an attention-centre order needs its centre")
                .min(n - 1);
            around((k / grid) as f32, (k % grid) as f32, rng)
        }
    }
}

/// The content and query masks for one order per image, `true` = masked, `[n, 1, L + 1, L + 1]`
/// with the class token first (see the module doc).
pub fn order_masks<B: Backend>(
    orders: &[Vec<f32>],
    device: &B::Device,
) -> (AttentionMask<B>, AttentionMask<B>) {
    let n = orders.len();
    let l = orders.first().map_or(0, Vec::len);
    let t = l + 1;
    let mut content = vec![false; n * t * t];
    let mut query = vec![false; n * t * t];
    for (b, pi) in orders.iter().enumerate() {
        let base = b * t * t;
        for j in 1..t {
            content[base + j] = true;
            query[base + j] = true;
        }
        for i in 1..t {
            for j in 1..t {
                let (a, c) = (pi[i - 1], pi[j - 1]);
                content[base + i * t + j] = a < c;
                query[base + i * t + j] = a <= c;
            }
        }
    }
    let make = |m: Vec<bool>| {
        AttentionMask::new(Tensor::<B, 4, Bool>::from_data(
            TensorData::new(m, [n, 1, t, t]),
            device,
        ))
    };
    (make(content), make(query))
}

/// Configuration of [`SemAim`].
#[derive(Config, Debug)]
pub struct SemAimConfig {
    /// The content stream (a CLIP-layout ViT).
    pub vit: VitConfig,
    /// Query blocks; one after every `num_hidden_layers / query_depth` content blocks.
    #[config(default = 1)]
    pub query_depth: usize,
    /// Side of the Gaussian blur of the targets (odd).
    #[config(default = 9)]
    pub blur_kernel: usize,
    /// Standard deviation of the blur, in pixels.
    #[config(default = 1.0)]
    pub blur_sigma: f64,
    /// Width of each prediction: 0 for a patch's pixels (`patch² · channels`), otherwise the
    /// width of the teacher features predicted instead (the code's `predict_feature`).
    #[config(default = 0)]
    pub target_dim: usize,
}

/// A pre-norm cross-attention block: `g + attn(ln1(g), ln1(h))`, then `+ mlp(ln2(·))`.
#[derive(Module, Debug)]
pub struct QueryBlock<B: Backend> {
    /// Norm of queries and context alike (the code's `norm1`).
    pub norm1: LayerNorm<B>,
    /// Queries from the query stream, keys and values from the content stream.
    pub attn: Attention<B>,
    /// Norm before the MLP.
    pub norm2: LayerNorm<B>,
    /// Feed-forward block.
    pub mlp: Mlp<B>,
}

impl<B: Backend> QueryBlock<B> {
    /// One step of the query stream.
    ///
    /// # Shapes
    /// - `g`: `[batch, tokens, d]`, `h`: `[batch, tokens, d]`
    /// - `mask`: `[batch, 1, tokens, tokens]`, `true` = masked
    pub fn forward(
        &self,
        g: Tensor<B, 3>,
        h: Tensor<B, 3>,
        mask: &AttentionMask<B>,
    ) -> Tensor<B, 3> {
        let g = g.clone()
            + self
                .attn
                .forward_cross(self.norm1.forward(g), self.norm1.forward(h), Some(mask));
        g.clone() + self.mlp.forward(self.norm2.forward(g))
    }
}

/// SemAIM's model: the content-stream encoder (what is kept after pretraining), the query
/// stream and the pixel head.
#[derive(Module, Debug)]
pub struct SemAim<B: Backend> {
    /// The content stream.
    pub encoder: Vit<B>,
    /// The query stream's blocks.
    pub query_blocks: Vec<QueryBlock<B>>,
    /// Norm before the head.
    pub norm: LayerNorm<B>,
    /// Head, first layer (`d → 4d`).
    pub head_fc1: Linear<B>,
    /// Head, second layer (`4d → patch² · channels`, or `target_dim`).
    pub head_fc2: Linear<B>,
}

impl SemAimConfig {
    /// Checks the shape, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        self.vit.validate()?;
        let bad = |field: &str, reason: String| {
            Err(CoreError::Config {
                field: field.into(),
                reason,
            })
        };
        if self.vit.layout != VitLayout::Clip {
            return bad(
                "vit.layout",
                "SemAIM needs a class token (the CLIP layout)".into(),
            );
        }
        if self.query_depth == 0 || !self.vit.num_hidden_layers.is_multiple_of(self.query_depth) {
            return bad(
                "query_depth",
                format!(
                    "{} does not divide the {} content blocks",
                    self.query_depth, self.vit.num_hidden_layers
                ),
            );
        }
        if self.blur_kernel.is_multiple_of(2) || self.blur_sigma <= 0.0 {
            return bad(
                "blur_kernel",
                "must be odd, with a positive blur_sigma".into(),
            );
        }
        Ok(())
    }

    /// Creates the model on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SemAim<B> {
        let v = &self.vit;
        let d = v.hidden_size;
        let ln = || {
            LayerNormConfig::new(d)
                .with_eps(v.layer_norm_eps)
                .init(device)
        };
        let out = match self.target_dim {
            0 => v.patch_size * v.patch_size * v.num_channels,
            d => d,
        };
        SemAim {
            encoder: v.init(device),
            query_blocks: (0..self.query_depth)
                .map(|_| QueryBlock {
                    norm1: ln(),
                    attn: AttentionConfig::new(d, v.num_attention_heads).init(device),
                    norm2: ln(),
                    mlp: MlpConfig::new(d, v.intermediate_size)
                        .with_activation(Activation::Gelu)
                        .init(device),
                })
                .collect(),
            norm: ln(),
            head_fc1: LinearConfig::new(d, v.intermediate_size).init(device),
            head_fc2: LinearConfig::new(v.intermediate_size, out).init(device),
        }
    }
}

/// Gives every content block the content mask and keeps the outputs the query stream reads.
struct ContentStream<B: Backend> {
    mask: AttentionMask<B>,
    every: usize,
    outputs: Vec<Tensor<B, 3>>,
}

impl<B: Backend> EncoderHook<B> for ContentStream<B> {
    fn mask(
        &mut self,
        _layer: usize,
        _default: Option<&AttentionMask<B>>,
    ) -> Option<AttentionMask<B>> {
        Some(self.mask.clone())
    }

    fn after_layer(&mut self, layer: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if (layer + 1).is_multiple_of(self.every) {
            self.outputs.push(x.clone());
        }
        x
    }
}

impl<B: Backend> SemAim<B> {
    /// Predicted pixels of every token (the class token's row first, unused), each patch
    /// predicted from the patches before it in its image's order.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, channels, size, size]`
    /// - `orders`: `batch` orders of `grid²` values ([`order_values`])
    /// - returns: `[batch, grid² + 1, patch² · channels]`
    pub fn predict(&self, pixels: Tensor<B, 4>, orders: &[Vec<f32>]) -> Tensor<B, 3> {
        let device = pixels.device();
        let tokens = self.encoder.embeddings.forward(pixels);
        let [n, t, d] = tokens.dims();
        let (content, query) = order_masks::<B>(orders, &device);
        let every = self.encoder.encoder.layers.len() / self.query_blocks.len().max(1);
        let mut hook = ContentStream {
            mask: content,
            every: every.max(1),
            outputs: Vec::new(),
        };
        self.encoder.forward_tokens_hooked(tokens, false, &mut hook);
        let mut g = self
            .encoder
            .embeddings
            .position_embedding
            .weight
            .val()
            .reshape([1, t, d])
            .expand([n, t, d]);
        for (block, h) in self.query_blocks.iter().zip(hook.outputs) {
            g = block.forward(g, h, &query);
        }
        let g = self.norm.forward(g);
        linear_2d(
            &self.head_fc2,
            burn::tensor::activation::gelu(linear_2d(&self.head_fc1, g)),
        )
    }
}

/// How the attention centre is read from a teacher's forward pass (the code's
/// `attention_type`, `models_semaim.py` `forward_encoder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionType {
    /// Cosine of each patch's final feature with the class token's (`calculate_attention_cls`;
    /// for feature teachers `calculate_similarity`, which the code always uses for them).
    Cls,
    /// Cosine of each patch's final feature with the mean patch feature
    /// (`calculate_attention_gap`).
    Gap,
    /// The last block's attention of the class token over the patches, mean over heads (the
    /// code's `self_attention`).
    #[serde(rename = "self")]
    SelfAttention,
}

/// A teacher's forward pass with what an attention centre is read from.
#[derive(Debug, Clone)]
pub struct TeacherPass<B: Backend> {
    /// Every token normalised as the pooled feature ([`Vit::token_features`]),
    /// `[batch, 1 + patches, hidden]`.
    pub tokens: Tensor<B, 3>,
    /// The last block's class-token attention over the patches, mean over heads,
    /// `[batch, patches]`; only when asked for.
    pub class_attention: Option<Tensor<B, 2>>,
}

/// Runs `teacher` (which must have a class token) on `pixels`, recording the last block's
/// attention when `kind` is [`AttentionType::SelfAttention`].
///
/// # Shapes
/// - `pixels`: `[batch, channels, size, size]`
pub fn teacher_pass<B: Backend>(
    teacher: &Vit<B>,
    pixels: Tensor<B, 4>,
    kind: AttentionType,
) -> TeacherPass<B> {
    if kind != AttentionType::SelfAttention {
        let out = teacher.forward(pixels);
        return TeacherPass {
            tokens: teacher.token_features(&out),
            class_attention: None,
        };
    }
    let last = teacher.encoder.layers.len() - 1;
    let mut rec = AttentionRecorder::new(Some(vec![last]));
    let out = teacher.forward_hooked(pixels, false, &mut rec);
    let (_, w) = rec
        .weights
        .pop()
        .expect("the last block reports its attention");
    let [n, h, t, _] = w.dims();
    // Row 0 (the class token's query), columns 1.. (the patches), mean over heads.
    let cls = w
        .slice([0..n, 0..h, 0..1, 1..t])
        .mean_dim(1)
        .reshape([n, t - 1]);
    TeacherPass {
        tokens: teacher.token_features(&out),
        class_attention: Some(cls),
    }
}

/// Each image's attention centre from a teacher pass: the argmax over the patches of the map
/// `kind` names. `tokens` may be the pass's tokens or their projection (a feature teacher's
/// targets); [`AttentionType::SelfAttention`] needs `class_attention`.
///
/// # Panics
/// If `kind` is [`AttentionType::SelfAttention`] and `class_attention` is `None`.
pub fn centres_of<B: Backend>(
    kind: AttentionType,
    tokens: Tensor<B, 3>,
    class_attention: Option<Tensor<B, 2>>,
) -> Vec<usize> {
    match kind {
        AttentionType::Cls => token_centres(tokens),
        AttentionType::Gap => gap_centres(tokens),
        AttentionType::SelfAttention => argmax_rows(
            class_attention.expect("a self-attention centre needs the class token's attention"),
        ),
    }
}

/// The centre an attention-centre order starts from, per image, read from the teacher's
/// forward pass as `kind` says.
///
/// # Shapes
/// - `pixels`: `[batch, channels, size, size]`
pub fn attention_centres<B: Backend>(
    teacher: &Vit<B>,
    pixels: Tensor<B, 4>,
    kind: AttentionType,
) -> Vec<usize> {
    let pass = teacher_pass(teacher, pixels, kind);
    centres_of(kind, pass.tokens, pass.class_attention)
}

/// The patch whose feature has the highest cosine with the class token's, per image (the code's
/// `calculate_similarity` over a feature teacher's tokens: its min–max scaling keeps the argmax).
///
/// # Shapes
/// - `tokens`: `[batch, 1 + patches, d]`, the class token first
pub fn token_centres<B: Backend>(tokens: Tensor<B, 3>) -> Vec<usize> {
    let x = tokens;
    let [n, t, d] = x.dims();
    let x = x.clone() / (x.powf_scalar(2.0).sum_dim(2).sqrt().clamp_min(1e-12));
    let cls = x.clone().slice([0..n, 0..1, 0..d]);
    let patches = x.slice([0..n, 1..t, 0..d]);
    argmax_rows((patches * cls).sum_dim(2).reshape([n, t - 1]))
}

/// The patch whose feature has the highest cosine with the mean patch feature, per image (the
/// code's `calculate_attention_gap`: the mean of the unnormalised patches, then normalised).
///
/// # Shapes
/// - `tokens`: `[batch, 1 + patches, d]`, the class token first (ignored)
pub fn gap_centres<B: Backend>(tokens: Tensor<B, 3>) -> Vec<usize> {
    let [n, t, d] = tokens.dims();
    let patches = tokens.slice([0..n, 1..t, 0..d]);
    let unit = |x: Tensor<B, 3>| x.clone() / x.powf_scalar(2.0).sum_dim(2).sqrt().clamp_min(1e-12);
    let gap = unit(patches.clone().mean_dim(1));
    argmax_rows((unit(patches) * gap).sum_dim(2).reshape([n, t - 1]))
}

/// Index of each row's largest value.
fn argmax_rows<B: Backend>(x: Tensor<B, 2>) -> Vec<usize> {
    x.argmax(1)
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .expect("indices")
        .into_iter()
        .map(|i| i as usize)
        .collect()
}

/// `images` blurred channel by channel with a normalised `kernel × kernel` Gaussian of standard
/// deviation `sigma`, zero-padded to keep their size (the code's `GaussianConv2d`).
///
/// # Shapes
/// - `images`: `[batch, channels, h, w]`; returns the same
pub fn gaussian_blur<B: Backend>(images: Tensor<B, 4>, kernel: usize, sigma: f64) -> Tensor<B, 4> {
    let [_, c, _, _] = images.dims();
    let mid = (kernel / 2) as f64;
    let mut w: Vec<f32> = (0..kernel * kernel)
        .map(|i| {
            let (y, x) = ((i / kernel) as f64 - mid, (i % kernel) as f64 - mid);
            (-(x * x + y * y) / (2.0 * sigma * sigma)).exp() as f32
        })
        .collect();
    let total: f32 = w.iter().sum();
    w.iter_mut().for_each(|v| *v /= total);
    let weight: Vec<f32> = (0..c).flat_map(|_| w.iter().copied()).collect();
    let weight = Tensor::<B, 4>::from_data(
        TensorData::new(weight, [c, 1, kernel, kernel]),
        &images.device(),
    );
    let pad = kernel / 2;
    conv2d(
        images,
        weight,
        None,
        ConvOptions::new([1, 1], [pad, pad], [1, 1], c),
    )
}

/// Patches of `images`, row-major, each flattened as (row, column, channel).
///
/// # Shapes
/// - `images`: `[batch, channels, size, size]`
/// - returns: `[batch, (size / patch)², patch² · channels]`
pub fn patchify<B: Backend>(images: Tensor<B, 4>, patch: usize) -> Tensor<B, 3> {
    let [n, c, s, _] = images.dims();
    let g = s / patch;
    images
        .reshape([n, c, g, patch, g, patch])
        .permute([0, 2, 4, 3, 5, 1])
        .reshape([n, g * g, patch * patch * c])
}

/// The mean squared error between the patch tokens' predictions and the targets.
///
/// # Shapes
/// - `pred`: `[batch, patches + 1, dim]` (class token first, ignored)
/// - `target`: `[batch, patches, dim]`
/// - returns: `[1]`
pub fn pixel_loss<B: Backend>(pred: Tensor<B, 3>, target: Tensor<B, 3>) -> Tensor<B, 1> {
    let [n, t, d] = pred.dims();
    let p = pred.slice([0..n, 1..t, 0..d]);
    (p - target).powf_scalar(2.0).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn small() -> SemAimConfig {
        SemAimConfig::new(
            VitConfig::new(16, 2, 2, 32)
                .with_image_size(16)
                .with_patch_size(4),
        )
        .with_query_depth(2)
    }

    #[test]
    fn token_centres_pick_the_patch_most_like_the_class_token_whatever_its_length() {
        let dev = default_device();
        // Image 0: patch 2 points the class token's way (at 10 times its length); image 1:
        // patch 0, against a longer patch 1 at 45 degrees.
        let v: Vec<f32> = vec![
            1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 10.0, 0.5, // image 0
            0.0, 2.0, 0.1, 1.0, 3.0, 3.0, -1.0, 0.0, // image 1
        ];
        let tokens = Tensor::<B, 3>::from_data(TensorData::new(v, [2, 4, 2]), &dev);
        assert_eq!(token_centres(tokens), vec![2, 0]);
    }

    #[test]
    fn gap_centres_pick_the_patch_most_like_the_mean_patch() {
        let dev = default_device();
        // Patches (the class token, first, is ignored): the mean of the unnormalised patches of
        // image 0 is (2, 1.5, ...) → patch 1, along it, wins over the longer patch 2; image 1's
        // mean points along y → patch 0, although the class token points along x.
        let v: Vec<f32> = vec![
            9.0, 0.0, 0.0, -1.0, 4.0, 2.0, 2.0, 3.5, // image 0
            1.0, 0.0, 0.1, 2.0, 1.0, 0.5, -1.0, 0.5, // image 1
        ];
        let tokens = Tensor::<B, 3>::from_data(TensorData::new(v, [2, 4, 2]), &dev);
        assert_eq!(gap_centres(tokens), vec![1, 0]);
    }

    /// The class token's last-block attention against softmax(q·kᵀ/√d) written out by hand from
    /// the block's input and its query and key projections, head by head.
    #[test]
    fn self_attention_centre_is_the_class_tokens_last_block_attention() {
        let dev = default_device();
        let cfg = VitConfig::new(16, 2, 2, 32)
            .with_image_size(12)
            .with_patch_size(4);
        let vit = vlp_core::backend::seeded::<B, _>(&dev, 11, || cfg.init::<B>(&dev));
        let mut rng = Rng::new(2);
        let n = 3;
        let pixels: Vec<f32> = (0..n * 3 * 12 * 12).map(|_| rng.range(-1.0, 1.0)).collect();
        let pixels = Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, 3, 12, 12]), &dev);
        let pass = teacher_pass(&vit, pixels.clone(), AttentionType::SelfAttention);
        let got = pass.class_attention.clone().unwrap();
        assert_eq!(got.dims(), [n, 9]);
        let got = got.into_data().to_vec::<f32>().unwrap();

        let hidden = vit
            .forward_with(pixels.clone(), true)
            .hidden_states
            .unwrap();
        let last = &vit.encoder.layers[1];
        let x = last.layer_norm1.forward(hidden[1].clone());
        let attn = &last.self_attn;
        let proj = |l: &Option<Linear<B>>| {
            linear_2d(l.as_ref().expect("separate projections"), x.clone())
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        };
        let (q, k) = (proj(&attn.q_proj), proj(&attn.k_proj));
        let (t, d, heads) = (10, 16, 2);
        let dh = d / heads;
        for img in 0..n {
            let mut mean = vec![0.0f64; t];
            for h in 0..heads {
                let score = |j: usize| -> f64 {
                    (0..dh)
                        .map(|c| {
                            let qi = q[(img * t) * d + h * dh + c] as f64;
                            let kj = k[(img * t + j) * d + h * dh + c] as f64;
                            qi * kj
                        })
                        .sum::<f64>()
                        / (dh as f64).sqrt()
                };
                let s: Vec<f64> = (0..t).map(score).collect();
                let top = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - top).exp()).sum();
                for j in 0..t {
                    mean[j] += (s[j] - top).exp() / z / heads as f64;
                }
            }
            for j in 1..t {
                let e = (got[img * 9 + j - 1] as f64 - mean[j]).abs();
                assert!(e < 1e-5, "image {img}, patch {}: {e}", j - 1);
            }
            let best = (1..t).max_by(|a, b| mean[*a].total_cmp(&mean[*b])).unwrap() - 1;
            let centres = centres_of(
                AttentionType::SelfAttention,
                pass.tokens.clone(),
                pass.class_attention.clone(),
            );
            assert_eq!(centres[img], best);
        }
        // The class and gap kinds read the same tokens and record no attention (recording runs
        // the last block's attention unfused: rounding only, 5e-7 measured).
        let plain = teacher_pass(&vit, pixels, AttentionType::Cls);
        assert!(plain.class_attention.is_none());
        let err: f32 = (plain.tokens - pass.tokens).abs().max().into_scalar();
        assert!(err < 1e-5, "{err}");
    }

    #[test]
    fn later_patches_never_change_earlier_predictions() {
        let dev = default_device();
        let cfg = small();
        cfg.validate().unwrap();
        let m = vlp_core::backend::seeded::<B, _>(&dev, 3, || cfg.init::<B>(&dev));
        let mut rng = Rng::new(5);
        let pixels: Vec<f32> = (0..3 * 16 * 16).map(|_| rng.range(-1.0, 1.0)).collect();
        for order in [Order::Raster, Order::Stochastic, Order::CenterOut] {
            let pi = order_values(order, 4, None, &mut rng);
            let mut ranked: Vec<usize> = (0..16).collect();
            ranked.sort_by(|a, b| pi[*a].total_cmp(&pi[*b]));
            // Change the patch 10th in the order.
            let k = ranked[9];
            let (r, c) = (k / 4, k % 4);
            let mut edited = pixels.clone();
            for ch in 0..3 {
                for y in 0..4 {
                    for x in 0..4 {
                        let i = ch * 256 + (r * 4 + y) * 16 + c * 4 + x;
                        edited[i] += 0.5;
                    }
                }
            }
            let run = |v: Vec<f32>| {
                let x = Tensor::<B, 4>::from_data(TensorData::new(v, [1, 3, 16, 16]), &dev);
                m.predict(x, std::slice::from_ref(&pi))
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap()
            };
            let (a, b) = (run(pixels.clone()), run(edited));
            assert_eq!(a.len(), 17 * 48);
            let row = |v: &[f32], tok: usize| v[tok * 48..(tok + 1) * 48].to_vec();
            // The patches up to and including the edited one are predicted without it.
            for &p in &ranked[..10] {
                assert_eq!(row(&a, p + 1), row(&b, p + 1), "{order:?}: patch {p}");
            }
            // The next one sees it.
            assert!(
                ranked[10..]
                    .iter()
                    .any(|&p| row(&a, p + 1) != row(&b, p + 1))
            );
        }
    }

    #[test]
    fn masks_follow_the_order_and_the_class_token_rules() {
        let dev = default_device();
        let pi = vec![2.0f32, 0.0, 1.0];
        let (c, q) = order_masks::<B>(std::slice::from_ref(&pi), &dev);
        let v = |m: &AttentionMask<B>| m.tensor().clone().into_data().to_vec::<bool>().unwrap();
        // Rows: class, patch 0 (π 2), patch 1 (π 0), patch 2 (π 1); true = masked.
        #[rustfmt::skip]
        let content = vec![
            false, true, true, true,
            false, false, false, false,
            false, true, false, true,
            false, true, false, false,
        ];
        #[rustfmt::skip]
        let query = vec![
            false, true, true, true,
            false, true, false, false,
            false, true, true, true,
            false, true, false, true,
        ];
        assert_eq!(v(&c), content);
        assert_eq!(v(&q), query);
    }

    #[test]
    fn orders_start_where_they_should() {
        let mut rng = Rng::new(1);
        let first = |pi: &[f32]| {
            (0..pi.len())
                .min_by(|a, b| pi[*a].total_cmp(&pi[*b]))
                .unwrap()
        };
        assert_eq!(
            order_values(Order::Raster, 3, None, &mut rng),
            (0..9).map(|i| i as f32).collect::<Vec<_>>()
        );
        assert_eq!(
            first(&order_values(Order::CenterOut, 5, None, &mut rng)),
            12
        );
        let pi = order_values(Order::AttentionCenter, 5, Some(3), &mut rng);
        assert_eq!(first(&pi), 3);
        // Farther from the centre comes later: the corner (4, 0) is last.
        let last = (0..25).max_by(|a, b| pi[*a].total_cmp(&pi[*b])).unwrap();
        assert_eq!(last, 20);
    }

    #[test]
    fn blur_is_a_normalised_gaussian_and_patchify_is_row_major() {
        let dev = default_device();
        // A unit impulse in the middle of a 9 × 9 image blurs into the kernel itself.
        let mut v = vec![0.0f32; 81];
        v[40] = 1.0;
        let x = Tensor::<B, 4>::from_data(TensorData::new(v, [1, 1, 9, 9]), &dev);
        let y = gaussian_blur(x, 9, 1.0)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let sum: f32 = y.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
        let g = |dy: f32, dx: f32| (-(dx * dx + dy * dy) / 2.0).exp();
        let norm: f32 = (0..81)
            .map(|i| g((i / 9) as f32 - 4.0, (i % 9) as f32 - 4.0))
            .sum();
        assert!((y[40] - 1.0 / norm).abs() < 1e-6);
        assert!((y[41] - g(0.0, 1.0) / norm).abs() < 1e-6);
        // Patch 1 of a 4 × 4 two-channel image in patches of 2: columns 2–3 of rows 0–1.
        let img: Vec<f32> = (0..32).map(|i| i as f32).collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(img, [1, 2, 4, 4]), &dev);
        let p = patchify(x, 2).into_data().to_vec::<f32>().unwrap();
        assert_eq!(&p[8..16], &[2.0, 18.0, 3.0, 19.0, 6.0, 22.0, 7.0, 23.0]);
    }
}
