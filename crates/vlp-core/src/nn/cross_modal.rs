//! Layers of cross-modal encoders: a post-norm BERT block, a cross-attention block, the
//! bidirectional cross-modality layer built from them (LXMERT) and the image-grounded text
//! block (BLIP, PTP).
//!
//! These follow BERT's post-norm order (`LayerNorm(x + sublayer(x))`), as LXMERT's code
//! (`lxrt/modeling.py`: `BertLayer`, `BertCrossattLayer`, `LXRTXLayer`) and Hugging Face's
//! `LxmertXLayer` do; the CLIP towers' blocks ([`super::EncoderLayer`]) are pre-norm.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::activation::Activation;
use super::attention::{Attention, AttentionConfig};
use super::mask::AttentionMask;
use super::mlp::{Mlp, MlpConfig};
use super::norm::{LayerNorm, LayerNormConfig};

/// Configuration of the post-norm blocks here ([`PostNormLayer`], [`CrossAttentionLayer`],
/// [`CrossModalityLayer`]).
#[derive(Config, Debug)]
pub struct PostNormConfig {
    /// Residual width (BERT `hidden_size`).
    pub d_model: usize,
    /// Attention heads (BERT `num_attention_heads`).
    pub n_heads: usize,
    /// Feed-forward hidden width (BERT `intermediate_size`).
    pub d_hidden: usize,
    /// Feed-forward non-linearity (BERT `hidden_act`: exact GELU).
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// LayerNorm epsilon (BERT `layer_norm_eps`).
    #[config(default = 1e-12)]
    pub eps: f64,
    /// Dropout on attention probabilities while training (BERT `attention_probs_dropout_prob`).
    #[config(default = 0.0)]
    pub attention_dropout: f64,
}

impl PostNormConfig {
    fn attention<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        AttentionConfig::new(self.d_model, self.n_heads)
            .with_dropout(self.attention_dropout)
            .init(device)
    }

    fn norm<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNormConfig::new(self.d_model)
            .with_eps(self.eps)
            .init(device)
    }

    /// A BERT block (LXMERT's language and object-relationship encoders are stacks of these).
    pub fn init_layer<B: Backend>(&self, device: &B::Device) -> PostNormLayer<B> {
        PostNormLayer {
            self_attn: self.attention(device),
            layer_norm1: self.norm(device),
            mlp: MlpConfig::new(self.d_model, self.d_hidden)
                .with_activation(self.activation)
                .init(device),
            layer_norm2: self.norm(device),
        }
    }

    /// A cross-attention block.
    pub fn init_cross<B: Backend>(&self, device: &B::Device) -> CrossAttentionLayer<B> {
        CrossAttentionLayer {
            attention: self.attention(device),
            layer_norm: self.norm(device),
        }
    }

    /// A BERT block with cross-attention (BLIP's image-grounded text encoder).
    pub fn init_grounded<B: Backend>(&self, device: &B::Device) -> GroundedLayer<B> {
        GroundedLayer {
            layer: self.init_layer(device),
            crossattention: self.init_cross(device),
        }
    }

    /// A bidirectional cross-modality layer.
    pub fn init_cross_modality<B: Backend>(&self, device: &B::Device) -> CrossModalityLayer<B> {
        CrossModalityLayer {
            visual_attention: self.init_cross(device),
            lang: self.init_layer(device),
            visn: self.init_layer(device),
        }
    }
}

/// BERT's block: `x = LN1(x + attn(x))`, then `LN2(x + mlp(x))`.
#[derive(Module, Debug)]
pub struct PostNormLayer<B: Backend> {
    /// Self-attention (BERT `attention.self` with `attention.output.dense` as `out_proj`).
    pub self_attn: Attention<B>,
    /// Norm after the attention residual (BERT `attention.output.LayerNorm`).
    pub layer_norm1: LayerNorm<B>,
    /// Feed-forward block (BERT `intermediate.dense` → `fc1`, `output.dense` → `fc2`).
    pub mlp: Mlp<B>,
    /// Norm after the feed-forward residual (BERT `output.LayerNorm`).
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> PostNormLayer<B> {
    /// Self-attention, then feed-forward.
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, d_model]`
    /// - `mask`: broadcastable to `[batch, heads, tokens, tokens]`, `true` = masked out
    /// - returns: `[batch, tokens, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<&AttentionMask<B>>) -> Tensor<B, 3> {
        let x = self.attend(x, mask);
        self.feed_forward(x)
    }

    /// The attention half: `LN1(x + attn(x))`.
    fn attend(&self, x: Tensor<B, 3>, mask: Option<&AttentionMask<B>>) -> Tensor<B, 3> {
        self.layer_norm1
            .forward(x.clone() + self.self_attn.forward(x, mask))
    }

