//! Configuration of the dual encoder, and presets of the public checkpoints.

use burn::config::Config;
use burn::module::Param;
use burn::nn::{Initializer, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};
use vlp_core::nn::Activation;
use vlp_text::{TextPooling, TextTransformerConfig};
use vlp_vision::{VitConfig, VitLayout};

use super::ClipModel;

/// Model family: which head layout and which logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// CLIP (Radford et al., 2021): projections into the joint space, softmax logits.
    Clip,
    /// SigLIP (Zhai et al., 2023): no projections, sigmoid logits with a learned bias.
    Siglip,
}

/// Configuration of a [`ClipModel`].
#[derive(Config, Debug)]
pub struct ClipConfig {
    /// Model family.
    pub kind: ModelKind,
    /// Image tower (HF `vision_config`, open_clip `vision_cfg`).
    pub vision: VitConfig,
    /// Text tower (HF `text_config`, open_clip `text_cfg`).
    pub text: TextTransformerConfig,
    /// Joint embedding width (HF `projection_dim`, open_clip `embed_dim`); CLIP only.
    #[config(default = "None")]
    pub projection_dim: Option<usize>,
    /// Initial log logit scale (HF `logit_scale_init_value`; ln(1/0.07) for CLIP, ln 10 for SigLIP).
    #[config(default = 2.6592)]
    pub logit_scale_init: f64,
    /// Initial logit bias (SigLIP only; −10 in the paper).
    #[config(default = "None")]
    pub logit_bias_init: Option<f64>,
}

impl ClipConfig {
    /// Checks every field; the message names the one at fault.
    pub fn validate(&self) -> Result<(), vlp_core::CoreError> {
        self.vision.validate()?;
        self.text.validate()?;
        let bad = |field: &str, reason: &str| {
            Err(vlp_core::CoreError::Config {
                field: field.into(),
                reason: reason.into(),
            })
        };
        match self.kind {
            ModelKind::Clip if self.projection_dim.is_none() => {
                bad("projection_dim", "CLIP needs a joint embedding width")
            }
            ModelKind::Clip if self.vision.layout != VitLayout::Clip => {
                bad("vision.layout", "CLIP needs the clip ViT layout")
            }
            ModelKind::Siglip if self.vision.layout != VitLayout::Siglip => {
                bad("vision.layout", "SigLIP needs the siglip ViT layout")
            }
            ModelKind::Siglip
                if self.text.projection_size.unwrap_or(self.text.hidden_size)
                    != self.vision.hidden_size =>
            {
                bad(
                    "text.projection_size",
                    "SigLIP's text head must map to the vision width (there is no image projection)",
                )
            }
            _ => Ok(()),
        }
    }

