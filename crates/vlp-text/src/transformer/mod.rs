//! The CLIP / SigLIP text transformer.

mod config;

pub use config::{TextPooling, TextTransformerConfig};

use burn::module::Module;
use burn::nn::{Embedding, Linear};
use burn::tensor::{Int, Tensor, backend::Backend};
use vlp_core::nn::{AttentionMask, EncoderHook, LayerNorm, NoHook, TransformerEncoder, linear_2d};

/// Token and position embeddings (HF `text_model.embeddings`).
#[derive(Module, Debug)]
pub struct TextEmbeddings<B: Backend> {
    /// Token table, `[vocab, hidden]` (open_clip `token_embedding`).
    pub token_embedding: Embedding<B>,
    /// Absolute positions, `[context, hidden]` (open_clip `positional_embedding`).
    pub position_embedding: Embedding<B>,
}

/// A text transformer, with fields named after Hugging Face's `text_model`.
#[derive(Module, Debug)]
pub struct TextTransformer<B: Backend> {
    /// Token and position embeddings.
    pub embeddings: TextEmbeddings<B>,
    /// The transformer blocks.
    pub encoder: TransformerEncoder<B>,
    /// LayerNorm on every output token (open_clip `ln_final`).
    pub final_layer_norm: LayerNorm<B>,
    /// SigLIP's linear head on the pooled token.
    pub head: Option<Linear<B>>,
    /// Causal self-attention (CLIP) or bidirectional (SigLIP).
    pub causal: bool,
    /// Where the sequence is pooled.
    pub pooling: TextPooling,
}

/// What [`TextTransformer::forward`] returns.
#[derive(Debug, Clone)]
pub struct TextOutput<B: Backend> {
    /// Every token after `final_layer_norm`, `[batch, tokens, hidden]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// The pooled token (through `head` for SigLIP), `[batch, hidden or projection]`.
    pub pooler_output: Tensor<B, 2>,
    /// When requested: the encoder input and every block's output.
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
}

