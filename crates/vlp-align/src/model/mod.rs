//! The dual encoder: a vision tower and a text tower mapped into one embedding space.

mod config;
pub mod lxmert;
pub mod ptp;

pub use config::{ClipConfig, ModelKind};

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};
use vlp_core::nn::{LoraConfig, linear_2d};
use vlp_text::{TextOutput, TextTransformer};
use vlp_vision::{Vit, VitOutput};

/// CLIP or SigLIP, with fields named after Hugging Face's `CLIPModel` / `SiglipModel`.
///
/// SigLIP has no projections (its towers end at the shared width; the text tower's `head` plays
/// that role) and adds a learned logit bias.
#[derive(Module, Debug)]
pub struct ClipModel<B: Backend> {
    /// Image tower.
    pub vision_model: Vit<B>,
    /// Text tower.
    pub text_model: TextTransformer<B>,
    /// Image projection into the joint space, no bias (open_clip `visual.proj`).
    pub visual_projection: Option<Linear<B>>,
    /// Text projection into the joint space, no bias (open_clip `text_projection`).
    pub text_projection: Option<Linear<B>>,
    /// Log of the logit scale (temperature⁻¹), `[1]`.
    pub logit_scale: Param<Tensor<B, 1>>,
    /// Logit bias (SigLIP), `[1]`.
    pub logit_bias: Option<Param<Tensor<B, 1>>>,
    /// Model family.
    pub kind: ModelKind,
}

/// Everything one forward pass of [`ClipModel::forward`] computes.
#[derive(Debug, Clone)]
pub struct ClipOutput<B: Backend> {
    /// L2-normalised image embeddings, `[images, embed]`.
    pub image_embeds: Tensor<B, 2>,
    /// L2-normalised text embeddings, `[texts, embed]`.
    pub text_embeds: Tensor<B, 2>,
    /// `[images, texts]` similarity logits.
    pub logits_per_image: Tensor<B, 2>,
    /// The image tower's outputs.
    pub vision: VitOutput<B>,
    /// The text tower's outputs.
    pub text: TextOutput<B>,
}

/// Token-level features of one tower in the joint space.
#[derive(Debug, Clone)]
pub struct TokenFeatures<B: Backend> {
    /// `[batch, tokens, embed]`.
    pub tokens: Tensor<B, 3>,
    /// `[batch, tokens]`, `true` at padding; `None` when every token is real.
    pub padding: Option<Tensor<B, 2, Bool>>,
}

/// L2-normalises the last axis (`torch.nn.functional.normalize(x, dim=-1)`).
///
/// # Shapes
/// - `x`: `[..., d]`; returns the same shape
pub fn normalize_last<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let norm = x.clone().square().sum_dim(D - 1).sqrt().clamp_min(1e-12);
    x / norm
}

/// L2-normalises rows, guarding against zero vectors like `torch.nn.functional.normalize`.
///
/// # Shapes
/// - `x`: `[n, d]`; returns `[n, d]`
pub fn normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

impl<B: Backend> ClipModel<B> {
    /// Adds LoRA updates to the attention of every block of the chosen towers
    /// ([`vlp_core::nn::Attention::add_lora`]) and, with `mlp`, to their MLPs
    /// ([`vlp_core::nn::Mlp::add_lora`]); freeze the rest with
    /// [`vlp_core::nn::train_only_lora`].
    pub fn add_lora(
        mut self,
        config: &LoraConfig,
        image: bool,
        text: bool,
        mlp: bool,
        device: &B::Device,
    ) -> Self {
        if image {
            self.vision_model.encoder = self.vision_model.encoder.add_lora(config, mlp, device);
        }
        if text {
            self.text_model.encoder = self.text_model.encoder.add_lora(config, mlp, device);
        }
        self
    }

    /// Folds `weight` times the LoRA updates into the towers' weights and drops the adapters:
    /// 1 gives the adapted model, λ the weight average `(1 − λ)·θ₀ + λ·θ` with the model the
    /// adapters started from. No-op without adapters.
    pub fn merge_lora(mut self, weight: f64) -> Self {
        self.vision_model.encoder = self.vision_model.encoder.merge_lora(weight);
        self.text_model.encoder = self.text_model.encoder.merge_lora(weight);
        self
    }

    /// Whether any attention layer or MLP carries LoRA adapters.
    pub fn has_lora(&self) -> bool {
        let adapted = |layers: &[vlp_core::nn::EncoderLayer<B>]| {
            layers
                .iter()
                .any(|l| l.self_attn.lora.is_some() || l.mlp.lora.is_some())
        };
        adapted(&self.vision_model.encoder.layers) || adapted(&self.text_model.encoder.layers)
    }