    /// Creates the model on `device`. Parameters are lazy: nothing is allocated until used, so a
    /// full-size layout can be inspected cheaply, and loading a checkpoint never fills them twice.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipModel<B> {
        let proj = |d_in: usize| {
            self.projection_dim.map(|p| {
                LinearConfig::new(d_in, p)
                    .with_bias(false)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: (d_in as f64).powf(-0.5),
                    })
                    .init(device)
            })
        };
        let clip = self.kind == ModelKind::Clip;
        ClipModel {
            vision_model: self.vision.init(device),
            text_model: self.text.init(device),
            visual_projection: if clip {
                proj(self.vision.hidden_size)
            } else {
                None
            },
            text_projection: if clip {
                proj(self.text.hidden_size)
            } else {
                None
            },
            logit_scale: Param::from_tensor(Tensor::from_floats(
                [self.logit_scale_init as f32],
                device,
            )),
            logit_bias: self
                .logit_bias_init
                .or((!clip).then_some(-10.0))
                .map(|b| Param::from_tensor(Tensor::from_floats([b as f32], device))),
            kind: self.kind,
        }
    }

    /// Width of the joint embedding space.
    pub fn embed_dim(&self) -> usize {
        self.projection_dim.unwrap_or(self.vision.hidden_size)
    }

    /// An OpenAI CLIP layout (HF `openai/clip-vit-*`): text width 512 (768 for L/14).
    fn openai(
        vision: (usize, usize, usize, usize),
        image: usize,
        patch: usize,
        text: (usize, usize),
        embed: usize,
    ) -> Self {
        let (width, layers, heads, mlp) = vision;
        let (t_width, t_heads) = text;
        ClipConfig::new(
            ModelKind::Clip,
            VitConfig::new(width, layers, heads, mlp)
                .with_image_size(image)
                .with_patch_size(patch),
            TextTransformerConfig::new(49408, t_width, 12, t_heads, 4 * t_width),
        )
        .with_projection_dim(Some(embed))
    }

    /// `openai/clip-vit-base-patch32` (open_clip `ViT-B-32`).
    pub fn vit_b_32() -> Self {
        Self::openai((768, 12, 12, 3072), 224, 32, (512, 8), 512)
    }

    /// `openai/clip-vit-base-patch16` (open_clip `ViT-B-16`).
    pub fn vit_b_16() -> Self {
        Self::openai((768, 12, 12, 3072), 224, 16, (512, 8), 512)
    }

    /// `openai/clip-vit-large-patch14` (open_clip `ViT-L-14`).
    pub fn vit_l_14() -> Self {
        Self::openai((1024, 24, 16, 4096), 224, 14, (768, 12), 768)
    }

    /// `openai/clip-vit-large-patch14-336` (open_clip `ViT-L-14-336`).
    pub fn vit_l_14_336() -> Self {
        Self::openai((1024, 24, 16, 4096), 336, 14, (768, 12), 768)
    }

    /// `google/siglip-base-patch16-224`.
    pub fn siglip_b_16_224() -> Self {
        let vision = VitConfig::new(768, 12, 12, 3072)
            .with_image_size(224)
            .with_patch_size(16)
            .with_hidden_act(Activation::GeluTanh)
            .with_layer_norm_eps(1e-6)
            .with_layout(VitLayout::Siglip);
        let text = TextTransformerConfig::new(32000, 768, 12, 12, 3072)
            .with_max_position_embeddings(64)
            .with_hidden_act(Activation::GeluTanh)
            .with_layer_norm_eps(1e-6)
            .with_causal(false)
            .with_pooling(TextPooling::Last)
            .with_projection_size(Some(768));
        ClipConfig::new(ModelKind::Siglip, vision, text)
            .with_logit_scale_init(10f64.ln())
            .with_logit_bias_init(Some(-10.0))
    }

    /// The small CLIP trained on ShapesWorld (`[model] preset = "shapes-tiny"`): both towers
    /// `width` wide and `layers` deep with `heads` heads, an MLP 4× wider, exact GELU, a
    /// `patch`-pixel ViT on `image`-pixel inputs, a text tower over `vocab` ids and `context`
    /// positions pooled as `pooling`, an `embed`-wide joint space.
    #[allow(clippy::too_many_arguments)]
    pub fn shapes_tiny(
        width: usize,
        layers: usize,
        heads: usize,
        embed: usize,
        patch: usize,
        image: usize,
        vocab: usize,
        context: usize,
        pooling: TextPooling,
    ) -> Self {
        let act = Activation::Gelu;
        let vision = VitConfig::new(width, layers, heads, 4 * width)
            .with_image_size(image)
            .with_patch_size(patch)
            .with_hidden_act(act);
        let text = TextTransformerConfig::new(vocab, width, layers, heads, 4 * width)
            .with_max_position_embeddings(context)
            .with_hidden_act(act)
            .with_pooling(pooling);
        ClipConfig::new(ModelKind::Clip, vision, text).with_projection_dim(Some(embed))
    }

    /// Names accepted by [`ClipConfig::preset`]; `shapes-tiny` is sized by the caller
    /// ([`ClipConfig::shapes_tiny`]).
    pub const PRESETS: &'static [&'static str] = &[
        "vit-b-32",
        "vit-b-16",
        "vit-l-14",
        "vit-l-14-336",
        "siglip-b-16-224",
    ];

    /// A preset by name: `vit-b-32`, `vit-b-16`, `vit-l-14`, `vit-l-14-336`, `siglip-b-16-224`
    /// (case-insensitive; `/` and `_` may replace `-`, and the hub ids are accepted too).
    pub fn preset(name: &str) -> Option<Self> {
        let n = name.to_ascii_lowercase().replace(['/', '_'], "-");
        let n = n
            .trim_start_matches("openai-")
            .trim_start_matches("google-");
        Some(match n {
            "vit-b-32" | "clip-vit-base-patch32" => Self::vit_b_32(),
            "vit-b-16" | "clip-vit-base-patch16" => Self::vit_b_16(),
            "vit-l-14" | "clip-vit-large-patch14" => Self::vit_l_14(),
            "vit-l-14-336" | "clip-vit-large-patch14-336" => Self::vit_l_14_336(),
            "siglip-b-16-224" | "siglip-base-patch16-224" | "vit-b-16-siglip" => {
                Self::siglip_b_16_224()
            }
            _ => return None,
        })
    }
}
