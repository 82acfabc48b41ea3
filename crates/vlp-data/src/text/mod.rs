//! Per-sample text transforms that methods hand to the loader ([`crate::TextTransform`]).

mod subcaption;

pub use subcaption::{SubCaptionSampler, split_sentences};
