//! Errors raised by `vlp-data`.

use std::path::PathBuf;

/// Result type of `vlp-data`.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can go wrong in `vlp-data`; messages name the file, sample or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An image could not be read or decoded.
    #[error("image \"{name}\": {reason}")]
    Image {
        /// File path or sample key.
        name: String,
        /// What is wrong with it.
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
    /// A dataset is malformed, empty or misconfigured.
    #[error("dataset \"{source_name}\": {reason}")]
    Dataset {
        /// The dataset (path or source spec).
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is invalid.
    #[error("invalid config field `{field}`: {reason}")]
    Config {
        /// The field at fault.
        field: String,
        /// Why it is rejected.
        reason: String,
    },
}
