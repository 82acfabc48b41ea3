//! The text side of vlp.
//!
//! What belongs here: tokenizers (the built-in CLIP BPE, any Hugging Face `tokenizer.json`) and
//! language models over token ids: the CLIP and SigLIP text transformers, decoding ([`generate`]:
//! greedy, beam search, sampling with temperature/top-k/top-p over any next-token model), and
//! a small causal LM with optional cross-attention and a KV cache ([`decoder`]). What does not: image
//! code (`vlp-vision`), joint embedding spaces and losses (`vlp-align`), datasets (`vlp-data`).

pub mod decoder;
pub mod error;
pub mod generate;
pub mod tokenizer;
pub mod transformer;

pub use decoder::{CausalDecoder, CausalDecoderConfig, DecoderCache, DecoderLayer, DecoderLm};
pub use error::{Result, TextError};
pub use tokenizer::{ClipTokenizer, Encoding, HfTokenizer, Padding, TokenBatch, Tokenizer};
pub use transformer::{TextOutput, TextPooling, TextTransformer, TextTransformerConfig};
