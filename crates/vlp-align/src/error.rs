//! Errors raised by `vlp-align`.

use std::path::PathBuf;

/// Result type of `vlp-align`.
pub type Result<T, E = AlignError> = std::result::Result<T, E>;

/// Everything that can go wrong in `vlp-align`; messages name the file, key or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    /// From checkpoint reading and common layers.
    #[error(transparent)]
    Core(#[from] vlp_core::CoreError),
    /// A configuration file is unreadable, lacks a required field or asks for something unsupported.
    #[error("config \"{path}\": {reason}")]
    Config {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A model directory lacks what it needs.
    #[error("model directory \"{path}\": {reason}")]
    ModelDir {
        /// The directory at fault.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Inputs or expected outputs given to a parity check are unusable.
    #[error("parity file \"{path}\": {reason}")]
    Parity {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Inputs a model cannot run on (mismatched batch sizes, an image without objects).
    #[error("{model} input: {reason}")]
    Input {
        /// The model.
        model: String,
        /// What is wrong.
        reason: String,
    },
}
