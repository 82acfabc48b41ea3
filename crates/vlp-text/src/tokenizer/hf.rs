//! Any Hugging Face `tokenizer.json` (SigLIP's SentencePiece, multilingual models, future LMs).

use std::path::Path;

use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, TruncationParams};

use super::{Encoding, Tokenizer};
use crate::error::{Result, TextError};

/// A tokenizer read from a `tokenizer.json`, padded and truncated to a fixed context length.
///
/// The file's own normaliser, pre-tokeniser, model and post-processor (special tokens) are used
/// as transformers uses them. The pad token is the file's padding token when it defines one, else
/// `<pad>` if present, else id 0.
#[derive(Clone)]
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    context_length: usize,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("context_length", &self.context_length)
            .finish()
    }
}

/// Longest context a tokenizer pads to (a bound on what one text can allocate).
pub const MAX_CONTEXT: usize = 8192;

impl HfTokenizer {
    /// Reads `path`; `context_length` overrides the file's padding/truncation length (else the
    /// file's truncation length, else 77).
    pub fn from_file(path: impl AsRef<Path>, context_length: Option<usize>) -> Result<Self> {
        let path = path.as_ref();
        // tokenizers 0.22 panics on some malformed `decoder` entries (`.expect("Helper")` in
        // `decoders/mod.rs`) instead of returning its error (found by `fuzz/hf_tokenizer`; the
        // input is `tests/fuzz_regressions/`): a panic while parsing is the same error as a
        // parse failure.
        let loaded = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_file(path));
        let mut inner = match loaded {
            Ok(r) => r.map_err(|e| TextError::Tokenizer {
                path: path.into(),
                reason: e.to_string(),
            })?,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("the tokenizers crate panicked");
                return Err(TextError::Tokenizer {
                    path: path.into(),
                    reason: format!("malformed tokenizer file: {what}"),
                });
            }
        };
        let length = context_length
            .or_else(|| inner.get_truncation().map(|t| t.max_length))
            .or_else(|| match inner.get_padding().map(|p| &p.strategy) {
                Some(PaddingStrategy::Fixed(n)) => Some(*n),
                _ => None,
            })
            .unwrap_or(77);
        if !(2..=MAX_CONTEXT).contains(&length) {
            return Err(TextError::Tokenizer {
                path: path.into(),
                reason: format!(
                    "context length {length} is not in 2..={MAX_CONTEXT} (start and end tokens need 2)"
                ),
            });
        }
        let mut padding = inner.get_padding().cloned().unwrap_or_else(|| {
            let (pad_id, pad_token) = match inner.token_to_id("<pad>") {
                Some(id) => (id, "<pad>".to_string()),
                None => (0, inner.id_to_token(0).unwrap_or_default()),
            };
            PaddingParams {
                pad_id,
                pad_token,
                direction: PaddingDirection::Right,
                ..Default::default()
            }
        });
        padding.strategy = PaddingStrategy::Fixed(length);
        inner.with_padding(Some(padding));
        let mut truncation = inner.get_truncation().cloned().unwrap_or_default();
        truncation.max_length = length;
        inner
            .with_truncation(Some(TruncationParams { ..truncation }))
            .map_err(|e| TextError::Tokenizer {
                path: path.into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            inner,
            context_length: length,
        })
    }

    /// Wraps an in-memory `tokenizers` object already set up for padding and truncation.
    pub fn from_tokenizer(inner: tokenizers::Tokenizer, context_length: usize) -> Self {
        Self {
            inner,
            context_length,
        }
    }

    /// Writes `tokenizer.json` (loadable by transformers' `PreTrainedTokenizerFast` and by vlp).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.inner
            .save(path, true)
            .map_err(|e| TextError::Tokenizer {
                path: path.into(),
                reason: e.to_string(),
            })
    }

    /// Id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Encoding> {
        let e = self
            .inner
            .encode(text, true)
            .map_err(|e| TextError::Encode {
                text: text.chars().take(80).collect(),
                reason: e.to_string(),
            })?;
        Ok(Encoding {
            ids: e.get_ids().to_vec(),
            attention_mask: e.get_attention_mask().to_vec(),
        })
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
