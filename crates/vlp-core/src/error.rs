//! Errors raised by `vlp-core`.

use std::path::PathBuf;

/// Result type of `vlp-core`.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in `vlp-core`; each message names the file, key or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint file could not be parsed, or a tensor in it could not be read.
    #[error("checkpoint \"{path}\": {reason}")]
    Checkpoint {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint does not fit the module it is loaded into.
    #[error("checkpoint \"{path}\" does not fit the model:\n{report}")]
    CheckpointMismatch {
        /// The file at fault.
        path: PathBuf,
        /// Every missing key, unused key and shape mismatch.
        report: crate::checkpoint::LoadReport,
    },
    /// A tensor had a shape the operation cannot accept.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// The tensor or argument at fault.
        what: String,
        /// The shape that was expected (`0` where any size is allowed).
        expected: Vec<usize>,
        /// The shape that was given.
        got: Vec<usize>,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid config field `{field}`: {reason}")]
    Config {
        /// The field at fault.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
}

impl CoreError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
