//! The text side of vlp.
//!
//! What belongs here: tokenizers (the built-in CLIP BPE, any Hugging Face `tokenizer.json`) and
//! language models over token ids: the CLIP and SigLIP text transformers, and later small causal
//! LMs with their generation utilities (KV cache, greedy and beam decoding). What does not: image
//! code (`vlp-vision`), joint embedding spaces and losses (`vlp-align`), datasets (`vlp-data`).

pub mod error;
pub mod tokenizer;
pub mod transformer;

pub use error::{Result, TextError};
pub use tokenizer::{ClipTokenizer, Encoding, HfTokenizer, Padding, TokenBatch, Tokenizer};
pub use transformer::{TextOutput, TextPooling, TextTransformer, TextTransformerConfig};
