//! Prompt learners: vectors learned in a frozen text tower's input space in place of the words
//! of a hand-written prompt.

pub mod coop;

pub use coop::{ClassTokenPosition, CoopConfig, CoopPromptLearner, CoopPrompts, fit_coop};
