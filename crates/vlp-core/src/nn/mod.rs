//! Layers every transformer in vlp is built from.
//!
//! Field names follow the Hugging Face checkpoints (`q_proj`, `out_proj`, `fc1`, `weight`/`bias`
//! for norms) so that loading a `transformers` state dict needs no renaming; the open_clip layout
//! maps onto the same fields with one short table (see `vlp-align`'s checkpoint layouts).

pub mod activation;
pub mod attention;
pub mod cross_modal;
pub mod ema;
pub mod lora;
pub mod mask;
pub mod mlp;
pub mod norm;
pub mod projection;
pub mod roi_align;
pub mod transformer;

pub use activation::Activation;
pub use attention::{Attention, AttentionConfig, AttentionLora, AttentionOutput, KvCache};
pub use cross_modal::{
    CrossAttentionLayer, CrossModalityLayer, GroundedLayer, PostNormConfig, PostNormLayer,
};
pub use ema::{ema_update, frozen_copy};
pub use lora::{Lora, LoraConfig, num_trainable, train_only_lora};
pub use mask::AttentionMask;
pub use mlp::{Mlp, MlpConfig, MlpLora, linear_2d};
pub use norm::{LayerNorm, LayerNormConfig};
pub use projection::{FinalNorm, ProjectionHead, ProjectionHeadConfig};
pub use roi_align::{Roi, RoiAlignConfig, roi_align};
pub use transformer::{
    AttentionRecorder, EncoderHook, EncoderLayer, EncoderOutput, NoHook, TransformerEncoder,
    TransformerEncoderConfig,
};
