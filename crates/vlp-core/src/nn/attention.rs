//! Multi-head attention in the two layouts CLIP checkpoints use.
//!
//! Hugging Face stores separate `q_proj`/`k_proj`/`v_proj` projections; open_clip (and PyTorch's
//! `nn.MultiheadAttention`, used by SigLIP's pooling head) stores one fused `in_proj` with q, k and
//! v stacked. Both are supported by one module so that a checkpoint loads into the layout it was
//! saved in, without splitting or concatenating weights.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

use super::lora::{Lora, LoraConfig};
use super::mask::AttentionMask;
use super::mlp::linear_2d;

/// Configuration of an [`Attention`] layer.
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Width of queries, keys, values and output (HF `hidden_size`, open_clip `width`).
    pub d_model: usize,
    /// Number of heads; must divide `d_model` (HF `num_attention_heads`).
    pub n_heads: usize,
    /// One fused `in_proj` (open_clip, `nn.MultiheadAttention`) instead of `q_proj`/`k_proj`/`v_proj` (HF).
    #[config(default = false)]
    pub fused_qkv: bool,
    /// Whether the projections carry biases (they do in every CLIP-family checkpoint).
    #[config(default = true)]
    pub bias: bool,
    /// Dropout on the attention probabilities while training (HF `attention_dropout`).
    #[config(default = 0.0)]
    pub dropout: f64,
}

/// Multi-head scaled dot-product attention with PyTorch-named projections.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection (separate layout).
    pub q_proj: Option<Linear<B>>,
    /// Key projection (separate layout).
    pub k_proj: Option<Linear<B>>,
    /// Value projection (separate layout).
    pub v_proj: Option<Linear<B>>,
    /// Fused q/k/v projection, `d_model → 3·d_model` (fused layout).
    pub in_proj: Option<Linear<B>>,
    /// Output projection.
    pub out_proj: Linear<B>,
    /// Dropout on attention probabilities.
    pub dropout: Dropout,
    /// Number of heads.
    pub n_heads: usize,
    /// Low-rank updates of the query and value projections, when adapted
    /// ([`Attention::add_lora`]); absent from every checkpoint layout.
    pub lora: Option<AttentionLora<B>>,
}

/// LoRA updates of an attention layer's query and value projections.
#[derive(Module, Debug)]
pub struct AttentionLora<B: Backend> {
    /// Added to the query projection.
    pub q: Lora<B>,
    /// Added to the value projection.
    pub v: Lora<B>,
}

/// What [`Attention::forward_with_weights`] returns.
#[derive(Debug, Clone)]
pub struct AttentionOutput<B: Backend> {
    /// Attended values after the output projection, `[batch, queries, d_model]`.
    pub context: Tensor<B, 3>,
    /// Attention probabilities, `[batch, heads, queries, keys]`.
    pub weights: Tensor<B, 4>,
}

impl AttentionConfig {
    /// Creates the layer on `device`.
    ///
    /// # Panics
    /// If `n_heads` does not divide `d_model` (a programming error in a preset; configs read
    /// from files are validated before they get here).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        assert!(
            self.n_heads > 0 && self.d_model.is_multiple_of(self.n_heads),
            "attention: {} heads do not divide width {}",
            self.n_heads,
            self.d_model
        );
        let lin = |o: usize| {
            LinearConfig::new(self.d_model, o)
                .with_bias(self.bias)
                .init(device)
        };
        let (q, k, v, fused) = if self.fused_qkv {
            (None, None, None, Some(lin(3 * self.d_model)))
        } else {
            (
                Some(lin(self.d_model)),
                Some(lin(self.d_model)),
                Some(lin(self.d_model)),
                None,
            )
        };
        Attention {
            q_proj: q,
            k_proj: k,
            v_proj: v,
            in_proj: fused,
            out_proj: lin(self.d_model),
            dropout: DropoutConfig::new(self.dropout).init(),
            n_heads: self.n_heads,
            lora: None,
        }
    }
}

impl<B: Backend> Attention<B> {
    /// Width of the layer.
    pub fn d_model(&self) -> usize {
        self.out_proj.weight.lazy_shape().dims::<2>()[1]
    }

