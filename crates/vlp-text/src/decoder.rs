//! A small decoder-only transformer: a causal language model over token ids (any tokenizer:
//! ShapesWorld's word vocabulary, CLIP's BPE), optionally conditioned on a context (image tokens)
//! through cross-attention in every block, with a key/value cache for generation.
//!
//! The cache follows Burn's `TransformerDecoder` idiom (`new_autoregressive_cache`,
//! `forward_autoregressive_inference`) with one difference: only the *new* tokens are passed
//! each step, as Hugging Face's `past_key_values` does, instead of the whole sequence.
//! [`DecoderLm`] puts it behind [`NextTokenLogits`], so greedy, beam search and sampling
//! ([`crate::generate`]) reuse the cache, reordering it as beam search reorders hypotheses.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use vlp_core::nn::{
    Activation, Attention, AttentionConfig, AttentionMask, KvCache, LayerNorm, LayerNormConfig,
    Mlp, MlpConfig, linear_2d,
};

use crate::generate::NextTokenLogits;
use crate::{Result, TextError};

/// Configuration of a [`CausalDecoder`].
#[derive(Config, Debug)]
pub struct CausalDecoderConfig {
    /// Tokens the model reads and predicts.
    pub vocab_size: usize,
    /// Longest sequence (prompt and generated tokens): the number of position embeddings.
    pub max_len: usize,
    /// Residual width.
    pub d_model: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Attention heads per block; must divide `d_model`.
    pub n_heads: usize,
    /// Feed-forward hidden width.
    pub d_hidden: usize,
    /// Whether every block cross-attends to a context (`[batch, tokens, d_model]`, e.g. image
    /// tokens projected to `d_model`) after its self-attention.
    #[config(default = false)]
    pub cross_attention: bool,
    /// Learned embeddings added to the context's tokens by index before the blocks read them
    /// (0: none, as BLIP's decoder; otherwise the most context tokens it accepts).
    #[config(default = 0)]
    pub context_positions: usize,
    /// Feed-forward non-linearity.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub eps: f64,
}

/// One pre-norm block: causal self-attention, cross-attention to the context (when built
/// with it), feed-forward; each `x + sublayer(norm(x))`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Causal self-attention.
    pub self_attn: Attention<B>,
    /// Norm before the self-attention.
    pub layer_norm1: LayerNorm<B>,
    /// Cross-attention to the context.
    pub cross_attn: Option<Attention<B>>,
    /// Norm before the cross-attention.
    pub layer_norm_cross: Option<LayerNorm<B>>,
    /// Feed-forward block.
    pub mlp: Mlp<B>,
    /// Norm before the feed-forward block.
    pub layer_norm2: LayerNorm<B>,
}

/// A causal transformer language model (GPT-2's pre-norm layout), named like the CLIP text
/// tower where the parts match.
#[derive(Module, Debug)]
pub struct CausalDecoder<B: Backend> {
    /// Token table, `[vocab, d_model]`.
    pub token_embedding: Embedding<B>,
    /// Absolute positions, `[max_len, d_model]`.
    pub position_embedding: Embedding<B>,
    /// Position of each context token (`context_positions` rows), when configured.
    pub context_position_embedding: Option<Embedding<B>>,
    /// The blocks, first to last.
    pub layers: Vec<DecoderLayer<B>>,
    /// Norm on every output token.
    pub final_layer_norm: LayerNorm<B>,
    /// Next-token logits, `d_model → vocab`.
    pub lm_head: Linear<B>,
}

/// The keys and values a [`CausalDecoder`] has computed, per block: the self-attention's over
/// the tokens seen so far, the cross-attention's over the context.
#[derive(Debug, Clone)]
pub struct DecoderCache<B: Backend> {
    /// `(self-attention, cross-attention)` per block.
    layers: Vec<(KvCache<B>, KvCache<B>)>,
}