    /// The feed-forward half: `LN2(x + mlp(x))`.
    fn feed_forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.layer_norm2.forward(x.clone() + self.mlp.forward(x))
    }
}

/// Cross-attention with a post-norm residual: `LN(x + attn(q = x, kv = context))` (LXMERT's
/// `BertCrossattLayer`).
#[derive(Module, Debug)]
pub struct CrossAttentionLayer<B: Backend> {
    /// The attention (LXMERT `att`, with `output.dense` as its `out_proj`).
    pub attention: Attention<B>,
    /// Norm after the residual (LXMERT `output.LayerNorm`).
    pub layer_norm: LayerNorm<B>,
}

impl<B: Backend> CrossAttentionLayer<B> {
    /// `x` attends to `context`.
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, d_model]`
    /// - `context`: `[batch, context_tokens, d_model]`
    /// - `context_mask`: broadcastable to `[batch, heads, tokens, context_tokens]` (a key-padding
    ///   mask of the context)
    /// - returns: `[batch, tokens, d_model]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Tensor<B, 3>,
        context_mask: Option<&AttentionMask<B>>,
    ) -> Tensor<B, 3> {
        self.layer_norm
            .forward(x.clone() + self.attention.forward_cross(x, context, context_mask))
    }
}

/// BLIP's image-grounded text block (BERT with cross-attention, `BertLayer` of BLIP's
/// `models/med.py` with `add_cross_attention`): self-attention, cross-attention to the context,
/// feed-forward, each with a post-norm residual.
#[derive(Module, Debug)]
pub struct GroundedLayer<B: Backend> {
    /// Self-attention and feed-forward (BLIP `attention`, `intermediate`, `output`).
    pub layer: PostNormLayer<B>,
    /// Cross-attention between them (BLIP `crossattention`).
    pub crossattention: CrossAttentionLayer<B>,
}