    /// Self-attention.
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, d_model]`
    /// - `mask`: broadcastable to `[batch, heads, tokens, tokens]`, `true` = masked out
    /// - returns: `[batch, tokens, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<&AttentionMask<B>>) -> Tensor<B, 3> {
        let (q, k, v) = self.project_self(x);
        self.attend(q, k, v, mask, false).0
    }

    /// Self-attention that also returns the attention probabilities (GradCAM, dense features).
    pub fn forward_with_weights(
        &self,
        x: Tensor<B, 3>,
        mask: Option<&AttentionMask<B>>,
    ) -> AttentionOutput<B> {
        let (q, k, v) = self.project_self(x);
        let (context, weights) = self.attend(q, k, v, mask, true);
        AttentionOutput {
            context,
            weights: weights.expect("weights were requested"),
        }
    }

    /// Cross-attention: `queries` attend to `context` (e.g. SigLIP's pooling probe).
    ///
    /// # Shapes
    /// - `queries`: `[batch, q_tokens, d_model]`
    /// - `context`: `[batch, kv_tokens, d_model]`
    /// - `mask`: broadcastable to `[batch, heads, q_tokens, kv_tokens]`
    /// - returns: `[batch, q_tokens, d_model]`
    pub fn forward_cross(
        &self,
        queries: Tensor<B, 3>,
        context: Tensor<B, 3>,
        mask: Option<&AttentionMask<B>>,
    ) -> Tensor<B, 3> {
        let q = self.project(queries, 0);
        let k = self.project(context.clone(), 1);
        let v = self.project(context, 2);
        self.attend(q, k, v, mask, false).0
    }

    /// Causal self-attention over `x`, the tokens that follow those already in `cache`: their
    /// keys and values are appended to the cache, and new token `i` (position `cache.len() + i`)
    /// attends to every cached token and to new tokens up to itself. Feeding a sequence in pieces
    /// gives what [`forward`](Self::forward) with a causal mask gives for the whole (the
    /// autoregressive inference of Burn's `TransformerDecoder`, with only the new tokens passed).
    ///
    /// # Shapes
    /// - `x`: `[batch, new_tokens, d_model]`; `batch` must match the cache's
    /// - returns: `[batch, new_tokens, d_model]`
    pub fn forward_autoregressive(&self, x: Tensor<B, 3>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let n = x.dims()[1];
        let past = cache.len();
        let (q, k, v) = self.project_self(x);
        let (k, v) = match (cache.keys.take(), cache.values.take()) {
            (Some(pk), Some(pv)) => (Tensor::cat(vec![pk, k], 1), Tensor::cat(vec![pv, v], 1)),
            _ => (k, v),
        };
        cache.keys = Some(k.clone());
        cache.values = Some(v.clone());
        // One new token sees everything: no mask at all (the common decoding step).
        let mask = (n > 1).then(|| {
            let total = past + n;
            let hidden: Vec<bool> = (0..n)
                .flat_map(|i| (0..total).map(move |j| j > past + i))
                .collect();
            AttentionMask::new(Tensor::<B, 4, Bool>::from_data(
                TensorData::new(hidden, [1, 1, n, total]),
                &q.device(),
            ))
        });
        self.attend(q, k, v, mask.as_ref(), false).0
    }

    /// [`forward_cross`](Self::forward_cross) that projects `context` into keys and values once,
    /// on the first call with an empty `cache`, and reuses them afterwards (a decoder's
    /// cross-attention while it generates).
    ///
    /// # Shapes
    /// - `queries`: `[batch, q_tokens, d_model]`
    /// - `context`: `[batch, kv_tokens, d_model]` (read only when the cache is empty)
    /// - `mask`: broadcastable to `[batch, heads, q_tokens, kv_tokens]`
    /// - returns: `[batch, q_tokens, d_model]`
    pub fn forward_cross_cached(
        &self,
        queries: Tensor<B, 3>,
        context: &Tensor<B, 3>,
        mask: Option<&AttentionMask<B>>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        let (k, v) = match (&cache.keys, &cache.values) {
            (Some(k), Some(v)) => (k.clone(), v.clone()),
            _ => {
                let k = self.project(context.clone(), 1);
                let v = self.project(context.clone(), 2);
                cache.keys = Some(k.clone());
                cache.values = Some(v.clone());
                (k, v)
            }
        };
        let q = self.project(queries, 0);
        self.attend(q, k, v, mask, false).0
    }

    /// Adds zero-initialised LoRA updates to the query and value projections (replacing any
    /// present). Only the adapters train once [`crate::nn::lora::train_only_lora`] freezes the
    /// rest.
    pub fn add_lora(mut self, config: &LoraConfig, device: &B::Device) -> Self {
        let d = self.d_model();
        self.lora = Some(AttentionLora {
            q: config.init(d, d, device),
            v: config.init(d, d, device),
        });
        self
    }

    /// Folds `weight` times the LoRA updates into the projection weights and drops the
    /// adapters: `weight` 1 gives the adapted layer as plain weights, `weight` λ the average
    /// `(1 − λ)·θ₀ + λ·θ` of the original and the adapted layer. No-op without adapters.
    pub fn merge_lora(mut self, weight: f64) -> Self {
        let Some(lora) = self.lora.take() else {
            return self;
        };
        let dq = lora.q.delta().detach() * weight;
        let dv = lora.v.delta().detach() * weight;
        let add = |p: Param<Tensor<B, 2>>, delta: Tensor<B, 2>| p.map(|w| w + delta);
        match self.in_proj.take() {
            Some(mut fused) => {
                // Burn stores `[d_in, d_out]`: q, k, v are column blocks of the fused weight.
                let dk = dq.zeros_like();
                fused.weight = add(fused.weight, Tensor::cat(vec![dq, dk, dv], 1));
                self.in_proj = Some(fused);
            }
            None => {
                let (mut q, mut v) = (
                    self.q_proj
                        .take()
                        .expect("attention has either q/k/v or in_proj"),
                    self.v_proj
                        .take()
                        .expect("attention has either q/k/v or in_proj"),
                );
                q.weight = add(q.weight, dq);
                v.weight = add(v.weight, dv);
                self.q_proj = Some(q);
                self.v_proj = Some(v);
            }
        }
        self
    }

    /// Adds the LoRA update of projection `which` (0 = q, 2 = v) of input `x` to `out`.
    fn adapted(&self, out: Tensor<B, 3>, x: Tensor<B, 3>, which: usize) -> Tensor<B, 3> {
        match (&self.lora, which) {
            (Some(l), 0) => out + l.q.forward(x),
            (Some(l), 2) => out + l.v.forward(x),
            _ => out,
        }
    }

    /// q, k, v for self-attention: one matmul in the fused layout.
    fn project_self(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
        if self.lora.is_some() {
            let (q, k, v) = self.project_self_plain(x.clone());
            return (self.adapted(q, x.clone(), 0), k, self.adapted(v, x, 2));
        }
        self.project_self_plain(x)
    }

    fn project_self_plain(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
        match &self.in_proj {
            Some(in_proj) => {
                let d = self.d_model();
                let qkv = linear_2d(in_proj, x);
                let [b, l, _] = qkv.dims();
                let q = qkv.clone().slice([0..b, 0..l, 0..d]);
                let k = qkv.clone().slice([0..b, 0..l, d..2 * d]);
                let v = qkv.slice([0..b, 0..l, 2 * d..3 * d]);
                (q, k, v)
            }
            None => (
                self.project_plain(x.clone(), 0),
                self.project_plain(x.clone(), 1),
                self.project_plain(x, 2),
            ),
        }
    }

    /// Projection `which` (0 = q, 1 = k, 2 = v) of `x`.
    ///
    /// In the fused layout the whole `in_proj` runs and the wanted third of its output is kept:
    /// slicing the weight instead gives a strided matrix, which CubeCL's matmul on wgpu
    /// multiplied wrongly (found by the SigLIP parity test on lavapipe).
    fn project(&self, x: Tensor<B, 3>, which: usize) -> Tensor<B, 3> {
        if self.lora.is_some() {
            return self.adapted(self.project_plain(x.clone(), which), x, which);
        }
        self.project_plain(x, which)
    }

    fn project_plain(&self, x: Tensor<B, 3>, which: usize) -> Tensor<B, 3> {
        let separate = [&self.q_proj, &self.k_proj, &self.v_proj][which];
        if let Some(p) = separate {
            return linear_2d(p, x);
        }
        let fused = self
            .in_proj
            .as_ref()
            .expect("attention has either q/k/v or in_proj");
        let d = self.d_model();
        let all = linear_2d(fused, x);
        let [b, l, _] = all.dims();
        all.slice([0..b, 0..l, which * d..(which + 1) * d])
    }

    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, l, d] = x.dims();
        x.reshape([b, l, self.n_heads, d / self.n_heads])
            .swap_dims(1, 2)
    }

    /// Scaled dot-product attention over projected q, k, v; returns the projected output and,
    /// when asked, the probabilities.
    fn attend(
        &self,
        q: Tensor<B, 3>,
        k: Tensor<B, 3>,
        v: Tensor<B, 3>,
        mask: Option<&AttentionMask<B>>,
        need_weights: bool,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 4>>) {
        let [b, lq, d] = q.dims();
        let lk = k.dims()[1];
        let h = self.n_heads;
        let scale = 1.0 / ((d / h) as f64).sqrt();

        // A query whose every key is masked gets a zero output (PyTorch's "safe softmax", also
        // what Burn's fallback does). Those rows are unmasked for the softmax, so no backend can
        // produce NaN from an all -inf row, and zeroed afterwards.
        let (mask, dead_rows) = match mask {
            Some(m) => {
                let full = m.expand([b, 1, lq, lk]);
                let dead: Tensor<B, 4, Bool> = full.clone().all_dim(3); // [b, 1, lq, 1]
                let live_mask = full.bool_and(dead.clone().bool_not().expand([b, 1, lq, lk]));
                // `[b, 1, lq, lk]`: one mask for every head (expanded where it is used).
                (Some(live_mask), Some(dead))
            }
            None => (None, None),
        };

        let training_dropout = self.dropout.prob > 0.0 && B::ad_enabled(&q.device());
        let (ctx, weights) = if need_weights || training_dropout {
            let (q, k, v) = (
                self.split_heads(q),
                self.split_heads(k),
                self.split_heads(v),
            );
            let scores = q.matmul(k.swap_dims(2, 3)) * scale;
            let scores = match &mask {
                Some(m) => scores.mask_fill(m.clone().expand([b, h, lq, lk]), f32::NEG_INFINITY),
                None => scores,
            };
            let probs = softmax(scores, 3);
            let ctx = self.dropout.forward(probs.clone()).matmul(v);
            let ctx = ctx.swap_dims(1, 2).reshape([b, lq, d]);
            (ctx, need_weights.then_some(probs))
        } else {
            // Burn's fused attention, or on the CPU training backend a kernel with its own
            // backward that reads the heads in place (`vlp_kernels::attention`).
            (vlp_kernels::attention(q, k, v, h, mask, scale), None)
        };

        let (ctx, weights) = match dead_rows {
            Some(dead) => {
                let dead3 = dead.clone().reshape([b, lq, 1]);
                let ctx = ctx.mask_fill(dead3.expand([b, lq, d]), 0.0);
                let weights = weights.map(|w| w.mask_fill(dead.expand([b, h, lq, lk]), 0.0));
                (ctx, weights)
            }
            None => (ctx, weights),
        };
        // The output projection's bias is added even to dead rows, as in PyTorch.
        (linear_2d(&self.out_proj, ctx), weights)
    }
}

