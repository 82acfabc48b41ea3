//! A model directory with everything needed to use it: weights, tokenizer, image pipeline.

use std::path::Path;

use burn::tensor::backend::Backend;
use vlp_align::pretrained::{Layout, Pretrained, load_pretrained};
use vlp_align::{ClipConfig, ClipModel};
use vlp_data::preprocess::ImagePipeline;
use vlp_text::tokenizer::resolve_for_model;
use vlp_text::{Padding, Tokenizer};

use crate::error::Result;

/// A loaded model ready for evaluation.
pub struct Bundle<B: Backend> {
    /// The model.
    pub model: ClipModel<B>,
    /// Its configuration.
    pub config: ClipConfig,
    /// The tokenizer its texts need.
    pub tokenizer: std::sync::Arc<dyn Tokenizer>,
    /// The image pipeline its checkpoint expects.
    pub pipeline: ImagePipeline,
}

/// Loads `dir` (transformers or open_clip layout, or a vlp run's `final/`).
///
/// The tokenizer is `tokenizer` when given (`clip` or a `tokenizer.json` path), else the
/// directory's `tokenizer.json`, else the built-in CLIP tokenizer in the checkpoint's convention
/// (end-token padding for transformers, zero padding for open_clip).
pub fn load_bundle<B: Backend>(
    dir: impl AsRef<Path>,
    tokenizer: Option<&str>,
    device: &B::Device,
) -> Result<Bundle<B>> {
    let dir = dir.as_ref();
    let Pretrained {
        model,
        config,
        layout,
        preprocess,
        ..
    } = load_pretrained::<B>(dir, device)?;
    let padding = if layout == Layout::Hf {
        Padding::Eot
    } else {
        Padding::Zero
    };
    let tokenizer = resolve_for_model(dir, tokenizer, config.text.max_position_embeddings, padding)
        .map_err(|e| crate::error::TaskError::Invalid {
            task: "tokenizer".into(),
            reason: e.to_string(),
        })?
        .tokenizer;
    let pipeline = preprocess;
    Ok(Bundle {
        model,
        config,
        tokenizer,
        pipeline,
    })
}