impl<B: Backend> DecoderCache<B> {
    /// Tokens seen so far.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |(s, _)| s.len())
    }

    /// Whether no token has been seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the batch rows `rows`, in that order (repeats allowed), in every block.
    ///
    /// # Shapes
    /// - `rows`: `[new_batch]`, indices into the cached batch
    pub fn select(&mut self, rows: Tensor<B, 1, Int>) {
        for (s, c) in &mut self.layers {
            s.select(rows.clone());
            c.select(rows.clone());
        }
    }
}

impl CausalDecoderConfig {
    /// Creates the decoder on `device`.
    ///
    /// # Panics
    /// If `n_heads` does not divide `d_model`, or a size is zero (a programming error).
    pub fn init<B: Backend>(&self, device: &B::Device) -> CausalDecoder<B> {
        assert!(
            self.vocab_size > 0 && self.max_len > 0 && self.n_layers > 0,
            "decoder: empty vocabulary, length or depth"
        );
        let norm = || {
            LayerNormConfig::new(self.d_model)
                .with_eps(self.eps)
                .init(device)
        };
        let attention = || AttentionConfig::new(self.d_model, self.n_heads).init(device);
        let layers = (0..self.n_layers)
            .map(|_| DecoderLayer {
                self_attn: attention(),
                layer_norm1: norm(),
                cross_attn: self.cross_attention.then(attention),
                layer_norm_cross: self.cross_attention.then(norm),
                mlp: MlpConfig::new(self.d_model, self.d_hidden)
                    .with_activation(self.activation)
                    .init(device),
                layer_norm2: norm(),
            })
            .collect();
        CausalDecoder {
            token_embedding: EmbeddingConfig::new(self.vocab_size, self.d_model).init(device),
            position_embedding: EmbeddingConfig::new(self.max_len, self.d_model).init(device),
            context_position_embedding: (self.cross_attention && self.context_positions > 0)
                .then(|| EmbeddingConfig::new(self.context_positions, self.d_model).init(device)),
            layers,
            final_layer_norm: norm(),
            lm_head: LinearConfig::new(self.d_model, self.vocab_size).init(device),
        }
    }
}

impl<B: Backend> DecoderLayer<B> {
    /// The cross-attention sublayer, when the block has one and a context is given.
    fn cross(
        &self,
        x: Tensor<B, 3>,
        context: Option<(&Tensor<B, 3>, Option<&AttentionMask<B>>)>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let (Some(attn), Some(norm)) = (&self.cross_attn, &self.layer_norm_cross) else {
            assert!(
                context.is_none(),
                "decoder: a context was given to a decoder built without cross-attention"
            );
            return x;
        };
        let Some((ctx, mask)) = context else {
            return x;
        };
        let h = norm.forward(x.clone());
        let y = match cache {
            Some(c) => attn.forward_cross_cached(h, ctx, mask, c),
            None => attn.forward_cross(h, ctx.clone(), mask),
        };
        x + y
    }
}

impl<B: Backend> CausalDecoder<B> {
    /// Tokens the model scores.
    pub fn vocab_size(&self) -> usize {
        self.token_embedding.weight.lazy_shape().dims::<2>()[0]
    }

    /// Longest sequence the model reads.
    pub fn max_len(&self) -> usize {
        self.position_embedding.weight.lazy_shape().dims::<2>()[0]
    }

    /// Whether the blocks cross-attend to a context.
    pub fn has_cross_attention(&self) -> bool {
        self.layers.iter().any(|l| l.cross_attn.is_some())
    }

    fn embed(&self, input_ids: Tensor<B, 2, Int>, start: usize) -> Tensor<B, 3> {
        let [b, n] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<B, 1, Int>::arange(start as i64..(start + n) as i64, &device)
            .reshape([1, n])
            .expand([b, n]);
        self.token_embedding.forward(input_ids) + self.position_embedding.forward(positions)
    }

    /// The context with its position embeddings added, when the decoder has them.
    ///
    /// # Panics
    /// If the context has more tokens than the decoder has context positions.
    fn place(&self, context: Tensor<B, 3>) -> Tensor<B, 3> {
        let Some(pos) = &self.context_position_embedding else {
            return context;
        };
        let [_, p, d] = context.dims();
        let max = pos.weight.dims()[0];
        assert!(
            p <= max,
            "decoder: a context of {p} tokens, the decoder places at most {max}"
        );
        let table = pos.weight.val().slice([0..p, 0..d]).reshape([1, p, d]);
        context + table
    }

