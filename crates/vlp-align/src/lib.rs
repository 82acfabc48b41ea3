//! Dual encoders and what aligns them, and cross-modal encoders over words and objects (LXMERT).
//!
//! What belongs here: models that put images and texts in one embedding space (CLIP, SigLIP,
//! and the later FILIP-style variants), their configuration files and checkpoint layouts
//! (Hugging Face and open_clip, in and out), the alignment objectives (InfoNCE, sigmoid,
//! fine-grained, distillation) as modules over features, prompt learners and adapters. What does
//! not: the towers themselves (`vlp-vision`, `vlp-text`), datasets (`vlp-data`), evaluation
//! protocols (`vlp-tasks`) and the training loop (`vlp-train`).

pub mod adapter;
pub mod error;
pub mod fit;
pub mod loss;
pub mod model;
pub mod parity;
pub mod pretrained;
pub mod prompt;

pub use error::{AlignError, Result};
pub use model::{
    ClipConfig, ClipModel, ClipOutput, ModelKind, TokenFeatures, normalize, normalize_last,
};
pub use pretrained::{ImagePipeline, Layout, Pretrained};
