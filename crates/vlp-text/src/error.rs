//! Errors raised by `vlp-text`.

use std::path::PathBuf;

/// Result type of `vlp-text`.
pub type Result<T, E = TextError> = std::result::Result<T, E>;

/// Everything that can go wrong in `vlp-text`; messages name the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A tokenizer file could not be read or used.
    #[error("tokenizer \"{path}\": {reason}")]
    Tokenizer {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A text the tokenizer cannot represent.
    #[error("cannot tokenise \"{text}\": {reason}")]
    Encode {
        /// The text (shortened to 80 characters).
        text: String,
        /// The tokenizer's message.
        reason: String,
    },
    /// Decoding could not proceed (bad settings, a model answering the wrong shape).
    #[error("generation: {reason}")]
    Generate {
        /// What is wrong.
        reason: String,
    },
}