impl<B: Backend> TextTransformer<B> {
    /// Encodes token ids.
    ///
    /// `attention_mask` (`1` = token, `0` = padding; Hugging Face's convention) adds a key-padding
    /// mask to the causal one. open_clip passes none and relies on causality alone.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, tokens]`, tokens ≤ the context length
    /// - `attention_mask`: `[batch, tokens]`
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
    ) -> TextOutput<B> {
        self.forward_with(input_ids, attention_mask, false)
    }

    /// [`forward`](Self::forward), optionally keeping every layer's hidden states.
    pub fn forward_with(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        output_hidden_states: bool,
    ) -> TextOutput<B> {
        let index = self.pool_index(input_ids.clone());
        let tokens = self.embeddings.token_embedding.forward(input_ids);
        self.forward_token_embeddings(tokens, attention_mask, index, output_hidden_states)
    }

    /// Runs the model on token embeddings instead of ids, so that learned vectors can stand in
    /// for words (CoOp-style prompt learning). Positions are added here.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, tokens, hidden]`, e.g. from `embeddings.token_embedding`
    /// - `attention_mask`: `[batch, tokens]`, `1` = token
    /// - `pool_index`: `[batch]`, the position to pool (see [`pool_index`](Self::pool_index))
    pub fn forward_token_embeddings(
        &self,
        tokens: Tensor<B, 3>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        pool_index: Tensor<B, 1, Int>,
        output_hidden_states: bool,
    ) -> TextOutput<B> {
        self.forward_token_embeddings_hooked(
            tokens,
            attention_mask,
            pool_index,
            output_hidden_states,
            &mut NoHook,
        )
    }

    /// Encodes token ids with a [hook](EncoderHook) around every block (MaPLe-style per-layer
    /// prompts, attention maps). A hook that changes the token count must also return matching
    /// masks and restore the count by the last block, since pooling indexes the original tokens.
    pub fn forward_hooked(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        output_hidden_states: bool,
        hook: &mut dyn EncoderHook<B>,
    ) -> TextOutput<B> {
        let index = self.pool_index(input_ids.clone());
        let tokens = self.embeddings.token_embedding.forward(input_ids);
        self.forward_token_embeddings_hooked(
            tokens,
            attention_mask,
            index,
            output_hidden_states,
            hook,
        )
    }

    /// [`forward_token_embeddings`](Self::forward_token_embeddings) with a hook around every
    /// block.
    pub fn forward_token_embeddings_hooked(
        &self,
        tokens: Tensor<B, 3>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        pool_index: Tensor<B, 1, Int>,
        output_hidden_states: bool,
        hook: &mut dyn EncoderHook<B>,
    ) -> TextOutput<B> {
        let [b, l, d] = tokens.dims();
        let device = tokens.device();
        let max = self.context_length();
        assert!(
            l <= max,
            "text transformer: {l} tokens exceed the context length {max}"
        );
        let pos = self
            .embeddings
            .position_embedding
            .weight
            .val()
            .slice([0..l, 0..d]);
        let x = tokens + pos.unsqueeze::<3>();
        let mask = match (self.causal, attention_mask) {
            (true, Some(am)) => {
                Some(AttentionMask::causal(l, &device).or(AttentionMask::from_attention_mask(am)))
            }
            (true, None) => Some(AttentionMask::causal(l, &device)),
            (false, Some(am)) => Some(AttentionMask::from_attention_mask(am)),
            (false, None) => None,
        };
        let enc = self
            .encoder
            .forward_hooked(x, mask.as_ref(), output_hidden_states, hook);
        let last = self.final_layer_norm.forward(enc.last_hidden_state);
        let idx = pool_index.reshape([b, 1, 1]).expand([b, 1, d]);
        let pooled = last.clone().gather(1, idx).reshape([b, d]);
        let pooled = match &self.head {
            Some(h) => h.forward(pooled),
            None => pooled,
        };
        TextOutput {
            last_hidden_state: last,
            pooler_output: pooled,
            hidden_states: enc.hidden_states,
        }
    }

    /// Every output token as the pooled one is mapped (through SigLIP's `head`), for token-level
    /// objectives (FILIP, DreamLIP).
    ///
    /// # Shapes
    /// - returns: `[batch, tokens, output_size]`
    pub fn token_features(&self, out: &TextOutput<B>) -> Tensor<B, 3> {
        match &self.head {
            Some(h) => linear_2d(h, out.last_hidden_state.clone()),
            None => out.last_hidden_state.clone(),
        }
    }

    /// The position each sequence is pooled at, following [`TextPooling`].
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, tokens]`
    /// - returns: `[batch]`
    pub fn pool_index(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 1, Int> {
        let [b, l] = input_ids.dims();
        let device = input_ids.device();
        let first_where = |hit: Tensor<B, 2, burn::tensor::Bool>| -> Tensor<B, 1, Int> {
            // Smallest position where `hit`, or 0 when there is none (what torch's argmax of an
            // all-zero row gives, so sequences without an end token pool like transformers').
            let pos = Tensor::<B, 1, Int>::arange(0..l as i64, &device)
                .reshape([1, l])
                .expand([b, l]);
            let cand = pos.mask_fill(hit.bool_not(), l as i64);
            let first = cand.min_dim(1).reshape([b]);
            first.clone().mask_fill(first.equal_elem(l as i64), 0)
        };
        match self.pooling {
            TextPooling::FirstEos { eos_token_id } => {
                first_where(input_ids.equal_elem(eos_token_id as i64))
            }
            TextPooling::ArgmaxId => {
                let max = input_ids.clone().max_dim(1).expand([b, l]);
                first_where(input_ids.equal(max))
            }
            TextPooling::Last => Tensor::<B, 1, Int>::full([b], l as i64 - 1, &device),
        }
    }

    /// Longest sequence the position table covers.
    pub fn context_length(&self) -> usize {
        self.embeddings
            .position_embedding
            .weight
            .lazy_shape()
            .dims::<2>()[0]
    }

    /// Width of the token features.
    pub fn hidden_size(&self) -> usize {
        self.final_layer_norm.weight.lazy_shape().dims::<1>()[0]
    }

    /// Width of [`TextOutput::pooler_output`].
    pub fn output_size(&self) -> usize {
        match &self.head {
            Some(h) => h.weight.lazy_shape().dims::<2>()[1],
            None => self.hidden_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn model(pooling: TextPooling) -> TextTransformer<B> {
        TextTransformerConfig::new(50, 8, 1, 2, 16)
            .with_max_position_embeddings(6)
            .with_pooling(pooling)
            .init(&default_device())
    }

    fn idx(m: &TextTransformer<B>, ids: [[i64; 6]; 3]) -> Vec<i64> {
        let t = Tensor::<B, 2, Int>::from_ints(ids, &default_device());
        m.pool_index(t)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap()
    }

    const IDS: [[i64; 6]; 3] = [
        [49, 3, 7, 49, 0, 0],
        [49, 5, 49, 49, 49, 49],
        [1, 2, 3, 4, 5, 6],
    ];

    #[test]
    fn pools_at_first_eos_argmax_or_last() {
        // No end token in the third row: transformers' argmax of all zeros gives position 0.
        assert_eq!(
            idx(&model(TextPooling::FirstEos { eos_token_id: 49 }), IDS),
            vec![0, 0, 0]
        );
        let ids = [
            [1, 3, 7, 49, 0, 0],
            [2, 5, 49, 49, 49, 49],
            [1, 2, 3, 4, 5, 6],
        ];
        assert_eq!(
            idx(&model(TextPooling::FirstEos { eos_token_id: 49 }), ids),
            vec![3, 2, 0]
        );
        // open_clip: first position of the largest id.
        assert_eq!(idx(&model(TextPooling::ArgmaxId), ids), vec![3, 2, 5]);
        assert_eq!(idx(&model(TextPooling::Last), ids), vec![5, 5, 5]);
    }

    #[test]
    fn causal_model_ignores_tokens_after_the_pooled_one() {
        let dev = default_device();
        let m = model(TextPooling::FirstEos { eos_token_id: 49 });
        let a = Tensor::<B, 2, Int>::from_ints([[1, 3, 49, 0, 0, 0]], &dev);
        let b = Tensor::<B, 2, Int>::from_ints([[1, 3, 49, 17, 23, 5]], &dev);
        let pa = m.forward(a, None).pooler_output.into_data();
        let pb = m.forward(b, None).pooler_output.into_data();
        pa.assert_approx_eq::<f32>(&pb, burn::tensor::Tolerance::absolute(1e-6));
    }

    #[test]
    fn token_embedding_entry_point_equals_ids() {
        let dev = default_device();
        let m = model(TextPooling::ArgmaxId);
        let ids = Tensor::<B, 2, Int>::from_ints([[1, 3, 49, 0, 0, 0], [4, 4, 4, 49, 2, 0]], &dev);
        let want = m.forward(ids.clone(), None).pooler_output.into_data();
        let emb = m.embeddings.token_embedding.forward(ids.clone());
        let got = m
            .forward_token_embeddings(emb, None, m.pool_index(ids), false)
            .pooler_output
            .into_data();
        got.assert_eq(&want, true);
    }
}