    /// Image features in the joint space, not normalised (open_clip `encode_image`).
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, image_size, image_size]`; returns `[batch, embed]`
    pub fn encode_image(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        self.project_image(self.vision_model.forward(pixels).pooler_output)
    }

    /// Text features in the joint space, not normalised (open_clip `encode_text`).
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, tokens]`; `attention_mask`: `[batch, tokens]`, `1` = token
    /// - returns: `[batch, embed]`
    pub fn encode_text(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
    ) -> Tensor<B, 2> {
        self.project_text(
            self.text_model
                .forward(input_ids, attention_mask)
                .pooler_output,
        )
    }

    /// Pooled image features and every output token, both in the joint space, from one pass of
    /// the tower (not normalised). Tokens are normalised like the pooled one (`post_layernorm`)
    /// and projected by the same matrix; a CLIP tower's class token is first.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, 3, image_size, image_size]`
    /// - returns: `[batch, embed]` and tokens `[batch, tokens, embed]` (no padding)
    pub fn encode_image_with_tokens(
        &self,
        pixels: Tensor<B, 4>,
    ) -> (Tensor<B, 2>, TokenFeatures<B>) {
        let out = self.vision_model.forward(pixels);
        let tokens = self.project_image_tokens(self.vision_model.token_features(&out));
        (
            self.project_image(out.pooler_output),
            TokenFeatures {
                tokens,
                padding: None,
            },
        )
    }

    /// Pooled text features and every token, in the joint space (not normalised). A causal
    /// tower (CLIP) sees the padding mask, a bidirectional one (SigLIP) the padded sequence, as
    /// transformers runs them; either way padded positions are marked in the result.
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, tokens]`, `1` = token
    /// - returns: `[batch, embed]` and tokens `[batch, tokens, embed]` with padding `[batch, tokens]`
    pub fn encode_text_with_tokens(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 2>, TokenFeatures<B>) {
        let padding = attention_mask.clone().equal_elem(0);
        let mask = self.text_model.causal.then_some(attention_mask);
        let out = self.text_model.forward(input_ids, mask);
        let tokens = self.text_model.token_features(&out);
        let tokens = match &self.text_projection {
            Some(p) => linear_2d(p, tokens),
            None => tokens,
        };
        (
            self.project_text(out.pooler_output),
            TokenFeatures {
                tokens,
                padding: Some(padding),
            },
        )
    }

    /// Projects a pooled image feature into the joint space.
    pub fn project_image(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.visual_projection {
            Some(p) => p.forward(pooled),
            None => pooled,
        }
    }

    /// Projects image tokens (as [`Vit::token_features`] returns them) into the joint space.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, tokens, hidden]`; returns `[batch, tokens, embed]`
    pub fn project_image_tokens(&self, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.visual_projection {
            Some(p) => linear_2d(p, tokens),
            None => tokens,
        }
    }

    /// Projects a pooled text feature into the joint space.
    pub fn project_text(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        match &self.text_projection {
            Some(p) => p.forward(pooled),
            None => pooled,
        }
    }

    /// Logits between normalised embeddings: `exp(logit_scale) · img · txtᵀ (+ logit_bias)`.
    ///
    /// # Shapes
    /// - `image_embeds`: `[images, embed]`, `text_embeds`: `[texts, embed]`
    /// - returns: `[images, texts]`
    pub fn logits(&self, image_embeds: Tensor<B, 2>, text_embeds: Tensor<B, 2>) -> Tensor<B, 2> {
        let scale = self.logit_scale.val().exp().unsqueeze::<2>();
        let logits = image_embeds.matmul(text_embeds.transpose()) * scale;
        match &self.logit_bias {
            Some(b) => logits + b.val().unsqueeze::<2>(),
            None => logits,
        }
    }

    /// Runs both towers and compares every image with every text.
    pub fn forward(
        &self,
        pixels: Tensor<B, 4>,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Option<Tensor<B, 2, Int>>,
        output_hidden_states: bool,
    ) -> ClipOutput<B> {
        let vision = self.vision_model.forward_with(pixels, output_hidden_states);
        let text = self
            .text_model
            .forward_with(input_ids, attention_mask, output_hidden_states);
        let image_embeds = normalize(self.project_image(vision.pooler_output.clone()));
        let text_embeds = normalize(self.project_text(text.pooler_output.clone()));
        let logits_per_image = self.logits(image_embeds.clone(), text_embeds.clone());
        ClipOutput {
            image_embeds,
            text_embeds,
            logits_per_image,
            vision,
            text,
        }
    }

    /// `exp(logit_scale)` as a number: the factor on cosine similarities in the logits.
    pub fn scale(&self) -> f64 {
        use burn::tensor::ElementConversion;
        self.logit_scale.val().exp().into_scalar().elem::<f64>()
    }

    /// Blocks of the shallower tower: how deep prompts can go in both (MaPLe's depth limit).
    pub fn shared_depth(&self) -> usize {
        self.text_model
            .encoder
            .layers
            .len()
            .min(self.vision_model.encoder.layers.len())
    }

    /// Width of the joint embedding space.
    pub fn embed_dim(&self) -> usize {
        match &self.visual_projection {
            Some(p) => p.weight.lazy_shape().dims::<2>()[1],
            None => self.vision_model.hidden_size(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::coop::tests::{model_with_layers, tokenizer};
    use vlp_core::backend::{DefaultBackend as B, default_device};

    #[test]
    fn scale_is_the_exponentiated_parameter_and_depth_the_shallower_tower() {
        let dev = default_device();
        let mut m = model_with_layers::<B>(&tokenizer(8), 3, &dev);
        m.logit_scale = Param::from_tensor(Tensor::from_floats([20f32.ln()], &dev));
        assert!((m.scale() - 20.0).abs() < 1e-4, "{}", m.scale());
        assert_eq!(m.shared_depth(), 3);
        m.vision_model.encoder.layers.truncate(2);
        assert_eq!(m.shared_depth(), 2);
        m.text_model.encoder.layers.truncate(1);
        assert_eq!(m.shared_depth(), 1);
    }
}
