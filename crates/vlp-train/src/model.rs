//! The tokenizer a configuration asks for (models are built by their [`Method`](crate::method::Method)).

use std::sync::Arc;

use vlp_text::tokenizer::word_tokenizer;
use vlp_text::{ClipTokenizer, HfTokenizer, Padding, TextPooling, Tokenizer};

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// A tokenizer plus what the text tower must know about it.
pub struct BuiltTokenizer {
    /// The tokenizer.
    pub tokenizer: Arc<dyn Tokenizer>,
    /// Its `tokenizer.json` form, written next to exported models.
    pub hf: Option<HfTokenizer>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Where the text tower pools.
    pub pooling: TextPooling,
}

/// Builds the tokenizer of `[tokenizer]`.
pub fn build_tokenizer(cfg: &TrainConfig) -> Result<BuiltTokenizer> {
    let ctx = cfg.tokenizer.context_length;
    if ctx < 2 {
        return Err(TrainError::Config(
            "`tokenizer.context_length` must be at least 2".into(),
        ));
    }
    Ok(match cfg.tokenizer.kind.as_str() {
        "words" => {
            let tok = word_tokenizer(&vlp_data::shapes::vocabulary(), ctx);
            let vocab_size = tok.vocab_size();
            // The end token is the largest id: argmax pooling = first end token.
            BuiltTokenizer {
                tokenizer: Arc::new(tok.clone()),
                hf: Some(tok),
                vocab_size,
                pooling: TextPooling::ArgmaxId,
            }
        }
        "clip" => BuiltTokenizer {
            tokenizer: Arc::new(ClipTokenizer::new(ctx, Padding::Zero)),
            hf: None,
            vocab_size: 49408,
            pooling: TextPooling::ArgmaxId,
        },
        path => {
            let tok = HfTokenizer::from_file(path, Some(ctx))?;
            let vocab_size = tok.vocab_size();
            let eos = ["<|endoftext|>", "</s>", "[SEP]"]
                .iter()
                .find_map(|t| tok.token_to_id(t));
            let pooling = eos
                .map(|e| TextPooling::FirstEos { eos_token_id: e })
                .unwrap_or(TextPooling::Last);
            BuiltTokenizer {
                tokenizer: Arc::new(tok.clone()),
                hf: Some(tok),
                vocab_size,
                pooling,
            }
        }
    })
}
