//! Vision backbones for vlp.
//!
//! What belongs here: image encoders that map pixels to token features and a pooled vector: the
//! Vision Transformer in its CLIP layout (class token, pre-LayerNorm) and its SigLIP layout
//! (patch bias, attention-pooling head), with every layer's hidden states on request and
//! position-embedding interpolation to other resolutions; later CNN backbones, token merging and
//! per-frame video encoding. What does not: projections into a joint embedding space, losses and
//! anything text-related (`vlp-align`, `vlp-text`), image decoding and preprocessing (`vlp-data`).

pub mod pixel_text;
pub mod prior;
pub mod semaim;
pub mod vit;

pub use vit::{Vit, VitConfig, VitLayout, VitOutput};