    fn head(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        linear_2d(&self.lm_head, self.final_layer_norm.forward(x))
    }

    /// Next-token logits at every position, every token seeing only itself and those before
    /// it. Right padding needs no mask (no real token sees a later one); ignore the padded
    /// positions in the loss.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, tokens]`, tokens ≤ `max_len`
    /// - `context`: `[batch, context_tokens, d_model]` with its key-padding mask (broadcastable
    ///   to `[batch, heads, tokens, context_tokens]`); `None` skips the cross-attention
    /// - returns: `[batch, tokens, vocab]`
    ///
    /// # Panics
    /// If a context is given to a decoder without cross-attention.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        context: Option<(&Tensor<B, 3>, Option<&AttentionMask<B>>)>,
    ) -> Tensor<B, 3> {
        self.head(self.hidden(input_ids, context))
    }

    /// The last block's output before the final norm, `[batch, tokens, d_model]` (for heads
    /// other than the language model's).
    pub fn hidden(
        &self,
        input_ids: Tensor<B, 2, Int>,
        context: Option<(&Tensor<B, 3>, Option<&AttentionMask<B>>)>,
    ) -> Tensor<B, 3> {
        let n = input_ids.dims()[1];
        let causal = AttentionMask::causal(n, &input_ids.device());
        let placed = context.map(|(c, m)| (self.place(c.clone()), m));
        let context = placed.as_ref().map(|(c, m)| (c, *m));
        let mut x = self.embed(input_ids, 0);
        for layer in &self.layers {
            x = x.clone()
                + layer
                    .self_attn
                    .forward(layer.layer_norm1.forward(x), Some(&causal));
            x = layer.cross(x, context, None);
            x = x.clone() + layer.mlp.forward(layer.layer_norm2.forward(x));
        }
        x
    }

    /// An empty cache for [`forward_autoregressive_inference`](Self::forward_autoregressive_inference).
    pub fn new_autoregressive_cache(&self) -> DecoderCache<B> {
        DecoderCache {
            layers: self
                .layers
                .iter()
                .map(|_| (KvCache::new(), KvCache::new()))
                .collect(),
        }
    }

    /// Logits of `new_ids`, the tokens that follow those in `cache` (all of the prompt on the
    /// first call, then one token a step); equal to the matching rows of
    /// [`forward`](Self::forward) on the whole sequence. The context is read on the first call
    /// only (its keys and values are cached).
    ///
    /// # Shapes
    /// - `new_ids`: `[batch, new_tokens]`; `cache.len() + new_tokens ≤ max_len`
    /// - `context`: as in [`forward`](Self::forward), with the cache's batch
    /// - returns: `[batch, new_tokens, vocab]`
    pub fn forward_autoregressive_inference(
        &self,
        new_ids: Tensor<B, 2, Int>,
        context: Option<(&Tensor<B, 3>, Option<&AttentionMask<B>>)>,
        cache: &mut DecoderCache<B>,
    ) -> Tensor<B, 3> {
        // Only the first call reads the context (later ones find its keys in the cache).
        let placed = context
            .filter(|_| cache.is_empty())
            .map(|(c, m)| (self.place(c.clone()), m));
        let context = match &placed {
            Some((c, m)) => Some((c, *m)),
            None => context,
        };
        let mut x = self.embed(new_ids, cache.len());
        for (layer, (self_cache, cross_cache)) in self.layers.iter().zip(&mut cache.layers) {
            x = x.clone()
                + layer
                    .self_attn
                    .forward_autoregressive(layer.layer_norm1.forward(x), self_cache);
            x = layer.cross(x, context, Some(cross_cache));
            x = x.clone() + layer.mlp.forward(layer.layer_norm2.forward(x));
        }
        self.head(x)
    }
}

