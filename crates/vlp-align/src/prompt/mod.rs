//! Prompt learners: vectors learned in a frozen text tower's input space in place of the words
//! of a hand-written prompt.

pub mod coop;
pub mod maple;

pub use coop::{ClassTokenPosition, CoopConfig, CoopPromptLearner, CoopPrompts, fit_coop};
pub use maple::{MapleConfig, MaplePromptLearner, fit_maple};
