//! The one place a tokenizer is chosen from a name: training configs (`[tokenizer] kind`),
//! model directories (`vlp eval`, `vlp embed`) and `vlp tokenize` all resolve through here.

use std::path::Path;
use std::sync::Arc;

use super::{ClipTokenizer, HfTokenizer, Padding, Tokenizer, word_tokenizer};
use crate::error::{Result, TextError};
use crate::transformer::TextPooling;

/// A tokenizer plus what a text tower must know about it.
#[derive(Clone)]
pub struct ResolvedTokenizer {
    /// The tokenizer.
    pub tokenizer: Arc<dyn Tokenizer>,
    /// Its `tokenizer.json` form, written next to exported models (the built-in CLIP BPE has
    /// none: readers rebuild it).
    pub hf: Option<HfTokenizer>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Where a text tower trained with it pools.
    pub pooling: TextPooling,
}

impl std::fmt::Debug for ResolvedTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("pooling", &self.pooling)
            .field("context_length", &self.tokenizer.context_length())
            .finish()
    }
}

/// Wraps a `tokenizer.json` tokenizer, pooling at its first end token when it has one.
pub fn from_hf(tok: HfTokenizer) -> ResolvedTokenizer {
    let vocab_size = tok.vocab_size();
    let eos = ["<|endoftext|>", "</s>", "[SEP]"]
        .iter()
        .find_map(|t| tok.token_to_id(t));
    let pooling = eos
        .map(|e| TextPooling::FirstEos { eos_token_id: e })
        .unwrap_or(TextPooling::Last);
    ResolvedTokenizer {
        tokenizer: Arc::new(tok.clone()),
        hf: Some(tok),
        vocab_size,
        pooling,
    }
}

/// Resolves `kind` at `context_length`:
/// - `clip`: the built-in CLIP BPE (49408 ids) with `padding`;
/// - `words`: a word-level tokenizer over `words` (ShapesWorld's closed vocabulary), the end
///   token the largest id;
/// - anything else: the path of a `tokenizer.json`.
pub fn resolve(
    kind: &str,
    context_length: usize,
    padding: Padding,
    words: &[&str],
) -> Result<ResolvedTokenizer> {
    if !(2..=super::MAX_CONTEXT).contains(&context_length) {
        return Err(TextError::Tokenizer {
            path: kind.into(),
            reason: format!(
                "context length {context_length} is not in 2..={} (start and end tokens need 2)",
                super::MAX_CONTEXT
            ),
        });
    }
    Ok(match kind {
        "clip" => ResolvedTokenizer {
            tokenizer: Arc::new(ClipTokenizer::new(context_length, padding)),
            hf: None,
            vocab_size: 49408,
            pooling: TextPooling::ArgmaxId,
        },
        "words" => {
            let tok = word_tokenizer(words, context_length);
            let vocab_size = tok.vocab_size();
            // The end token is the largest id: argmax pooling = first end token.
            ResolvedTokenizer {
                tokenizer: Arc::new(tok.clone()),
                hf: Some(tok),
                vocab_size,
                pooling: TextPooling::ArgmaxId,
            }
        }
        path => from_hf(HfTokenizer::from_file(path, Some(context_length))?),
    })
}

/// The tokenizer of a model directory: `override_kind` when given (`clip` or a
/// `tokenizer.json`), else the directory's own `tokenizer.json`, else the built-in CLIP BPE
/// with `padding` (transformers pads with the end token, open_clip with zeros).
pub fn resolve_for_model(
    dir: &Path,
    override_kind: Option<&str>,
    context_length: usize,
    padding: Padding,
) -> Result<ResolvedTokenizer> {
    match override_kind {
        Some(k) => resolve(k, context_length, padding, &[]),
        None if dir.join("tokenizer.json").is_file() => resolve(
            &dir.join("tokenizer.json").display().to_string(),
            context_length,
            padding,
            &[],
        ),
        None => resolve("clip", context_length, padding, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_resolve_with_their_pooling() {
        let c = resolve("clip", 77, Padding::Zero, &[]).unwrap();
        assert_eq!((c.vocab_size, c.pooling), (49408, TextPooling::ArgmaxId));
        assert!(c.hf.is_none());
        let w = resolve("words", 8, Padding::Zero, &["red", "circle"]).unwrap();
        assert_eq!(w.vocab_size, 6); // <pad>, red, circle, <unk>, start, end
        assert_eq!(w.tokenizer.encode("red circle").unwrap().ids.len(), 8);
        let e = resolve("/nonexistent/tokenizer.json", 8, Padding::Zero, &[])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/tokenizer.json"), "{e}");
        assert!(resolve("clip", 1, Padding::Zero, &[]).is_err());
    }
}
