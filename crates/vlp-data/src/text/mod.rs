//! Per-sample text transforms that methods hand to the loader ([`crate::TextTransform`]).

mod eda;
mod perturb;
mod ptp;
mod subcaption;

pub use eda::{
    CaptionViews, STOP_WORDS, SYNONYMS, is_stop_word, random_deletion, random_swap,
    remove_stop_words, synonym_replacement, words,
};
pub use perturb::{Perturbation, shuffle_words, typo};
pub use ptp::{OUTSIDE, PositionPrompt};
pub use subcaption::{SubCaptionSampler, split_sentences};
