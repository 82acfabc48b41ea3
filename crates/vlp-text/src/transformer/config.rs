//! Configuration of the text transformer.

use burn::config::Config;
use burn::nn::{EmbeddingConfig, Initializer, LinearConfig};
use serde::{Deserialize, Serialize};
use vlp_core::nn::{Activation, LayerNormConfig, TransformerEncoderConfig};

use super::{TextEmbeddings, TextTransformer};

/// Which token stands for the whole sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextPooling {
    /// The first end-of-text token (transformers' CLIP with `eos_token_id`).
    FirstEos {
        /// Id of the end-of-text token (49407 for CLIP's BPE).
        eos_token_id: u32,
    },
    /// The first position holding the largest id (open_clip's `argmax`; the end-of-text token is
    /// the largest id of CLIP's vocabulary).
    ArgmaxId,
    /// The last position (SigLIP, whose texts are padded to a fixed length).
    Last,
}

/// Configuration of a [`TextTransformer`]. Field names are those of Hugging Face's `text_config`.
#[derive(Config, Debug)]
pub struct TextTransformerConfig {
    /// Vocabulary size (HF and open_clip `vocab_size`).
    pub vocab_size: usize,
    /// Residual width (HF `hidden_size`, open_clip `width`).
    pub hidden_size: usize,
    /// Transformer blocks (HF `num_hidden_layers`, open_clip `layers`).
    pub num_hidden_layers: usize,
    /// Attention heads (HF `num_attention_heads`, open_clip `heads`).
    pub num_attention_heads: usize,
    /// MLP hidden width (HF `intermediate_size`, open_clip `width * mlp_ratio`).
    pub intermediate_size: usize,
    /// Context length (HF `max_position_embeddings`, open_clip `context_length`).
    #[config(default = 77)]
    pub max_position_embeddings: usize,
    /// MLP non-linearity (HF `hidden_act`).
    #[config(default = "Activation::QuickGelu")]
    pub hidden_act: Activation,
    /// LayerNorm epsilon (HF `layer_norm_eps`).
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Causal self-attention (CLIP) or bidirectional (SigLIP).
    #[config(default = true)]
    pub causal: bool,
    /// Pooling position.
    #[config(default = "TextPooling::FirstEos { eos_token_id: 49407 }")]
    pub pooling: TextPooling,
    /// Width of SigLIP's linear head on the pooled token (HF `projection_size`); none for CLIP.
    #[config(default = "None")]
    pub projection_size: Option<usize>,
    /// Fused q/k/v projections (how open_clip checkpoints store them).
    #[config(default = false)]
    pub fused_qkv: bool,
    /// Dropout on attention probabilities while training (HF `attention_dropout`).
    #[config(default = 0.0)]
    pub attention_dropout: f64,
}

impl TextTransformerConfig {
    /// Checks the numbers fit together; the message names the field at fault.
    pub fn validate(&self) -> Result<(), vlp_core::CoreError> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(vlp_core::CoreError::Config {
                field: "num_attention_heads".into(),
                reason: format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            });
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 {
            return Err(vlp_core::CoreError::Config {
                field: "vocab_size".into(),
                reason: "vocabulary and context length must be positive".into(),
            });
        }
        Ok(())
    }

    /// Creates the model on `device` (parameters are materialised lazily, on first use).
    pub fn init<B: burn::tensor::backend::Backend>(
        &self,
        device: &B::Device,
    ) -> TextTransformer<B> {
        let d = self.hidden_size;
        TextTransformer {
            embeddings: TextEmbeddings {
                // open_clip's init: token std 0.02, positions std 0.01.
                token_embedding: EmbeddingConfig::new(self.vocab_size, d)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 0.02,
                    })
                    .init(device),
                position_embedding: EmbeddingConfig::new(self.max_position_embeddings, d)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 0.01,
                    })
                    .init(device),
            },
            encoder: TransformerEncoderConfig::new(
                d,
                self.num_hidden_layers,
                self.num_attention_heads,
                self.intermediate_size,
            )
            .with_activation(self.hidden_act)
            .with_eps(self.layer_norm_eps)
            .with_fused_qkv(self.fused_qkv)
            .with_attention_dropout(self.attention_dropout)
            .init(device),
            final_layer_norm: LayerNormConfig::new(d)
                .with_eps(self.layer_norm_eps)
                .init(device),
            head: self
                .projection_size
                .map(|p| LinearConfig::new(d, p).init(device)),
            causal: self.causal,
            pooling: self.pooling,
        }
    }
}