impl<B: Backend> GroundedLayer<B> {
    /// `x` attends to itself, then to `context`, then the feed-forward block.
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, d_model]`; `mask`: broadcastable to `[batch, heads, tokens, tokens]`
    /// - `context`: `[batch, context_tokens, d_model]`; `context_mask`: broadcastable to
    ///   `[batch, heads, tokens, context_tokens]`
    /// - returns: `[batch, tokens, d_model]`
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        mask: Option<&AttentionMask<B>>,
        context: Tensor<B, 3>,
        context_mask: Option<&AttentionMask<B>>,
    ) -> Tensor<B, 3> {
        let x = self.layer.attend(x, mask);
        let x = self.crossattention.forward(x, context, context_mask);
        self.layer.feed_forward(x)
    }
}

/// LXMERT's cross-modality layer: each stream attends to the other through **one shared**
/// cross-attention block (as `LXRTXLayer.visual_attention` is used both ways in the code), then
/// attends to itself, then a feed-forward block, each stream with its own weights.
#[derive(Module, Debug)]
pub struct CrossModalityLayer<B: Backend> {
    /// The cross-attention both streams use (LXMERT `visual_attention`).
    pub visual_attention: CrossAttentionLayer<B>,
    /// The language stream's self-attention and feed-forward (LXMERT `lang_self_att`,
    /// `lang_inter`, `lang_output`).
    pub lang: PostNormLayer<B>,
    /// The vision stream's (LXMERT `visn_self_att`, `visn_inter`, `visn_output`).
    pub visn: PostNormLayer<B>,
}

impl<B: Backend> CrossModalityLayer<B> {
    /// One layer over both streams; both cross-attentions read the *input* of the other stream.
    ///
    /// # Shapes
    /// - `lang`: `[batch, words, d_model]`; `lang_mask`: key padding of the words,
    ///   broadcastable to `[batch, heads, *, words]`
    /// - `visn`: `[batch, objects, d_model]`; `visn_mask`: likewise for the objects
    /// - returns: the two streams, shapes unchanged
    pub fn forward(
        &self,
        lang: Tensor<B, 3>,
        lang_mask: Option<&AttentionMask<B>>,
        visn: Tensor<B, 3>,
        visn_mask: Option<&AttentionMask<B>>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let l = self
            .visual_attention
            .forward(lang.clone(), visn.clone(), visn_mask);
        let v = self.visual_attention.forward(visn, lang, lang_mask);
        let l = self.lang.forward(l, lang_mask);
        let v = self.visn.forward(v, visn_mask);
        (l, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, default_device};
    use burn::nn::Linear;
    use burn::tensor::{Distribution, Int, TensorData};

    fn data<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// `rows × d_in` times Burn's `[d_in, d_out]` weight plus bias.
    fn affine(l: &Linear<B>, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let w = data(l.weight.val());
        let b = data(l.bias.as_ref().unwrap().val());
        let d_out = b.len();
        let d_in = w.len() / d_out;
        x.iter()
            .map(|r| {
                (0..d_out)
                    .map(|o| {
                        b[o] as f64
                            + (0..d_in)
                                .map(|i| r[i] * w[i * d_out + o] as f64)
                                .sum::<f64>()
                    })
                    .collect()
            })
            .collect()
    }

    fn layer_norm(n: &LayerNorm<B>, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let (g, b) = (data(n.weight.val()), data(n.bias.val()));
        x.iter()
            .map(|r| {
                let m = r.iter().sum::<f64>() / r.len() as f64;
                let v = r.iter().map(|a| (a - m).powi(2)).sum::<f64>() / r.len() as f64;
                r.iter()
                    .enumerate()
                    .map(|(i, a)| (a - m) / (v + n.eps).sqrt() * g[i] as f64 + b[i] as f64)
                    .collect()
            })
            .collect()
    }

    fn add(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p + q).collect())
            .collect()
    }

    /// One sample's attention of `xq` over the keys `xkv[j]` with `keep[j]`, as loops.
    fn attention(
        a: &Attention<B>,
        xq: &[Vec<f64>],
        xkv: &[Vec<f64>],
        keep: &[bool],
    ) -> Vec<Vec<f64>> {
        let (q, k, v) = (
            affine(a.q_proj.as_ref().unwrap(), xq),
            affine(a.k_proj.as_ref().unwrap(), xkv),
            affine(a.v_proj.as_ref().unwrap(), xkv),
        );
        let d = q[0].len();
        let dh = d / a.n_heads;
        let mut ctx = vec![vec![0.0; d]; xq.len()];
        for h in 0..a.n_heads {
            let cols = h * dh..(h + 1) * dh;
            for (i, qi) in q.iter().enumerate() {
                let s: Vec<f64> = (0..k.len())
                    .map(|j| {
                        if keep[j] {
                            cols.clone().map(|c| qi[c] * k[j][c]).sum::<f64>() / (dh as f64).sqrt()
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for (j, sj) in s.iter().enumerate() {
                    let p = (sj - m).exp() / z;
                    for c in cols.clone() {
                        ctx[i][c] += p * v[j][c];
                    }
                }
            }
        }
        affine(&a.out_proj, &ctx)
    }

    /// Exact GELU, `x Φ(x)`.
    fn gelu(x: f64) -> f64 {
        x * 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
    }

    /// erf by its Maclaurin series, ±1 beyond |x| = 4 (where it is within 2e-8 of that).
    fn erf(x: f64) -> f64 {
        if x.abs() > 4.0 {
            return x.signum();
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn post_norm(l: &PostNormLayer<B>, x: &[Vec<f64>], keep: &[bool]) -> Vec<Vec<f64>> {
        let x = layer_norm(
            &l.layer_norm1,
            &add(x, &attention(&l.self_attn, x, x, keep)),
        );
        let h: Vec<Vec<f64>> = affine(&l.mlp.fc1, &x)
            .into_iter()
            .map(|r| r.into_iter().map(gelu).collect())
            .collect();
        layer_norm(&l.layer_norm2, &add(&x, &affine(&l.mlp.fc2, &h)))
    }

    fn rows(t: &Tensor<B, 3>, b: usize, n: usize) -> Vec<Vec<f64>> {
        let d = t.dims()[2];
        let all = data(t.clone());
        (0..n)
            .map(|i| {
                (0..d)
                    .map(|c| all[(b * t.dims()[1] + i) * d + c] as f64)
                    .collect()
            })
            .collect()
    }

    fn max_err(t: &Tensor<B, 3>, b: usize, want: &[Vec<f64>]) -> f64 {
        let got = rows(t, b, want.len());
        got.iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(a, w)| (a - w).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn cross_modality_layer_matches_loops_with_padding_on_both_sides() {
        let dev = default_device();
        // Odd sizes: 3 heads of width 4, 5 words and 4 objects, the second sample padded to
        // 2 words and 3 objects.
        let cfg = PostNormConfig::new(12, 3, 20).with_eps(1e-5);
        let layer = cfg.init_cross_modality::<B>(&dev);
        let (words, objects) = (5, 4);
        let lang = Tensor::<B, 3>::random([2, words, 12], Distribution::Normal(0.0, 1.0), &dev);
        let visn = Tensor::<B, 3>::random([2, objects, 12], Distribution::Normal(0.0, 1.0), &dev);
        let lens = [(words, objects), (2, 3)];
        let am = |n: usize, which: fn(&(usize, usize)) -> usize| {
            AttentionMask::from_attention_mask(Tensor::<B, 2, Int>::from_data(
                TensorData::new(
                    (0..2 * n)
                        .map(|i| (i % n < which(&lens[i / n])) as i64)
                        .collect::<Vec<_>>(),
                    [2, n],
                ),
                &dev,
            ))
        };
        let (lm, vm) = (am(words, |l| l.0), am(objects, |l| l.1));
        let (l_out, v_out) = layer.forward(lang.clone(), Some(&lm), visn.clone(), Some(&vm));
        assert_eq!(l_out.dims(), [2, words, 12]);
        assert_eq!(v_out.dims(), [2, objects, 12]);
        for (b, &(nl, nv)) in lens.iter().enumerate() {
            // Only the real tokens, in and out: padding must not reach them.
            let (l, v) = (rows(&lang, b, nl), rows(&visn, b, nv));
            let ca = &layer.visual_attention;
            let cross = |x: &[Vec<f64>], ctx: &[Vec<f64>]| {
                layer_norm(
                    &ca.layer_norm,
                    &add(x, &attention(&ca.attention, x, ctx, &vec![true; ctx.len()])),
                )
            };
            let want_l = post_norm(&layer.lang, &cross(&l, &v), &vec![true; nl]);
            let want_v = post_norm(&layer.visn, &cross(&v, &l), &vec![true; nv]);
            let (el, ev) = (max_err(&l_out, b, &want_l), max_err(&v_out, b, &want_v));
            assert!(
                el < 2e-5 && ev < 2e-5,
                "sample {b}: language error {el}, vision error {ev}"
            );
        }
    }

    #[test]
    fn cross_attention_layer_ignores_masked_context() {
        let dev = default_device();
        let layer = PostNormConfig::new(8, 2, 16).init_cross::<B>(&dev);
        let x = Tensor::<B, 3>::random([1, 3, 8], Distribution::Normal(0.0, 1.0), &dev);
        let ctx = Tensor::<B, 3>::random([1, 4, 8], Distribution::Normal(0.0, 1.0), &dev);
        let short = layer.forward(x.clone(), ctx.clone().slice([0..1, 0..2, 0..8]), None);
        // Two more context tokens, masked, with wild values.
        let junk = Tensor::<B, 3>::random([1, 2, 8], Distribution::Normal(0.0, 100.0), &dev);
        let padded = Tensor::cat(vec![ctx.slice([0..1, 0..2, 0..8]), junk], 1);
        let mask = AttentionMask::from_attention_mask(Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![1i64, 1, 0, 0], [1, 4]),
            &dev,
        ));
        let long = layer.forward(x, padded, Some(&mask));
        let err = data(short)
            .iter()
            .zip(data(long))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-5, "masked context changed the output by {err}");
    }

    #[test]
    fn grounded_layer_matches_loops_with_padded_text() {
        let dev = default_device();
        // 3 heads of width 4, 5 words (the second sample padded to 3) over 7 image tokens.
        let layer = PostNormConfig::new(12, 3, 20)
            .with_eps(1e-5)
            .init_grounded::<B>(&dev);
        let (words, image) = (5, 7);
        let text = Tensor::<B, 3>::random([2, words, 12], Distribution::Normal(0.0, 1.0), &dev);
        let ctx = Tensor::<B, 3>::random([2, image, 12], Distribution::Normal(0.0, 1.0), &dev);
        let lens = [words, 3];
        let mask = AttentionMask::from_attention_mask(Tensor::<B, 2, Int>::from_data(
            TensorData::new(
                (0..2 * words)
                    .map(|i| (i % words < lens[i / words]) as i64)
                    .collect::<Vec<_>>(),
                [2, words],
            ),
            &dev,
        ));
        let out = layer.forward(text.clone(), Some(&mask), ctx.clone(), None);
        assert_eq!(out.dims(), [2, words, 12]);
        for (b, &n) in lens.iter().enumerate() {
            let (x, c) = (rows(&text, b, n), rows(&ctx, b, image));
            let l = &layer.layer;
            let h = layer_norm(
                &l.layer_norm1,
                &add(&x, &attention(&l.self_attn, &x, &x, &vec![true; n])),
            );
            let ca = &layer.crossattention;
            let h = layer_norm(
                &ca.layer_norm,
                &add(&h, &attention(&ca.attention, &h, &c, &vec![true; image])),
            );
            let f: Vec<Vec<f64>> = affine(&l.mlp.fc1, &h)
                .into_iter()
                .map(|r| r.into_iter().map(gelu).collect())
                .collect();
            let want = layer_norm(&l.layer_norm2, &add(&h, &affine(&l.mlp.fc2, &f)));
            let err = max_err(&out, b, &want);
            assert!(err < 2e-5, "sample {b}: error {err}");
        }
    }
}
