//! Tokenizers: the built-in CLIP BPE and any Hugging Face `tokenizer.json`, behind one trait.

mod clean;
mod clip;
mod hf;
mod resolve;
pub mod word;

pub use clean::{clean_lower, fix_text, html_unescape, whitespace_clean};
pub use clip::{ClipTokenizer, Padding};
pub use hf::{HfTokenizer, MAX_CONTEXT};
pub use resolve::{ResolvedTokenizer, from_hf, resolve, resolve_for_model};
pub use word::{unknown_words, word_tokenizer};

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use rayon::prelude::*;

/// One text, tokenised and padded to the context length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids, exactly `context_length` of them.
    pub ids: Vec<u32>,
    /// `1` for real tokens (start and end included), `0` for padding.
    pub attention_mask: Vec<u32>,
}

/// Many texts, tokenised into a `[batch, context_length]` grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Row-major ids, `batch × context_length`.
    pub ids: Vec<u32>,
    /// Row-major attention mask.
    pub attention_mask: Vec<u32>,
    /// Number of texts.
    pub batch: usize,
    /// Tokens per text.
    pub context_length: usize,
}

impl TokenBatch {
    /// Id and mask tensors, `[batch, context_length]` each.
    pub fn to_tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let shape = [self.batch, self.context_length];
        let ids: Vec<i64> = self.ids.iter().map(|&i| i as i64).collect();
        let mask: Vec<i64> = self.attention_mask.iter().map(|&i| i as i64).collect();
        (
            Tensor::from_data(TensorData::new(ids, shape), device),
            Tensor::from_data(TensorData::new(mask, shape), device),
        )
    }

    /// Stacks encodings of one context length (`None` when `encodings` is empty).
    pub fn from_encodings(encodings: &[Encoding]) -> Option<Self> {
        let context_length = encodings.first()?.ids.len();
        Some(Self {
            ids: encodings
                .iter()
                .flat_map(|e| e.ids.iter().copied())
                .collect(),
            attention_mask: encodings
                .iter()
                .flat_map(|e| e.attention_mask.iter().copied())
                .collect(),
            batch: encodings.len(),
            context_length,
        })
    }

    /// Rows `rows` as a batch of their own.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Self {
        let c = self.context_length;
        Self {
            ids: self.ids[rows.start * c..rows.end * c].to_vec(),
            attention_mask: self.attention_mask[rows.start * c..rows.end * c].to_vec(),
            batch: rows.len(),
            context_length: c,
        }
    }

    /// Row `i` as an [`Encoding`].
    pub fn row(&self, i: usize) -> Encoding {
        let r = i * self.context_length..(i + 1) * self.context_length;
        Encoding {
            ids: self.ids[r.clone()].to_vec(),
            attention_mask: self.attention_mask[r].to_vec(),
        }
    }
}

/// What every tokenizer in vlp offers.
pub trait Tokenizer: Send + Sync {
    /// Tokenises one text to exactly [`context_length`](Tokenizer::context_length) ids, or says
    /// why it cannot (a `tokenizer.json` whose model cannot represent the text): a text is never
    /// silently replaced by another.
    fn encode(&self, text: &str) -> crate::Result<Encoding>;

    /// Texts back from ids, special and padding tokens dropped.
    fn decode(&self, ids: &[u32]) -> String;

    /// Length every text is padded or truncated to.
    fn context_length(&self) -> usize;

    /// Number of ids the tokenizer can produce.
    fn vocab_size(&self) -> usize;

    /// Tokenises many texts on all cores; the first text that fails is the error.
    fn encode_batch(&self, texts: &[&str]) -> crate::Result<TokenBatch> {
        let encs: Vec<Encoding> = texts
            .par_iter()
            .map(|t| self.encode(t))
            .collect::<crate::Result<_>>()?;
        let context_length = self.context_length();
        let mut ids = Vec::with_capacity(texts.len() * context_length);
        let mut attention_mask = Vec::with_capacity(texts.len() * context_length);
        for e in encs {
            ids.extend(e.ids);
            attention_mask.extend(e.attention_mask);
        }
        Ok(TokenBatch {
            ids,
            attention_mask,
            batch: texts.len(),
            context_length,
        })
    }
}
