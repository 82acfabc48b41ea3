//! Configuration of the Vision Transformer.

use burn::config::Config;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use serde::{Deserialize, Serialize};
use vlp_core::nn::{Activation, LayerNormConfig, TransformerEncoderConfig};

use super::Vit;
use super::embeddings::VitEmbeddings;
use super::pooling::AttentionPoolingHeadConfig;

/// The two ViT layouts of CLIP-family checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VitLayout {
    /// OpenAI CLIP: patch conv without bias, class token, pre-LayerNorm, pooled at the class token.
    Clip,
    /// SigLIP: patch conv with bias, no class token, no pre-LayerNorm, attention-pooling head.
    Siglip,
}

/// Configuration of a [`Vit`]. Field names are those of Hugging Face's `vision_config`.
#[derive(Config, Debug)]
pub struct VitConfig {
    /// Residual width (HF `hidden_size`, open_clip `width`).
    pub hidden_size: usize,
    /// Number of transformer blocks (HF `num_hidden_layers`, open_clip `layers`).
    pub num_hidden_layers: usize,
    /// Attention heads (HF `num_attention_heads`, open_clip `width / head_width`).
    pub num_attention_heads: usize,
    /// MLP hidden width (HF `intermediate_size`, open_clip `width * mlp_ratio`).
    pub intermediate_size: usize,
    /// Side of the square input image in pixels (HF and open_clip `image_size`).
    #[config(default = 224)]
    pub image_size: usize,
    /// Side of a square patch in pixels (HF and open_clip `patch_size`).
    #[config(default = 32)]
    pub patch_size: usize,
    /// Input channels (HF `num_channels`).
    #[config(default = 3)]
    pub num_channels: usize,
    /// MLP non-linearity (HF `hidden_act`; open_clip `quick_gelu` true/false).
    #[config(default = "Activation::QuickGelu")]
    pub hidden_act: Activation,
    /// LayerNorm epsilon (HF `layer_norm_eps`).
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// CLIP or SigLIP layout.
    #[config(default = "VitLayout::Clip")]
    pub layout: VitLayout,
    /// Fused q/k/v projections (how open_clip checkpoints store them).
    #[config(default = false)]
    pub fused_qkv: bool,
    /// Dropout on attention probabilities while training (HF `attention_dropout`).
    #[config(default = 0.0)]
    pub attention_dropout: f64,
}

impl VitConfig {
    /// Patches along one side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens the encoder sees: patches, plus the class token in the CLIP layout.
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + usize::from(self.layout == VitLayout::Clip)
    }

    /// Checks the numbers fit together; the message names the field at fault.
    pub fn validate(&self) -> Result<(), vlp_core::CoreError> {
        let err = |field: &str, reason: String| {
            Err(vlp_core::CoreError::Config {
                field: field.into(),
                reason,
            })
        };
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return err(
                "patch_size",
                format!(
                    "{} does not divide image_size {}",
                    self.patch_size, self.image_size
                ),
            );
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return err(
                "num_attention_heads",
                format!(
                    "{} does not divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            );
        }
        Ok(())
    }

    /// Creates the model on `device` (parameters are materialised lazily, on first use).
    pub fn init<B: burn::tensor::backend::Backend>(&self, device: &B::Device) -> Vit<B> {
        let clip = self.layout == VitLayout::Clip;
        let d = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(d)
                .with_eps(self.layer_norm_eps)
                .init(device)
        };
        let patch_embedding = Conv2dConfig::new([self.num_channels, d], [self.patch_size; 2])
            .with_stride([self.patch_size; 2])
            .with_padding(PaddingConfig2d::Valid)
            .with_bias(!clip)
            .init(device);
        Vit {
            embeddings: VitEmbeddings::new(patch_embedding, clip, self.num_positions(), d, device),
            pre_layrnorm: clip.then(ln),
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
            post_layernorm: ln(),
            head: (!clip).then(|| {
                AttentionPoolingHeadConfig::new(d, self.num_attention_heads, self.intermediate_size)
                    .with_activation(self.hidden_act)
                    .with_eps(self.layer_norm_eps)
                    .init(device)
            }),
            layout: self.layout,
        }
    }
}