/// Projected keys and values of the tokens an [`Attention`] layer has seen, for incremental
/// decoding ([`Attention::forward_autoregressive`], [`Attention::forward_cross_cached`]).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// `[batch, tokens, d_model]`, `None` before the first step.
    pub keys: Option<Tensor<B, 3>>,
    /// `[batch, tokens, d_model]`, `None` before the first step.
    pub values: Option<Tensor<B, 3>>,
}

impl<B: Backend> Default for KvCache<B> {
    fn default() -> Self {
        Self {
            keys: None,
            values: None,
        }
    }
}

impl<B: Backend> KvCache<B> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.dims()[1])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the batch rows `rows`, in that order (repeats allowed): a beam search that
    /// reorders or duplicates its hypotheses reorders their caches with it.
    ///
    /// # Shapes
    /// - `rows`: `[new_batch]`, indices into the cached batch
    pub fn select(&mut self, rows: Tensor<B, 1, Int>) {
        self.keys = self.keys.take().map(|k| k.select(0, rows.clone()));
        self.values = self.values.take().map(|v| v.select(0, rows));
    }
}

#[cfg(test)]
mod tests {
    crate::backend_tests! {
    use super::super::*;
    use burn::module::AutodiffModule;
    use burn::module::Param;
    use burn::tensor::{Distribution, Int, TensorData, Tolerance};

    fn data<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// Row-major `x @ w + b`, `w` in Burn's `[in, out]` layout.
    fn affine(x: &[f32], rows: usize, w: &[f32], b: &[f32], d_in: usize, d_out: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows * d_out];
        for r in 0..rows {
            for o in 0..d_out {
                out[r * d_out + o] = b[o]
                    + (0..d_in)
                        .map(|i| x[r * d_in + i] * w[i * d_out + o])
                        .sum::<f32>();
            }
        }
        out
    }