/// A [`CausalDecoder`] (with its context, if any) seen by the decoding functions of
/// [`crate::generate`]. With the cache on, a call whose prefixes each extend one prefix of the
/// previous call by one token (greedy, sampling, beam search) runs only the new tokens; any
/// other call starts over.
pub struct DecoderLm<'a, B: Backend> {
    decoder: &'a CausalDecoder<B>,
    context: Option<(Tensor<B, 3>, Option<AttentionMask<B>>)>,
    use_cache: bool,
    cache: Option<DecoderCache<B>>,
    /// The prefixes the cache holds, in its batch order.
    cached: Vec<Vec<u32>>,
}

impl<'a, B: Backend> DecoderLm<'a, B> {
    /// A language model without context, cache on.
    pub fn new(decoder: &'a CausalDecoder<B>) -> Self {
        Self {
            decoder,
            context: None,
            use_cache: true,
            cache: None,
            cached: Vec::new(),
        }
    }

    /// Conditions every prefix on one context (one image's tokens and their mask).
    ///
    /// # Shapes
    /// - `context`: `[1, context_tokens, d_model]`
    /// - `mask`: broadcastable to `[1, heads, *, context_tokens]`
    pub fn with_context(mut self, context: Tensor<B, 3>, mask: Option<AttentionMask<B>>) -> Self {
        self.context = Some((context, mask));
        self.cache = None;
        self.cached.clear();
        self
    }

    /// Turns the cache off: every call runs the whole prefixes (the reference the cache is
    /// tested against).
    pub fn without_cache(mut self) -> Self {
        self.use_cache = false;
        self
    }

    fn check(&self, prefixes: &[Vec<u32>]) -> Result<()> {
        let (v, max) = (self.decoder.vocab_size(), self.decoder.max_len());
        if let Some(d) = &self.context {
            if !self.decoder.has_cross_attention() {
                return Err(TextError::Generate {
                    reason: "a context was given to a decoder without cross-attention".into(),
                });
            }
            if d.0.dims()[0] != 1 {
                return Err(TextError::Generate {
                    reason: format!("the context holds {} items; give one", d.0.dims()[0]),
                });
            }
        }
        for (i, p) in prefixes.iter().enumerate() {
            if p.is_empty() {
                return Err(TextError::Generate {
                    reason: format!("prefix {i} is empty: give at least a start token"),
                });
            }
            if p.len() > max {
                return Err(TextError::Generate {
                    reason: format!(
                        "prefix {i} has {} tokens, more than the decoder's max_len {max}",
                        p.len()
                    ),
                });
            }
            if let Some(t) = p.iter().find(|&&t| t as usize >= v) {
                return Err(TextError::Generate {
                    reason: format!("prefix {i}: token {t} outside the vocabulary of {v}"),
                });
            }
        }
        Ok(())
    }

    fn ids(&self, rows: &[&[u32]]) -> Tensor<B, 2, Int> {
        let n = rows[0].len();
        let flat: Vec<i64> = rows
            .iter()
            .flat_map(|r| r.iter().map(|&t| t as i64))
            .collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), n]), &self.device())
    }

    fn device(&self) -> B::Device {
        self.decoder.lm_head.weight.device()
    }

    /// The context repeated for `n` rows.
    fn context_for(&self, n: usize) -> Option<(Tensor<B, 3>, Option<AttentionMask<B>>)> {
        self.context
            .as_ref()
            .map(|(c, m)| (c.clone().repeat_dim(0, n), m.clone()))
    }

    /// The last position's logits of `[rows, tokens, vocab]`.
    fn last(logits: Tensor<B, 3>) -> Result<Vec<Vec<f32>>> {
        let [r, n, v] = logits.dims();
        let last: Vec<f32> = logits
            .slice([0..r, n - 1..n, 0..v])
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| TextError::Generate {
                reason: format!("reading logits: {e:?}"),
            })?;
        Ok(last.chunks(v).map(<[f32]>::to_vec).collect())
    }

    /// Rows of the cache the prefixes extend by exactly one token, if every one does.
    fn extends_cache(&self, prefixes: &[Vec<u32>]) -> Option<Vec<usize>> {
        let len = self.cached.first()?.len();
        prefixes
            .iter()
            .map(|p| {
                (p.len() == len + 1)
                    .then(|| self.cached.iter().position(|c| c[..] == p[..len]))
                    .flatten()
            })
            .collect()
    }
}

