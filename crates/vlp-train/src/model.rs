//! The tokenizer a configuration asks for (models are built by their [`Method`](crate::method::Method)).

use vlp_text::Padding;
use vlp_text::tokenizer::{ResolvedTokenizer, resolve};

use crate::config::TrainConfig;
use crate::error::Result;

/// A tokenizer plus what the text tower must know about it (`vlp_text`'s resolver decides).
pub type BuiltTokenizer = ResolvedTokenizer;

/// Builds the tokenizer of `[tokenizer]`: `words` (ShapesWorld's vocabulary), `clip` (the
/// built-in BPE, zero padding as open_clip trains) or a `tokenizer.json` path.
pub fn build_tokenizer(cfg: &TrainConfig) -> Result<BuiltTokenizer> {
    Ok(resolve(
        &cfg.tokenizer.kind,
        cfg.tokenizer.context_length,
        Padding::Zero,
        &vlp_data::shapes::vocabulary(),
    )?)
}