    fn lin(l: &Linear<B>) -> (Vec<f32>, Vec<f32>) {
        (data(l.weight.val()), data(l.bias.as_ref().unwrap().val()))
    }

    /// Attention written as loops over batch, head, query and key. `masked(b, i, j)` says whether
    /// query `i` of batch `b` may not see key `j`; fully masked rows give zeros before `out_proj`.
    fn naive(
        attn: &Attention<B>,
        xq: &[f32],
        xkv: &[f32],
        (bsz, lq, lk): (usize, usize, usize),
        masked: &dyn Fn(usize, usize, usize) -> bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let d = attn.d_model();
        let h = attn.n_heads;
        let dh = d / h;
        let (wq, bq, wk, bk, wv, bv) = match &attn.in_proj {
            Some(f) => {
                let (w, b) = lin(f);
                let cols = |c: usize| -> Vec<f32> {
                    (0..d)
                        .flat_map(|i| w[i * 3 * d + c * d..i * 3 * d + (c + 1) * d].to_vec())
                        .collect()
                };
                (
                    cols(0),
                    b[..d].to_vec(),
                    cols(1),
                    b[d..2 * d].to_vec(),
                    cols(2),
                    b[2 * d..].to_vec(),
                )
            }
            None => {
                let (wq, bq) = lin(attn.q_proj.as_ref().unwrap());
                let (wk, bk) = lin(attn.k_proj.as_ref().unwrap());
                let (wv, bv) = lin(attn.v_proj.as_ref().unwrap());
                (wq, bq, wk, bk, wv, bv)
            }
        };
        let q = affine(xq, bsz * lq, &wq, &bq, d, d);
        let k = affine(xkv, bsz * lk, &wk, &bk, d, d);
        let v = affine(xkv, bsz * lk, &wv, &bv, d, d);
        let mut ctx = vec![0.0f32; bsz * lq * d];
        let mut probs = vec![0.0f32; bsz * h * lq * lk];
        for b in 0..bsz {
            for hh in 0..h {
                for i in 0..lq {
                    let allowed: Vec<usize> = (0..lk).filter(|&j| !masked(b, i, j)).collect();
                    if allowed.is_empty() {
                        continue;
                    }
                    let s: Vec<f64> = allowed
                        .iter()
                        .map(|&j| {
                            (0..dh)
                                .map(|c| {
                                    q[(b * lq + i) * d + hh * dh + c] as f64
                                        * k[(b * lk + j) * d + hh * dh + c] as f64
                                })
                                .sum::<f64>()
                                / (dh as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for (&j, sj) in allowed.iter().zip(&s) {
                        let p = (sj - m).exp() / z;
                        probs[((b * h + hh) * lq + i) * lk + j] = p as f32;
                        for c in 0..dh {
                            ctx[(b * lq + i) * d + hh * dh + c] +=
                                (p * v[(b * lk + j) * d + hh * dh + c] as f64) as f32;
                        }
                    }
                }
            }
        }
        let (wo, bo) = lin(&attn.out_proj);
        (affine(&ctx, bsz * lq, &wo, &bo, d, d), probs)
    }

    fn check(got: Vec<f32>, want: Vec<f32>, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err < 2e-5, "{what}: max abs error {err}");
        assert!(
            got.iter().all(|v| v.is_finite()),
            "{what}: non-finite output"
        );
    }

    fn layers(dev: &burn::tensor::Device<B>) -> Vec<(&'static str, Attention<B>)> {
        vec![
            ("separate", AttentionConfig::new(8, 2).init(dev)),
            (
                "fused",
                AttentionConfig::new(8, 2).with_fused_qkv(true).init(dev),
            ),
        ]
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn self_attention_matches_naive_with_every_mask() {
        let dev = default_device();
        let (bsz, l) = (2, 5);
        let x = Tensor::<B, 3>::random([bsz, l, 8], Distribution::Normal(0.0, 1.0), &dev);
        let xs = data(x.clone());
        let lens = [5usize, 2];
        let am = Tensor::<B, 2, Int>::from_data(
            TensorData::new(
                (0..bsz * l)
                    .map(|i| (i % l < lens[i / l]) as i64)
                    .collect::<Vec<_>>(),
                [bsz, l],
            ),
            &dev,
        );
        // A hand-made mask that hides every key from query 1 of batch 0 and query 3 of batch 1.
        let dead = |b: usize, i: usize| (b == 0 && i == 1) || (b == 1 && i == 3);
        let custom = Tensor::<B, 4, Bool>::from_data(
            TensorData::new(
                (0..bsz * l * l)
                    .map(|n| dead(n / (l * l), n / l % l) || (n % l) == 4)
                    .collect::<Vec<_>>(),
                [bsz, 1, l, l],
            ),
            &dev,
        );
        let cases: Vec<(
            &str,
            Option<AttentionMask<B>>,
            Box<dyn Fn(usize, usize, usize) -> bool>,
        )> = vec![
            ("none", None, Box::new(|_, _, _| false)),
            (
                "causal",
                Some(AttentionMask::causal(l, &dev)),
                Box::new(|_, i, j| j > i),
            ),
            (
                "padding",
                Some(AttentionMask::from_attention_mask(am.clone())),
                Box::new(move |b, _, j| j >= lens[b]),
            ),
            (
                "causal+padding",
                Some(AttentionMask::causal(l, &dev).or(AttentionMask::from_attention_mask(am))),
                Box::new(move |b, i, j| j > i || j >= lens[b]),
            ),
            (
                "whole rows",
                Some(AttentionMask::new(custom)),
                Box::new(move |b, i, j| dead(b, i) || j == 4),
            ),
        ];
        for (name, attn) in layers(&dev) {
            for (case, mask, f) in &cases {
                let (want, want_p) = naive(&attn, &xs, &xs, (bsz, l, l), f.as_ref());
                let what = format!("{name}/{case}");
                check(
                    data(attn.forward(x.clone(), mask.as_ref())),
                    want.clone(),
                    &what,
                );
                let out = attn.forward_with_weights(x.clone(), mask.as_ref());
                check(data(out.context), want, &format!("{what} (explicit path)"));
                check(data(out.weights), want_p, &format!("{what} (weights)"));
            }
        }
    }

    #[test]
    fn self_attention_at_the_fixture_shapes() {
        // The token counts and head widths of the CLIP and SigLIP fixtures' towers.
        let dev = default_device();
        for (d, h, l) in [(64, 4, 16), (64, 4, 17), (32, 4, 16), (32, 4, 77)] {
            let x = Tensor::<B, 3>::random([2, l, d], Distribution::Normal(0.0, 1.0), &dev);
            let attn = AttentionConfig::new(d, h).init::<B>(&dev);
            let (want, _) = naive(
                &attn,
                &data(x.clone()),
                &data(x.clone()),
                (2, l, l),
                &|_, _, _| false,
            );
            check(
                data(attn.forward(x.clone(), None)),
                want,
                &format!("d {d} heads {h} tokens {l}"),
            );
            let (want, _) = naive(
                &attn,
                &data(x.clone()),
                &data(x.clone()),
                (2, l, l),
                &|_, i, j| j > i,
            );
            check(
                data(attn.forward(x, Some(&AttentionMask::causal(l, &dev)))),
                want,
                &format!("causal d {d} heads {h} tokens {l}"),
            );
        }
    }

    #[test]
    fn cross_attention_matches_naive() {
        let dev = default_device();
        // Small shapes, and SigLIP's pooling head (one probe over 16 tokens, head width 16).
        for (d, h, lk) in [(8, 2, 6), (64, 4, 16), (64, 4, 17)] {
            let q = Tensor::<B, 3>::random([2, 1, d], Distribution::Normal(0.0, 1.0), &dev);
            let kv = Tensor::<B, 3>::random([2, lk, d], Distribution::Normal(0.0, 1.0), &dev);
            for fused in [false, true] {
                let attn = AttentionConfig::new(d, h)
                    .with_fused_qkv(fused)
                    .init::<B>(&dev);
                let (want, _) = naive(
                    &attn,
                    &data(q.clone()),
                    &data(kv.clone()),
                    (2, 1, lk),
                    &|_, _, _| false,
                );
                check(
                    data(attn.forward_cross(q.clone(), kv.clone(), None)),
                    want,
                    &format!("d {d} heads {h} keys {lk} fused {fused}"),
                );
            }
        }
    }

    #[test]
    fn one_query_over_key_counts_of_one_tuning_class() {
        // CubeCL keys its kernel choice by sizes rounded up to a power of two: after 32 keys
        // (a multiple of the plane size, where its vec-mat kernel runs) came 17 keys of the
        // same class, and the published runtime ran the kernel chosen for 32, which refuses
        // 17 ("Rhs dimension n=17 must be a multiple of plane size"), as a panic. Patched in
        // `patches/cubecl-runtime`.
        let dev = default_device();
        let attn = AttentionConfig::new(64, 4).init::<B>(&dev);
        for lk in [32, 17, 24, 31] {
            let q = Tensor::<B, 3>::random([2, 1, 64], Distribution::Normal(0.0, 1.0), &dev);
            let kv = Tensor::<B, 3>::random([2, lk, 64], Distribution::Normal(0.0, 1.0), &dev);
            let (want, _) = naive(
                &attn,
                &data(q.clone()),
                &data(kv.clone()),
                (2, 1, lk),
                &|_, _, _| false,
            );
            check(
                data(attn.forward_cross(q, kv, None)),
                want,
                &format!("keys {lk}"),
            );
        }
    }

    #[test]
    fn fused_and_separate_layouts_agree() {
        let dev = default_device();
        let sep = AttentionConfig::new(8, 4).init::<B>(&dev);
        // Parameters are initialised lazily, and a clone of an uninitialised parameter draws
        // its own values: materialise them before sharing `out_proj`.
        let x = Tensor::<B, 3>::random([3, 4, 8], Distribution::Normal(0.0, 1.0), &dev);
        let _ = sep.forward(x.clone(), None);
        let mut fused = AttentionConfig::new(8, 4)
            .with_fused_qkv(true)
            .init::<B>(&dev);
        let ws = [&sep.q_proj, &sep.k_proj, &sep.v_proj].map(|p| p.as_ref().unwrap().weight.val());
        let bs = [&sep.q_proj, &sep.k_proj, &sep.v_proj]
            .map(|p| p.as_ref().unwrap().bias.as_ref().unwrap().val());
        let f = fused.in_proj.as_mut().unwrap();
        f.weight = Param::from_tensor(Tensor::cat(ws.to_vec(), 1));
        f.bias = Some(Param::from_tensor(Tensor::cat(bs.to_vec(), 0)));
        fused.out_proj = sep.out_proj.clone();
        let mask = AttentionMask::causal(4, &dev);
        fused
            .forward(x.clone(), Some(&mask))
            .into_data()
            .assert_approx_eq::<f32>(
                &sep.forward(x, Some(&mask)).into_data(),
                Tolerance::absolute(1e-5),
            );
    }

    #[test]
    fn gradients_flow_through_masked_attention_without_nan() {
        let dev = default_device();
        let attn = AttentionConfig::new(8, 2).init::<TrainBackend>(&dev);
        let x = Tensor::<TrainBackend, 3>::random([1, 3, 8], Distribution::Normal(0.0, 1.0), &dev)
            .require_grad();
        // Query 0 sees nothing: its row is dead, and must not poison the gradient.
        let m = Tensor::<TrainBackend, 4, Bool>::from_data(
            TensorData::new(
                vec![true, true, true, false, false, true, false, false, false],
                [1, 1, 3, 3],
            ),
            &dev,
        );
        let y = attn.forward(x.clone(), Some(&AttentionMask::new(m)));
        let grads = y.sum().backward();
        let gx: Vec<f32> = x.grad(&grads).unwrap().into_data().to_vec().unwrap();
        assert!(gx.iter().all(|v| v.is_finite()));
        let gw = attn.q_proj.as_ref().unwrap().weight.grad(&grads).unwrap();
        assert!(
            gw.into_data()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .any(|v| *v != 0.0)
        );
    }

    #[test]
    fn dropout_changes_training_outputs_only() {
        let dev = default_device();
        let attn = AttentionConfig::new(8, 2)
            .with_dropout(0.5)
            .init::<TrainBackend>(&dev);
        let x = Tensor::<TrainBackend, 3>::random([2, 6, 8], Distribution::Normal(0.0, 1.0), &dev);
        let a = attn.forward(x.clone(), None).into_data();
        let b = attn.forward(x.clone(), None).into_data();
        assert_ne!(a, b, "dropout inactive while training");
        let valid = attn.valid();
        let xv = x.inner();
        valid
            .forward(xv.clone(), None)
            .into_data()
            .assert_eq(&valid.forward(xv, None).into_data(), true);
    }
    }
}

/// The incremental paths, on the CPU only: they are compositions of the backend-tested
/// projections and attention above.
#[cfg(test)]
mod cache_tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, default_device};
    use burn::tensor::Distribution;