impl<B: Backend> NextTokenLogits for DecoderLm<'_, B> {
    fn vocab_size(&self) -> usize {
        self.decoder.vocab_size()
    }

    fn next_logits(&mut self, prefixes: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        self.check(prefixes)?;
        if prefixes.is_empty() {
            return Ok(Vec::new());
        }
        let n = prefixes.len();
        if self.use_cache
            && let (Some(rows), Some(cache)) = (self.extends_cache(prefixes), self.cache.as_mut())
        {
            let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            cache.select(Tensor::from_data(
                TensorData::new(idx, [n]),
                &self.decoder.lm_head.weight.device(),
            ));
            let last: Vec<&[u32]> = prefixes.iter().map(|p| &p[p.len() - 1..]).collect();
            let ids = self.ids(&last);
            // The cross-attention caches hold the context's keys and values already (for every
            // row): the context is not read again, so it is passed as it is, not repeated.
            let cache = self.cache.as_mut().expect("checked above");
            let logits = self.decoder.forward_autoregressive_inference(
                ids,
                self.context.as_ref().map(|(c, m)| (c, m.as_ref())),
                cache,
            );
            self.cached = prefixes.to_vec();
            return Self::last(logits);
        }
        // Start over: equal lengths run as one batch (filling a fresh cache), others one by one.
        self.cache = None;
        self.cached.clear();
        let same_length = prefixes.iter().all(|p| p.len() == prefixes[0].len());
        if !same_length {
            let mut out = Vec::with_capacity(n);
            for p in prefixes {
                let ctx = self.context_for(1);
                let logits = self.decoder.forward(
                    self.ids(&[p.as_slice()]),
                    ctx.as_ref().map(|(c, m)| (c, m.as_ref())),
                );
                out.extend(Self::last(logits)?);
            }
            return Ok(out);
        }
        let rows: Vec<&[u32]> = prefixes.iter().map(Vec::as_slice).collect();
        let ids = self.ids(&rows);
        let ctx = self.context_for(n);
        let ctx = ctx.as_ref().map(|(c, m)| (c, m.as_ref()));
        let logits = if self.use_cache {
            let mut cache = self.decoder.new_autoregressive_cache();
            let logits = self
                .decoder
                .forward_autoregressive_inference(ids, ctx, &mut cache);
            self.cache = Some(cache);
            self.cached = prefixes.to_vec();
            logits
        } else {
            self.decoder.forward(ids, ctx)
        };
        Self::last(logits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{GenerateConfig, SamplingConfig, beam_search, greedy, sample};
    use burn::tensor::Distribution;
    use vlp_core::backend::{DefaultBackend as B, default_device};
    use vlp_core::rng::Rng;

    fn decoder(cross: bool) -> CausalDecoder<B> {
        // Odd sizes: 3 heads of width 4, a vocabulary of 23.
        CausalDecoderConfig::new(23, 16, 12, 2, 3, 20)
            .with_cross_attention(cross)
            .init(&default_device())
    }

    fn ids(rows: &[&[u32]]) -> Tensor<B, 2, Int> {
        let n = rows[0].len();
        let flat: Vec<i64> = rows
            .iter()
            .flat_map(|r| r.iter().map(|&t| t as i64))
            .collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), n]), &default_device())
    }

    fn values(t: Tensor<B, 3>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    fn max_err(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        values(a)
            .iter()
            .zip(values(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn context(rows: usize, tokens: usize) -> Tensor<B, 3> {
        Tensor::random(
            [rows, tokens, 12],
            Distribution::Normal(0.0, 1.0),
            &default_device(),
        )
    }

    #[test]
    fn every_position_sees_only_its_prefix() {
        let seq: [u32; 7] = [3, 9, 1, 22, 5, 5, 0];
        for cross in [false, true] {
            let dec = decoder(cross);
            let ctx = context(1, 5);
            let c = cross.then_some((&ctx, None));
            let full = dec.forward(ids(&[&seq]), c);
            assert_eq!(full.dims(), [1, 7, 23]);
            // Brute force: position t of the whole equals the last position of seq[..=t] run alone.
            for t in 0..seq.len() {
                let alone = dec.forward(ids(&[&seq[..=t]]), c);
                let err = max_err(
                    full.clone().slice([0..1, t..t + 1, 0..23]),
                    alone.slice([0..1, t..t + 1, 0..23]),
                );
                assert!(err < 1e-5, "cross {cross}, position {t}: {err}");
            }
        }
    }

    #[test]
    fn cached_pieces_equal_the_full_forward_with_a_masked_context() {
        let dec = decoder(true);
        let seqs: [&[u32]; 2] = [&[1, 2, 3, 4, 5, 6], &[7, 8, 9, 10, 11, 12]];
        let ctx = context(2, 4);
        // The second item's context has one real token of four.
        let mask = AttentionMask::from_attention_mask(Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![1i64, 1, 1, 1, 1, 0, 0, 0], [2, 4]),
            &default_device(),
        ));
        let c = Some((&ctx, Some(&mask)));
        let want = dec.forward(ids(&seqs), c);
        let mut cache = dec.new_autoregressive_cache();
        let mut got = Vec::new();
        for (a, b) in [(0, 2), (2, 3), (3, 6)] {
            let piece: Vec<&[u32]> = seqs.iter().map(|s| &s[a..b]).collect();
            got.push(dec.forward_autoregressive_inference(ids(&piece), c, &mut cache));
        }
        assert_eq!(cache.len(), 6);
        let err = max_err(Tensor::cat(got, 1), want);
        assert!(err < 1e-5, "cached logits differ by {err}");
    }

    #[test]
    fn placed_context_is_the_context_plus_its_position_table() {
        let dev = default_device();
        let plain = decoder(true);
        let mut placed = CausalDecoderConfig::new(23, 16, 12, 2, 3, 20)
            .with_cross_attention(true)
            .with_context_positions(5)
            .init::<B>(&dev);
        // The same blocks: only the position table differs. Parameters are drawn lazily and a
        // clone of an undrawn one draws its own: a forward draws them all first.
        let _ = plain.forward(ids(&[&[1]]), Some((&context(1, 1), None)));
        placed.token_embedding = plain.token_embedding.clone();
        placed.position_embedding = plain.position_embedding.clone();
        placed.layers = plain.layers.clone();
        placed.final_layer_norm = plain.final_layer_norm.clone();
        placed.lm_head = plain.lm_head.clone();
        let table = placed
            .context_position_embedding
            .as_ref()
            .unwrap()
            .weight
            .val();
        let seq = ids(&[&[3, 9, 1, 22]]);
        // 4 of the 5 positions: the first 4 rows of the table.
        let ctx = context(1, 4);
        let by_hand = ctx.clone() + table.slice([0..4, 0..12]).reshape([1, 4, 12]);
        let err = max_err(
            placed.forward(seq.clone(), Some((&ctx, None))),
            plain.forward(seq.clone(), Some((&by_hand, None))),
        );
        assert!(
            err < 1e-5,
            "placed context differs from context + table by {err}"
        );
        // Without positions cross-attention cannot tell the context's order; with them it can.
        let reversed = ctx.clone().flip([1]);
        let order = |d: &CausalDecoder<B>| {
            max_err(
                d.forward(seq.clone(), Some((&ctx, None))),
                d.forward(seq.clone(), Some((&reversed, None))),
            )
        };
        assert!(order(&plain) < 1e-5, "unplaced: {}", order(&plain));
        assert!(order(&placed) > 1e-3, "placed: {}", order(&placed));
        // The cache places the context once, as the full forward does.
        let mut cache = placed.new_autoregressive_cache();
        let a = placed.forward_autoregressive_inference(
            ids(&[&[3, 9]]),
            Some((&ctx, None)),
            &mut cache,
        );
        let b = placed.forward_autoregressive_inference(
            ids(&[&[1, 22]]),
            Some((&ctx, None)),
            &mut cache,
        );
        let err = max_err(
            Tensor::cat(vec![a, b], 1),
            placed.forward(seq, Some((&ctx, None))),
        );
        assert!(err < 1e-5, "cached placed logits differ by {err}");
    }

    /// A decoder whose logits are far from flat, so that decoding paths differ by token.
    fn sharp(cross: bool) -> CausalDecoder<B> {
        let mut dec = decoder(cross);
        dec.lm_head.weight = dec.lm_head.weight.map(|w| w * 8.0);
        dec
    }

    #[test]
    fn cached_decoding_returns_the_tokens_of_uncached_decoding() {
        let cfg = GenerateConfig {
            max_new_tokens: 10,
            eos: None,
        };
        for cross in [false, true] {
            let dec = sharp(cross);
            let lm = || {
                let lm = DecoderLm::new(&dec);
                if cross {
                    lm.with_context(context(1, 3), None)
                } else {
                    lm
                }
            };
            // The same context for both runs.
            let (mut cached, mut plain) = {
                let a = lm();
                let ctx = a.context.clone();
                let mut b = DecoderLm::new(&dec).without_cache();
                b.context = ctx;
                (a, b)
            };
            let prompt = [4u32, 17];
            let g = greedy(&mut cached, &prompt, &cfg).unwrap();
            assert_eq!(g.len(), 10);
            assert_eq!(
                g,
                greedy(&mut plain, &prompt, &cfg).unwrap(),
                "cross {cross}: greedy"
            );
            assert_eq!(cached.cache.as_ref().unwrap().len(), prompt.len() + 9);
            let bc = beam_search(&mut cached, &prompt, 3, 1.0, &cfg).unwrap();
            let bp = beam_search(&mut plain, &prompt, 3, 1.0, &cfg).unwrap();
            assert_eq!(bc.len(), 3);
            for (a, b) in bc.iter().zip(&bp) {
                assert_eq!(a.tokens, b.tokens, "cross {cross}: beams");
                assert!((a.log_prob - b.log_prob).abs() < 1e-4);
            }
            let one = beam_search(&mut cached, &prompt, 1, 1.0, &cfg).unwrap();
            assert_eq!(one[0].tokens, g, "cross {cross}: one beam is greedy");
            let s = SamplingConfig {
                temperature: 1.0,
                top_k: 5,
                top_p: 0.9,
            };
            let (mut r1, mut r2) = (Rng::new(7), Rng::new(7));
            assert_eq!(
                sample(&mut cached, &prompt, &s, &cfg, &mut r1).unwrap(),
                sample(&mut plain, &prompt, &s, &cfg, &mut r2).unwrap(),
                "cross {cross}: sampling"
            );
        }
    }

    #[test]
    fn bad_prefixes_and_contexts_are_errors() {
        let dec = decoder(false);
        let mut lm = DecoderLm::new(&dec);
        let too_long = vec![1u32; 17];
        let e = lm.next_logits(&[too_long]).unwrap_err().to_string();
        assert!(e.contains("17 tokens") && e.contains("max_len 16"), "{e}");
        let e = lm.next_logits(&[vec![1, 23]]).unwrap_err().to_string();
        assert!(e.contains("token 23 outside the vocabulary of 23"), "{e}");
        let e = lm.next_logits(&[vec![]]).unwrap_err().to_string();
        assert!(e.contains("prefix 0 is empty"), "{e}");
        let mut lm = DecoderLm::new(&dec).with_context(context(1, 2), None);
        let e = lm.next_logits(&[vec![1]]).unwrap_err().to_string();
        assert!(e.contains("without cross-attention"), "{e}");
        // Generation that would run past max_len stops with the same error, not a panic.
        let mut lm = DecoderLm::new(&dec);
        let cfg = GenerateConfig {
            max_new_tokens: 20,
            eos: None,
        };
        let e = greedy(&mut lm, &[1, 2], &cfg).unwrap_err().to_string();
        assert!(e.contains("max_len 16"), "{e}");
    }
}