    fn max_err(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.into_data().to_vec().unwrap(),
            b.into_data().to_vec().unwrap(),
        );
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn pieces_through_the_cache_equal_one_causal_pass() {
        let dev = default_device();
        let x = Tensor::<B, 3>::random([2, 7, 12], Distribution::Normal(0.0, 1.0), &dev);
        let full_mask = AttentionMask::causal(7, &dev);
        for fused in [false, true] {
            let attn = AttentionConfig::new(12, 3)
                .with_fused_qkv(fused)
                .init::<B>(&dev);
            let want = attn.forward(x.clone(), Some(&full_mask));
            let mut cache = KvCache::new();
            let mut got = Vec::new();
            // A prompt of 3, single steps, then 2 at once.
            for (from, to) in [(0, 3), (3, 4), (4, 5), (5, 7)] {
                got.push(
                    attn.forward_autoregressive(
                        x.clone().slice([0..2, from..to, 0..12]),
                        &mut cache,
                    ),
                );
                assert_eq!(cache.len(), to);
            }
            let err = max_err(Tensor::cat(got, 1), want);
            assert!(err < 1e-5, "fused {fused}: cached pieces differ by {err}");
        }
    }

    #[test]
    fn selecting_cache_rows_follows_the_hypotheses() {
        let dev = default_device();
        let attn = AttentionConfig::new(8, 2).init::<B>(&dev);
        let x = Tensor::<B, 3>::random([3, 5, 8], Distribution::Normal(0.0, 1.0), &dev);
        let mut cache = KvCache::new();
        let _ = attn.forward_autoregressive(x.clone().slice([0..3, 0..4, 0..8]), &mut cache);
        // Row 2 twice, then row 0: the next step must continue those prefixes.
        let rows = [2usize, 2, 0];
        cache.select(Tensor::from_data(
            TensorData::new(rows.iter().map(|&r| r as i64).collect::<Vec<_>>(), [3]),
            &dev,
        ));
        let step = attn.forward_autoregressive(x.clone().slice([0..3, 4..5, 0..8]), &mut cache);
        for (i, &r) in rows.iter().enumerate() {
            let mut seq = x.clone().slice([r..r + 1, 0..4, 0..8]);
            seq = Tensor::cat(vec![seq, x.clone().slice([i..i + 1, 4..5, 0..8])], 1);
            let want = attn
                .forward(seq, Some(&AttentionMask::causal(5, &dev)))
                .slice([0..1, 4..5, 0..8]);
            let err = max_err(step.clone().slice([i..i + 1, 0..1, 0..8]), want);
            assert!(err < 1e-5, "row {i} (from {r}): {err}");
        }
    }

    #[test]
    fn cached_cross_attention_reads_the_context_once() {
        let dev = default_device();
        let attn = AttentionConfig::new(8, 2).init::<B>(&dev);
        let ctx = Tensor::<B, 3>::random([2, 6, 8], Distribution::Normal(0.0, 1.0), &dev);
        let q = Tensor::<B, 3>::random([2, 3, 8], Distribution::Normal(0.0, 1.0), &dev);
        let mut cache = KvCache::new();
        let first = attn.forward_cross_cached(q.clone(), &ctx, None, &mut cache);
        assert!(max_err(first, attn.forward_cross(q.clone(), ctx.clone(), None)) < 1e-6);
        // Later calls use the cached keys and values even when handed another context.
        let other = ctx.clone() * 3.0;
        let again = attn.forward_cross_cached(q.clone(), &other, None, &mut cache);
        assert!(max_err(again, attn.forward_cross(q, ctx, None)) < 1e-6);
        assert_eq!(cache.len(), 6);
    }
}
